#!/usr/bin/env bash
# torchrun NPROC processes of one of the tools (used by dist_train.sh / dist_test.sh):
#   bash tools/launch_torchrun.sh NPROC train.py|test.py ARGS...
# Environment: NNODES (1), NODE_RANK (0), MASTER_ADDR (127.0.0.1), PORT (29500),
# MAX_RESTARTS (0: torchrun restarts the whole group up to this many times
# after a worker fails; a restarted training resumes from its last checkpoint),
# PYTHON.
set -euo pipefail
NPROC=${1:?usage: launch_torchrun.sh NPROC train.py|test.py ARGS...}
TOOL=${2:?usage: launch_torchrun.sh NPROC train.py|test.py ARGS...}
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY=${PYTHON:-$( [[ -x "$root/.venv/bin/python" ]] && echo "$root/.venv/bin/python" || echo python )}
PYTHONPATH="$root:${PYTHONPATH:-}" OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} \
exec "$PY" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${PORT:-29500}" \
    --max-restarts="${MAX_RESTARTS:-0}" \
    --nproc_per_node="$NPROC" "$root/tools/$TOOL" "${@:3}" --launcher pytorch
