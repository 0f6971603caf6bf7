#!/bin/bash
# Submits the suite as SHARDS array tasks plus the merge job that runs after
# all of them, whatever their exit status:
#   SHARDS=8 OUT=/shared/run42 examples/slurm/submit.sh tests/ -x
# Prints the two job ids: "<array job> <merge job>".
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
shards="${SHARDS:-3}"
array=$(sbatch --parsable --array="1-$shards" "$here/shards.sbatch" "$@")
array="${array%%;*}"
merge=$(sbatch --parsable --dependency="afterany:$array" "$here/merge.sbatch")
echo "$array ${merge%%;*}"
