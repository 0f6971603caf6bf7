# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_pytest_abort_global_optspecs
    string join \n h/help V/version
end

function __fish_pytest_abort_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_pytest_abort_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_pytest_abort_using_subcommand
    set -l cmd (__fish_pytest_abort_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c pytest-abort -n "__fish_pytest_abort_needs_command" -s h -l help -d 'Print help'
complete -c pytest-abort -n "__fish_pytest_abort_needs_command" -s V -l version -d 'Print version'
complete -c pytest-abort -n "__fish_pytest_abort_needs_command" -f -a "sanitize-html" -d 'Repair pytest-html reports\' data-jsonblob so pytest_html_merger can read them (files, or folders meaning their files matching --glob)'
complete -c pytest-abort -n "__fish_pytest_abort_needs_command" -f -a "handle-abort" -d 'The original\'s handle_abort for runner scripts: report the crash of a per-file pytest run (marker or --crash-info) into its json and html reports and the crash log. Prints true/false; exit 0 when a crash was reported, 1 when there was none, 2 on error'
complete -c pytest-abort -n "__fish_pytest_abort_needs_command" -f -a "merge" -d 'Merge the --out-dir folders of shards into one crash log, one report per format and one summary.json in OUT_DIR. Exit status: 0 all shards there and nothing failed, 1 a test failed, crashed or was not run, 2 a shard folder is missing or incomplete (unless --allow-missing), 64 bad usage, 74 an output could not be written'
complete -c pytest-abort -n "__fish_pytest_abort_needs_command" -f -a "append-json" -d 'Add one crash (the original\'s abort info, JSON) to a pytest-json-report file'
complete -c pytest-abort -n "__fish_pytest_abort_needs_command" -f -a "append-html" -d 'Add one crash (the original\'s abort info, JSON) to a pytest-html report'
complete -c pytest-abort -n "__fish_pytest_abort_needs_command" -f -a "append-csv" -d 'Add one crash (the original\'s abort info, JSON) to a pytest-csv report'
complete -c pytest-abort -n "__fish_pytest_abort_needs_command" -f -a "completions" -d 'Print the shell completions of the pytest-abort commands (all four, or --command\'s), or write one file per command into --out-dir under the name the shell looks for'
complete -c pytest-abort -n "__fish_pytest_abort_needs_command" -f -a "manpage" -d 'Print the man page of pytest-abort-wrap (or --command\'s), or write all four pages into --out-dir'
complete -c pytest-abort -n "__fish_pytest_abort_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c pytest-abort -n "__fish_pytest_abort_using_subcommand sanitize-html" -l glob -d 'Which files of a folder to sanitize' -r
complete -c pytest-abort -n "__fish_pytest_abort_using_subcommand sanitize-html" -s h -l help -d 'Print help'
complete -c pytest-abort -n "__fish_pytest_abort_using_subcommand handle-abort" -l json-file -d 'pytest-json-report file of the run (created when missing)' -r -F
complete -c pytest-abort -n "__fish_pytest_abort_using_subcommand handle-abort" -l html-file -d 'pytest-html file of the run (created when missing)' -r -F
complete -c pytest-abort -n "__fish_pytest_abort_using_subcommand handle-abort" -l last-running-file -d 'The run\'s marker file; read when no --crash-info is given, and removed' -r -F
complete -c pytest-abort -n "__fish_pytest_abort_using_subcommand handle-abort" -l testfile -d 'The test file the run was given, without `.py`; anchors crash names that are not file-qualified (`<testfile>.py::<name>`)' -r
complete -c pytest-abort -n "__fish_pytest_abort_using_subcommand handle-abort" -l crash-info -d 'Crash info (JSON object) to report instead of reading the marker' -r
complete -c pytest-abort -n "__fish_pytest_abort_using_subcommand handle-abort" -s h -l help -d 'Print help'
complete -c pytest-abort -n "__fish_pytest_abort_using_subcommand merge" -l crash-log -d 'Write the merged crash log here instead of OUT_DIR/crashes.jsonl' -r -F
complete -c pytest-abort -n "__fish_pytest_abort_using_subcommand merge" -l json-report -d 'Write the merged pytest-json-report file here' -r -F
complete -c pytest-abort -n "__fish_pytest_abort_using_subcommand merge" -l html-report -d 'Write the merged pytest-html report here' -r -F
complete -c pytest-abort -n "__fish_pytest_abort_using_subcommand merge" -l csv-report -d 'Write the merged pytest-csv report here' -r -F
complete -c pytest-abort -n "__fish_pytest_abort_using_subcommand merge" -l junit-xml -d 'Write the merged JUnit XML here' -r -F
complete -c pytest-abort -n "__fish_pytest_abort_using_subcommand merge" -l allow-missing -d 'Merge what is there when a shard folder is missing or incomplete (exit status from the tests only)'
complete -c pytest-abort -n "__fish_pytest_abort_using_subcommand merge" -s h -l help -d 'Print help'
complete -c pytest-abort -n "__fish_pytest_abort_using_subcommand append-json" -l file -d 'The report to add the crash to (created when missing)' -r -F
complete -c pytest-abort -n "__fish_pytest_abort_using_subcommand append-json" -l testfile -d 'Anchor a `test_name` that is not file-qualified to `<testfile>.py` (json and html, as the original); without it the info\'s `nodeid` (or `test_name`) is used as is' -r
complete -c pytest-abort -n "__fish_pytest_abort_using_subcommand append-json" -l crash-info -d 'The crash info, a JSON object with `test_name` and/or `nodeid`' -r
complete -c pytest-abort -n "__fish_pytest_abort_using_subcommand append-json" -s h -l help -d 'Print help'
complete -c pytest-abort -n "__fish_pytest_abort_using_subcommand append-html" -l file -d 'The report to add the crash to (created when missing)' -r -F
complete -c pytest-abort -n "__fish_pytest_abort_using_subcommand append-html" -l testfile -d 'Anchor a `test_name` that is not file-qualified to `<testfile>.py` (json and html, as the original); without it the info\'s `nodeid` (or `test_name`) is used as is' -r
complete -c pytest-abort -n "__fish_pytest_abort_using_subcommand append-html" -l crash-info -d 'The crash info, a JSON object with `test_name` and/or `nodeid`' -r
complete -c pytest-abort -n "__fish_pytest_abort_using_subcommand append-html" -s h -l help -d 'Print help'
complete -c pytest-abort -n "__fish_pytest_abort_using_subcommand append-csv" -l file -d 'The report to add the crash to (created when missing)' -r -F
complete -c pytest-abort -n "__fish_pytest_abort_using_subcommand append-csv" -l testfile -d 'Anchor a `test_name` that is not file-qualified to `<testfile>.py` (json and html, as the original); without it the info\'s `nodeid` (or `test_name`) is used as is' -r
complete -c pytest-abort -n "__fish_pytest_abort_using_subcommand append-csv" -l crash-info -d 'The crash info, a JSON object with `test_name` and/or `nodeid`' -r
complete -c pytest-abort -n "__fish_pytest_abort_using_subcommand append-csv" -s h -l help -d 'Print help'
complete -c pytest-abort -n "__fish_pytest_abort_using_subcommand completions" -l command -d 'Only this command\'s completions (default: all four)' -r -f -a "pytest-abort-wrap\t''
pytest-abort\t''
pytest-abort-postprocess\t''
pytest-abort-retry\t''"
complete -c pytest-abort -n "__fish_pytest_abort_using_subcommand completions" -l out-dir -d 'Write one file per command into DIR, at the path the shell looks in under a prefix (e.g. DIR/share/bash-completion/completions/pytest-abort-wrap), instead of printing' -r -F
complete -c pytest-abort -n "__fish_pytest_abort_using_subcommand completions" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c pytest-abort -n "__fish_pytest_abort_using_subcommand manpage" -l command -d 'The command whose page to print' -r -f -a "pytest-abort-wrap\t''
pytest-abort\t''
pytest-abort-postprocess\t''
pytest-abort-retry\t''"
complete -c pytest-abort -n "__fish_pytest_abort_using_subcommand manpage" -l out-dir -d 'Write all four pages into DIR/share/man/man1/<command>.1 instead of printing one' -r -F
complete -c pytest-abort -n "__fish_pytest_abort_using_subcommand manpage" -s h -l help -d 'Print help'
complete -c pytest-abort -n "__fish_pytest_abort_using_subcommand help; and not __fish_seen_subcommand_from sanitize-html handle-abort merge append-json append-html append-csv completions manpage help" -f -a "sanitize-html" -d 'Repair pytest-html reports\' data-jsonblob so pytest_html_merger can read them (files, or folders meaning their files matching --glob)'
complete -c pytest-abort -n "__fish_pytest_abort_using_subcommand help; and not __fish_seen_subcommand_from sanitize-html handle-abort merge append-json append-html append-csv completions manpage help" -f -a "handle-abort" -d 'The original\'s handle_abort for runner scripts: report the crash of a per-file pytest run (marker or --crash-info) into its json and html reports and the crash log. Prints true/false; exit 0 when a crash was reported, 1 when there was none, 2 on error'
complete -c pytest-abort -n "__fish_pytest_abort_using_subcommand help; and not __fish_seen_subcommand_from sanitize-html handle-abort merge append-json append-html append-csv completions manpage help" -f -a "merge" -d 'Merge the --out-dir folders of shards into one crash log, one report per format and one summary.json in OUT_DIR. Exit status: 0 all shards there and nothing failed, 1 a test failed, crashed or was not run, 2 a shard folder is missing or incomplete (unless --allow-missing), 64 bad usage, 74 an output could not be written'
complete -c pytest-abort -n "__fish_pytest_abort_using_subcommand help; and not __fish_seen_subcommand_from sanitize-html handle-abort merge append-json append-html append-csv completions manpage help" -f -a "append-json" -d 'Add one crash (the original\'s abort info, JSON) to a pytest-json-report file'
complete -c pytest-abort -n "__fish_pytest_abort_using_subcommand help; and not __fish_seen_subcommand_from sanitize-html handle-abort merge append-json append-html append-csv completions manpage help" -f -a "append-html" -d 'Add one crash (the original\'s abort info, JSON) to a pytest-html report'
complete -c pytest-abort -n "__fish_pytest_abort_using_subcommand help; and not __fish_seen_subcommand_from sanitize-html handle-abort merge append-json append-html append-csv completions manpage help" -f -a "append-csv" -d 'Add one crash (the original\'s abort info, JSON) to a pytest-csv report'
complete -c pytest-abort -n "__fish_pytest_abort_using_subcommand help; and not __fish_seen_subcommand_from sanitize-html handle-abort merge append-json append-html append-csv completions manpage help" -f -a "completions" -d 'Print the shell completions of the pytest-abort commands (all four, or --command\'s), or write one file per command into --out-dir under the name the shell looks for'
complete -c pytest-abort -n "__fish_pytest_abort_using_subcommand help; and not __fish_seen_subcommand_from sanitize-html handle-abort merge append-json append-html append-csv completions manpage help" -f -a "manpage" -d 'Print the man page of pytest-abort-wrap (or --command\'s), or write all four pages into --out-dir'
complete -c pytest-abort -n "__fish_pytest_abort_using_subcommand help; and not __fish_seen_subcommand_from sanitize-html handle-abort merge append-json append-html append-csv completions manpage help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
