#!/usr/bin/env bash
# srun one of the tools on a Slurm partition (used by slurm_train.sh / slurm_test.sh):
#   bash tools/launch_slurm.sh PARTITION JOB_NAME train.py|test.py ARGS...
# Environment: GPUS (8), GPUS_PER_NODE (8), CPUS_PER_TASK (5), SRUN_ARGS, PYTHON.
set -euo pipefail
PARTITION=${1:?usage: launch_slurm.sh PARTITION JOB_NAME train.py|test.py ARGS...}
JOB_NAME=${2:?}
TOOL=${3:?}
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY=${PYTHON:-$( [[ -x "$root/.venv/bin/python" ]] && echo "$root/.venv/bin/python" || echo python )}
PYTHONPATH="$root:${PYTHONPATH:-}" \
srun -p "$PARTITION" --job-name="$JOB_NAME" --gres=gpu:"$GPUS_PER_NODE" \
    --ntasks="$GPUS" --ntasks-per-node="$GPUS_PER_NODE" \
    --cpus-per-task="${CPUS_PER_TASK:-5}" --kill-on-bad-exit=1 ${SRUN_ARGS:-} \
    "$PY" -u "$root/tools/$TOOL" "${@:4}" --launcher slurm
