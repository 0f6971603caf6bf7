complete -c pytest-abort-retry -l crash-log -d 'Path to crashed-tests JSONL (default: PYTEST_ABORT_CRASHED_TESTS_LOG)' -r -F
complete -c pytest-abort-retry -l max-runs -d 'Maximum number of pytest invocations (at least 1)' -r
complete -c pytest-abort-retry -l clear-crash-log -d 'Truncate the crash log before the first run'
complete -c pytest-abort-retry -s h -l help -d 'Print help (see more with \'--help\')'
complete -c pytest-abort-retry -s V -l version -d 'Print version'
