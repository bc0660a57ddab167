#!/usr/bin/env bash
# Multi-process testing:  bash tools/dist_test.sh CONFIG CHECKPOINT NPROC [test.py args]
# Several hosts: NNODES, NODE_RANK, MASTER_ADDR, PORT (tools/launch_torchrun.sh).
set -euo pipefail
CONFIG=${1:?usage: dist_test.sh CONFIG CHECKPOINT NPROC [args]}
CHECKPOINT=${2:?usage: dist_test.sh CONFIG CHECKPOINT NPROC [args]}
NPROC=${3:?usage: dist_test.sh CONFIG CHECKPOINT NPROC [args]}
exec bash "$(dirname "${BASH_SOURCE[0]}")/launch_torchrun.sh" "$NPROC" test.py "$CONFIG" "$CHECKPOINT" "${@:4}"
