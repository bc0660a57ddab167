#!/usr/bin/env bash
# torchrun NPROC processes of one of the tools (used by dist_train.sh / dist_test.sh):
#   bash tools/launch_torchrun.sh NPROC train.py|test.py ARGS...
# Environment: NNODES, NODE_RANK, MASTER_ADDR, PORT (default 29500), PYTHON.
set -euo pipefail
NPROC=${1:?usage: launch_torchrun.sh NPROC train.py|test.py ARGS...}
TOOL=${2:?usage: launch_torchrun.sh NPROC train.py|test.py ARGS...}
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY=${PYTHON:-$( [[ -x "$root/.venv/bin/python" ]] && echo "$root/.venv/bin/python" || echo python )}
PYTHONPATH="$root:${PYTHONPATH:-}" OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} \
exec "$PY" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${PORT:-29500}" \
    --nproc_per_node="$NPROC" "$root/tools/$TOOL" "${@:3}" --launcher pytorch
