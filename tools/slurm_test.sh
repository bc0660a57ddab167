#!/usr/bin/env bash
# Slurm:  GPUS=8 bash tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [test.py args]
# Environment: see tools/launch_slurm.sh (GPUS, GPUS_PER_NODE, CPUS_PER_TASK, GRES, PORT).
set -euo pipefail
[[ $# -ge 4 ]] || { echo "usage: slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [args]" >&2; exit 2; }
exec bash "$(dirname "${BASH_SOURCE[0]}")/launch_slurm.sh" "$1" "$2" test.py "$3" "$4" "${@:5}"
