complete -c pytest-abort-wrap -l crash-log -d 'Append crash records (JSONL) here [env: PYTEST_ABORT_CRASHED_TESTS_LOG]' -r -F
complete -c pytest-abort-wrap -l max-runs -d 'Most pytest runs in all (the first included; runs after device errors not counted)' -r
complete -c pytest-abort-wrap -l retry-mode -d 'After a crash: `resume` runs only the tests not yet finished; `deselect` reruns everything minus crashed tests (the original\'s way)' -r -f -a "resume\t'Run only the tests that have not completed, minus crashed ones'
deselect\t'The original\'s behaviour: rerun everything minus crashed tests'"
complete -c pytest-abort-wrap -l state-dir -d 'Folder for markers, journals and the shim copy (default: a private temp folder, removed at the end unless --keep-state)' -r -F
complete -c pytest-abort-wrap -l test-timeout -d 'Per-test time limit in seconds, from the test\'s start (a test\'s own `@pytest.mark.timeout(n)` wins): dump its Python stacks, then kill its process and go on with the rest' -r
complete -c pytest-abort-wrap -l timeout -d 'Time limit for the whole session (all runs), in seconds' -r
complete -c pytest-abort-wrap -l reproduce -d 'Run only this test, alone, up to --repeat times (a fresh pytest each time), stop at the first crash and print the crash rate' -r
complete -c pytest-abort-wrap -l repeat -d 'How many times --reproduce runs the test' -r
complete -c pytest-abort-wrap -l recheck-crashed -d 'After the run, rerun each crashed test alone N times and label it `deterministic` or `flaky (k/N)`' -r
complete -c pytest-abort-wrap -l flaky-result -d 'With --recheck-crashed: whether a crash that did not reproduce on every recheck (flaky) fails the run (`fail`) or not (`pass`); JUnit shows it as <failure> with <rerunFailure>s, or as <flakyFailure>s' -r -f -a "fail\t'A flaky crash is a failure (exit status 1, `<failure>` in JUnit)'
pass\t'A flaky crash does not fail the run (`<flakyFailure>` elements only)'"
complete -c pytest-abort-wrap -l poison-pattern -d 'Also count a failed test whose report text matches this regular expression as a sticky device error (repeatable; added to the default CUDA and HIP/ROCm patterns): its process runs no further test, and the tests left run in a fresh one' -r
complete -c pytest-abort-wrap -l multi-gpu-marker -d 'Leave tests with this pytest marker (`multi_gpu`) out of the run and run them afterwards, serially (no xdist) with every GPU of the job visible; one set of reports and one crash log for both' -r
complete -c pytest-abort-wrap -l json-report -d 'A pytest-json-report file with every test and crash (patched, or created)' -r -F
complete -c pytest-abort-wrap -l html-report -d 'A pytest-html report with every test and crash (patched, or created)' -r -F
complete -c pytest-abort-wrap -l csv-report -d 'A pytest-csv report with every test and crash (patched, or created)' -r -F
complete -c pytest-abort-wrap -l junit-xml -d 'JUnit XML with every test and crash (patched, or created; the wrapper builds it from the journals when pytest was not asked for --junitxml)' -r -F
complete -c pytest-abort-wrap -l events -d 'Write what happens (runs, crashes, reports, warnings, the totals) to this file as JSON lines, one event a line, as it happens' -r -F
complete -c pytest-abort-wrap -l shard -d 'Run only shard K/N (1-based K of N), or `auto`: from SLURM_ARRAY_TASK_ID, TEST_SHARD_INDEX (Bazel), CI_NODE_INDEX (GitLab), BUILDKITE_PARALLEL_JOB or CIRCLE_NODE_INDEX and their totals' -r
complete -c pytest-abort-wrap -l shard-by -d 'What a shard is made of: whole files, or single tests' -r -f -a "file\t'Every test of a file goes to the same shard'
test\t'Each test on its own'"
complete -c pytest-abort-wrap -l shard-mode -d 'Assign by a stable hash, or balance the durations of --durations-file' -r -f -a "hash\t'A stable hash of the node id or file ([`assign::shard_of`])'
duration\t'Greedy balance of the durations in `--durations-file`'"
complete -c pytest-abort-wrap -l durations-file -d 'Per-test durations (JSON object node id -> seconds): read to balance `--shard-mode duration`, and written or updated after every run' -r -F
complete -c pytest-abort-wrap -l out-dir -d 'Also leave the crash log, every report asked for and a summary.json under fixed names in DIR, for `pytest-abort merge`' -r -F
complete -c pytest-abort-wrap -l gpus -d 'Give every xdist worker its own GPU slot: `auto` (the job\'s CUDA/ROCR/HIP_VISIBLE_DEVICES, else every GPU detected), `none`, a count N (the first N of those), or ids/UUIDs `0,1,2,3` (no detection) [env: PYTEST_ABORT_GPUS]' -r
complete -c pytest-abort-wrap -l per-gpu -d 'Workers per GPU: pytest gets `-n (GPUs x K)` unless it was given -n' -r
complete -c pytest-abort-wrap -l gpu-vendor -d 'Whose GPUs: NVIDIA (CUDA_VISIBLE_DEVICES) or AMD (ROCR_VISIBLE_DEVICES with HIP_VISIBLE_DEVICES=0); `auto` decides from the caller\'s variables, else from what is found' -r -f -a "auto\t'The caller\'s variables decide (ROCR/HIP: AMD, CUDA: NVIDIA), else what is detected (NVIDIA first)'
nvidia\t'NVIDIA: `CUDA_VISIBLE_DEVICES`'
amd\t'AMD: `ROCR_VISIBLE_DEVICES`, `HIP_VISIBLE_DEVICES`'"
complete -c pytest-abort-wrap -l gpu-quarantine -d 'After N worker deaths in a row on one GPU (none of them passing a test) while another GPU is healthy, take no more slots on it' -r
complete -c pytest-abort-wrap -l gpu-release-wait -d 'After a worker death, its slot\'s next worker waits up to SECS while nvidia-smi (or amd-smi/rocm-smi) still lists the dead process on the GPU (skipped when no such tool exists)' -r
complete -c pytest-abort-wrap -l no-ptrace -d 'Supervise with waitpid and /proc scans instead of ptrace'
complete -c pytest-abort-wrap -l fresh-resume -d 'Resume every time in a fresh pytest process that collects again (without it, a serial pytest that is safe to fork collects once and runs the tests in forked children, forking again after a crash)'
complete -c pytest-abort-wrap -l keep-state -d 'Keep the state folder'
complete -c pytest-abort-wrap -l keep-leftovers -d 'Leave processes that tests left behind running'
complete -c pytest-abort-wrap -s q -l quiet -d 'No progress lines or summary on stderr'
complete -c pytest-abort-wrap -l no-poison -d 'Do not look for sticky device errors: a test\'s failure never retires its process'
complete -c pytest-abort-wrap -l no-ci-annotations -d 'Under GitHub Actions (GITHUB_ACTIONS=true), do not print ::error annotations for the crashes nor append the job summary to $GITHUB_STEP_SUMMARY'
complete -c pytest-abort-wrap -s h -l help -d 'Print help (see more with \'--help\')'
complete -c pytest-abort-wrap -s V -l version -d 'Print version'
