#!/usr/bin/env bash
# Multi-process training with torchrun:  bash tools/dist_test.sh CONFIG CHECKPOINT NPROC [test.py args]
# One process per GPU (NCCL); on a CPU-only machine the processes use gloo.
set -euo pipefail
CONFIG=${1:?usage: dist_test.sh CONFIG CHECKPOINT NPROC [args]}
CHECKPOINT=${2:?usage: dist_test.sh CONFIG CHECKPOINT NPROC [args]}
NPROC=${3:?usage: dist_test.sh CONFIG CHECKPOINT NPROC [args]}
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY=${PYTHON:-$( [[ -x "$root/.venv/bin/python" ]] && echo "$root/.venv/bin/python" || echo python )}
PYTHONPATH="$root:${PYTHONPATH:-}" OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} \
exec "$PY" -m torch.distributed.run \
    --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$NPROC" --master_port="$PORT" \
    "$root/tools/test.py" "$CONFIG" "$CHECKPOINT" --launcher pytorch "${@:4}"
