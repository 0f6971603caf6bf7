#!/bin/bash
# The batch script of a GPU node (an 8-GPU CI job or node allocation), NVIDIA
# or AMD: every GPU the job was given gets its own pytest-xdist workers, and
# the crash log and every report land in one folder.
#   sbatch --gpus=8 examples/gpu-node.sh tests/        # Slurm (AMD: --gpus too)
#   examples/gpu-node.sh tests/ -k 'not slow'          # or straight on the node
# Arguments are pytest's. Environment:
#   OUT        the folder for crash log and reports          [default: $PWD/gpu-run]
#   GPUS       auto (the job's CUDA/ROCR/HIP_VISIBLE_DEVICES,
#              else every GPU found), a count, or 0,1,...     [default: auto]
#   PER_GPU    workers per GPU                              [default: 1]
#   VENDOR     auto | nvidia | amd                          [default: auto]
#   TEST_TIMEOUT  seconds before a hung test (a spinning
#              kernel) has its stacks dumped and is killed  [default: 900]
#   WRAP       the wrapper                                  [default: pytest-abort-wrap]
#   PYTHON     the Python with pytest and pytest-xdist      [default: python3]
#SBATCH --job-name=pytest-gpu
#SBATCH --nodes=1
#SBATCH --gpus=8
#SBATCH --output=pytest-gpu-%j.out
set -euo pipefail
out="${OUT:-$PWD/gpu-run}"
mkdir -p "$out"
# The wrapper writes what it knows as it happens (crashes.jsonl, events.jsonl)
# and, at the end, the reports and summary.json (GPU slots, crashes per GPU);
# the out-dir's fixed names are the same files. Its exit status is the job's:
# 0 all passed, 1 failures or crashes, 64 no GPU found (see README).
exec "${WRAP:-pytest-abort-wrap}" \
    --gpus "${GPUS:-auto}" --per-gpu "${PER_GPU:-1}" --gpu-vendor "${VENDOR:-auto}" \
    --gpu-quarantine 3 --test-timeout "${TEST_TIMEOUT:-900}" \
    --crash-log "$out/crashes.jsonl" --events "$out/events.jsonl" \
    --json-report "$out/report.json" --html-report "$out/report.html" --junit-xml "$out/junit.xml" \
    --out-dir "$out" \
    -- "${PYTHON:-python3}" -m pytest "$@"
