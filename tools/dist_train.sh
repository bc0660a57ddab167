#!/usr/bin/env bash
# Multi-process training with torchrun:  bash tools/dist_train.sh CONFIG NPROC [train.py args]
# GPUs: one process per GPU, NCCL, SyncBN as configured.  CPU-only machines:
# processes talk over gloo and SyncBN becomes BN (tools/train.py warns once).
set -euo pipefail
CONFIG=${1:?usage: dist_train.sh CONFIG NPROC [args]}
NPROC=${2:?usage: dist_train.sh CONFIG NPROC [args]}
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
    "$root/tools/train.py" "$CONFIG" --launcher pytorch "${@:3}"
