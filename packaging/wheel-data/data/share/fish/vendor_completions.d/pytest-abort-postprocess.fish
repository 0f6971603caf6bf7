complete -c pytest-abort-postprocess -l crash-log -d 'Crash log (JSONL) [env: PYTEST_ABORT_CRASHED_TESTS_LOG]' -r -F
complete -c pytest-abort-postprocess -l json-report -d 'pytest-json-report file to patch (created when missing)' -r -F
complete -c pytest-abort-postprocess -l html-report -d 'pytest-html 4.x report to patch (created when missing)' -r -F
complete -c pytest-abort-postprocess -l csv-report -d 'pytest-csv report to patch (created when missing)' -r -F
complete -c pytest-abort-postprocess -l junit-xml -d 'JUnit XML report to patch (created when missing)' -r -F
complete -c pytest-abort-postprocess -s h -l help -d 'Print help'
complete -c pytest-abort-postprocess -s V -l version -d 'Print version'
