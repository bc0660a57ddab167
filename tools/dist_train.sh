#!/usr/bin/env bash
# Multi-process training:  bash tools/dist_train.sh CONFIG NPROC [train.py args]
# GPUs: one process per GPU, NCCL, SyncBN as configured.  CPU-only machines:
# the processes talk over gloo and SyncBN becomes BN (tools/train.py warns once).
# Several hosts: NNODES, NODE_RANK, MASTER_ADDR, PORT; a worker that fails
# restarts the group MAX_RESTARTS times (default 0), resuming from the last
# checkpoint (tools/launch_torchrun.sh, docs/distributed.md).
set -euo pipefail
CONFIG=${1:?usage: dist_train.sh CONFIG NPROC [args]}
NPROC=${2:?usage: dist_train.sh CONFIG NPROC [args]}
exec bash "$(dirname "${BASH_SOURCE[0]}")/launch_torchrun.sh" "$NPROC" train.py "$CONFIG" "${@:3}"
