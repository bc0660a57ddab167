#!/usr/bin/env bash
# Slurm:  GPUS=16 bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py args]
# A partition without GPUs: GPUS=2 GPUS_PER_NODE=2 CPUS_PER_TASK=1 GRES= bash tools/slurm_train.sh ...
# Environment: see tools/launch_slurm.sh (GPUS, GPUS_PER_NODE, CPUS_PER_TASK, GRES,
# PORT, SRUN_ARGS); inside an sbatch job add --auto-resume (docs/distributed.md).
set -euo pipefail
[[ $# -ge 4 ]] || { echo "usage: slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [args]" >&2; exit 2; }
exec bash "$(dirname "${BASH_SOURCE[0]}")/launch_slurm.sh" "$1" "$2" train.py "$3" --work-dir="$4" "${@:5}"
