#!/usr/bin/env bash
# Slurm:  GPUS=16 bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py args]
set -euo pipefail
[[ $# -ge 4 ]] || { echo "usage: slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [args]" >&2; exit 2; }
exec bash "$(dirname "${BASH_SOURCE[0]}")/launch_slurm.sh" "$1" "$2" train.py "$3" --work-dir="$4" "${@:5}"
