complete -c pytest-abort-postprocess -l crash-log -d 'Crash log (JSONL) [env: PYTEST_ABORT_CRASHED_TESTS_LOG]' -r -F
complete -c pytest-abort-postprocess -l json-report -d 'A pytest-json-report file with every test and crash (patched, or created)' -r -F
complete -c pytest-abort-postprocess -l html-report -d 'A pytest-html report with every test and crash (patched, or created)' -r -F
complete -c pytest-abort-postprocess -l csv-report -d 'A pytest-csv report with every test and crash (patched, or created)' -r -F
complete -c pytest-abort-postprocess -l junit-xml -d 'JUnit XML with every test and crash (patched, or created; the wrapper builds it from the journals when pytest was not asked for --junitxml)' -r -F
complete -c pytest-abort-postprocess -s h -l help -d 'Print help'
complete -c pytest-abort-postprocess -s V -l version -d 'Print version'
