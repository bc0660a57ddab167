#!/usr/bin/env bash
# srun one of the tools on a Slurm partition (used by slurm_train.sh / slurm_test.sh):
#   bash tools/launch_slurm.sh PARTITION JOB_NAME train.py|test.py ARGS...
# Environment: GPUS (8: the number of tasks), GPUS_PER_NODE (8: tasks per node),
# CPUS_PER_TASK (5), GRES (gpu:$GPUS_PER_NODE; empty: ask for no GRES, for a
# partition without GPUs), PORT (the rendezvous port, default MASTER_PORT or
# 29500), SRUN_ARGS, PYTHON.  OMP_NUM_THREADS defaults to CPUS_PER_TASK.
set -euo pipefail
PARTITION=${1:?usage: launch_slurm.sh PARTITION JOB_NAME train.py|test.py ARGS...}
JOB_NAME=${2:?usage: launch_slurm.sh PARTITION JOB_NAME train.py|test.py ARGS...}
TOOL=${3:?usage: launch_slurm.sh PARTITION JOB_NAME train.py|test.py ARGS...}
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
GRES=${GRES-gpu:$GPUS_PER_NODE}
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY=${PYTHON:-$( [[ -x "$root/.venv/bin/python" ]] && echo "$root/.venv/bin/python" || echo python )}
PYTHONPATH="$root:${PYTHONPATH:-}" MASTER_PORT=${PORT:-${MASTER_PORT:-29500}} \
OMP_NUM_THREADS=${OMP_NUM_THREADS:-$CPUS_PER_TASK} \
exec srun -p "$PARTITION" --job-name="$JOB_NAME" ${GRES:+--gres="$GRES"} \
    --ntasks="$GPUS" --ntasks-per-node="$GPUS_PER_NODE" \
    --cpus-per-task="$CPUS_PER_TASK" --kill-on-bad-exit=1 ${SRUN_ARGS:-} \
    "$PY" -u "$root/tools/$TOOL" "${@:4}" --launcher slurm
