#!/usr/bin/env bash
# The device check in one command, on a GPU machine that reaches no registry:
#
#   bash tools/gpu_check/run.sh WHEELS_DIR OUT_DIR [--dry-run]
#
# WHEELS_DIR comes from tools/gpu_check/prepare.sh.  Installs its wheels into
# a folder on PYTHONPATH (${PYTHON:-python3}'s own torch stays), builds mmcv
# with its CPU ops and this package (its fused CPU loops against that torch),
# then runs tools/gpu_check/check.py's sections and the user's loop
# (tools/dist_train.sh with SyncBN, then tools/test.py) and writes
# OUT_DIR/report.md, results.json, gpu_check.png and run.log.  Each stage has
# a timeout and logs its wall time; a failing stage is reported and the run
# goes on.  The whole run keeps within GPU_CHECK_BUDGET_S seconds (default
# 460; 1800 for a dry run).  Exit status: 0 when every stage passed and
# parity held.
#
# --dry-run: the same on the CPU at toy sizes, reusing the mmcv 2.1.0 that
# PYTHON already has (no build) and installing gcnet_mm without compiling
# its loops (GCNET_MM_WITH_EXT=0; set it to 1 to compile them).

# stage() runs the functions below through a copy of this script.
# shellcheck disable=SC2317
set -uo pipefail
self="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
root="$(cd "$(dirname "$self")/../.." && pwd)"

log() { printf '[gpu_check %5ds] %s\n' "$SECONDS" "$*"; }

# stage NAME CAP_S CMD...: run CMD with a timeout of CAP_S seconds, or less
# when the budget (keeping 20 s for the report) runs short; record
# NAME, seconds, status and exit code in stages.tsv.
stage() {
  local name="$1" cap="$2"; shift 2
  local left=$((deadline - SECONDS - 20)) t rc status t0 dt
  t=$(( cap < left ? cap : left ))
  if (( t < 5 )); then
    log "== $name: skipped, the ${budget} s budget is spent"
    printf '%s\t0\tskipped (no time left)\t-1\n' "$name" >> "$stages"
    return 1
  fi
  log "== $name (timeout ${t} s)"
  t0="$(date +%s.%N)"
  # A function of this script runs in a fresh copy of it, under timeout.
  if [[ "$(type -t "$1")" == function ]]; then
    timeout --kill-after=10 "$t" bash "$self" __stage "$@"
  else
    timeout --kill-after=10 "$t" "$@"
  fi
  rc=$?
  dt="$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')"
  case "$rc" in
    0) status=ok ;;
    124|137) status="timed out after ${t} s" ;;
    *) status="failed (exit $rc)" ;;
  esac
  log "== $name: $status in ${dt} s"
  printf '%s\t%s\t%s\t%s\n' "$name" "$dt" "$status" "$rc" >> "$stages"
  return "$rc"
}

pip_() { "$PY" -m pip --disable-pip-version-check "$@"; }

install_wheels() {
  local w=("$wheels"/*.whl)
  [[ -e "${w[0]}" ]] || { echo "no wheels in $wheels" >&2; return 1; }
  for f in "${w[@]}"; do
    case "$(basename "$f")" in
      torch-*|torchvision-*|triton-*|numpy-*|nvidia_*)
        echo "$f: the machine's own $(basename "$f" | cut -d- -f1) must stay; remove it from $wheels" >&2
        return 1 ;;
    esac
  done
  pip_ install -q --no-index --no-deps --no-compile --no-cache-dir \
    --target "$site" "${w[@]}" || return 1
  # What pip would say of the whole environment (opencv-python is satisfied
  # by the machine's opencv-python-headless, which pip does not know).
  pip_ check || true
}

build_mmcv() {
  local sdist=("$wheels"/mmcv-*.tar.gz)
  [[ -f "${sdist[0]}" ]] || { echo "no mmcv source in $wheels" >&2; return 1; }
  if (( dry )); then
    # The dry run reuses PYTHON's mmcv; it only checks the source unpacks.
    tar -tzf "${sdist[0]}" >/dev/null || return 1
    "$PY" -c 'import mmcv, mmcv.ops; print("reusing mmcv", mmcv.__version__, "with its ops, from", mmcv.__file__)'
    return
  fi
  # CPU ops only: mmcv's setup.py builds its CUDA ops whenever torch sees
  # a GPU, so the GPU is hidden from the build.
  CUDA_VISIBLE_DEVICES="" MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS="$jobs" \
    pip_ wheel -q --no-index --no-deps --no-build-isolation \
    -w "$work/dist" "${sdist[0]}" || return 1
  pip_ install -q --no-index --no-deps --target "$site" "$work"/dist/mmcv-*.whl
}

build_gcnet_mm() {
  # A copy of the source, so the build leaves the checkout as it was.
  mkdir -p "$work/src"
  tar -C "$root" --exclude=./.git --exclude=./.venv --exclude=./build \
    --exclude=./work_dirs --exclude=./data --exclude='*.so' \
    --exclude="./$(basename "$wheels")" -cf - . | tar -C "$work/src" -xf - \
    || return 1
  pip_ wheel -q --no-index --no-deps --no-build-isolation \
    -w "$work/dist" "$work/src" || return 1
  pip_ install -q --no-index --no-deps --target "$site" "$work"/dist/gcnet_mm-*.whl
}

env_check() {
  # The installed package, not the checkout python -m would put first; with
  # CUDA hidden, as the mmcv built here has its CPU ops only.
  cd "$work" || return 1
  "$PY" -c 'import gcnet_mm, sys; f = gcnet_mm.__file__; sys.exit(0 if f.startswith(sys.argv[1]) else "gcnet_mm imported from " + f)' "$site" \
    || return 1
  CUDA_VISIBLE_DEVICES="" "$PY" -m gcnet_mm.utils.env_check
}

section() {  # check.py SECTION, its JSON into the work folder
  "$PY" "$root/tools/gpu_check/check.py" "$1" --json "$work/$1.json" "${dry_flag[@]}"
}

free_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

user_loop_train() {
  local cfg="$root/configs/_toy_/gcnet_r50-d8_toy-cityscapes.py"
  cd "$work/loop" || return 1
  PORT="$(free_port)" PYTHON="$PY" bash "$root/tools/dist_train.sh" "$cfg" 1 \
    --work-dir "$work/loop/work_dir" --cfg-options \
    model.backbone.norm_cfg.type=SyncBN model.decode_head.norm_cfg.type=SyncBN \
    model.auxiliary_head.norm_cfg.type=SyncBN
}

user_loop_test() {
  local cfg="$root/configs/_toy_/gcnet_r50-d8_toy-cityscapes.py" ckpt
  cd "$work/loop" || return 1
  ckpt="$(cat "$work/loop/work_dir/last_checkpoint")" || return 1
  "$PY" "$root/tools/test.py" "$cfg" "$ckpt" --work-dir "$work/loop/work_dir"
}

main() {
  log "gcnet_mm device check$( (( dry )) && echo ' (DRY RUN on the CPU)'): $PY, wheels $wheels, out $out, work $work, budget ${budget} s"
  "$PY" -c 'import sys, torch; print("python", sys.version.split()[0], "| torch", torch.__version__, torch.__file__, "| CUDA available:", torch.cuda.is_available())' \
    || { echo "run.sh: $PY cannot import torch" >&2; return 1; }
  local torch_before torch_after
  torch_before="$("$PY" -c 'import torch; print(torch.__file__, torch.__version__)')"

  stage install 90 install_wheels
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  torch_after="$("$PY" -c 'import torch; print(torch.__file__, torch.__version__)')"
  [[ "$torch_before" == "$torch_after" ]] \
    || log "WARNING: torch changed: $torch_before -> $torch_after"

  # gcnet_mm's loops compile (one file, one core) while mmcv's ops do.
  stage gcnet_mm-build 240 build_gcnet_mm &
  local gcnet_pid=$!
  if (( dry )); then
    stage mmcv-reuse 120 build_mmcv
  else
    stage "mmcv-build (${jobs} jobs)" 300 build_mmcv
  fi
  wait "$gcnet_pid"
  stage env-check 60 env_check

  stage env 60 section env
  stage parity 90 section parity
  stage blocks 150 section blocks
  stage resnet 180 section resnet

  mkdir -p "$work/loop"
  stage toy-data 60 "$PY" "$root/tools/misc/make_toy_data.py" cityscapes \
    "$work/loop/data/toy_cityscapes"
  stage "train (dist_train.sh, SyncBN)" 150 user_loop_train
  stage "test (test.py)" 90 user_loop_test

  deadline=$((deadline + 20))  # the time kept for the report
  log "== report"
  "$PY" "$root/tools/gpu_check/check.py" report --work "$work" --out "$out" \
    "${dry_flag[@]}"
}

if [[ "${1:-}" == __stage ]]; then  # stage(): one function, state from GPU_CHECK_*
  wheels="$GPU_CHECK_WHEELS" work="$GPU_CHECK_WORK" site="$GPU_CHECK_WORK/site"
  dry="$GPU_CHECK_DRY" jobs="$GPU_CHECK_JOBS" PY="$GPU_CHECK_PYTHON"
  dry_flag=()
  (( dry )) && dry_flag=(--dry-run)
  "${@:2}"
  exit
fi

usage() { echo "usage: run.sh WHEELS_DIR OUT_DIR [--dry-run]" >&2; exit 2; }
dry=0
args=()
for a in "$@"; do
  case "$a" in
    --dry-run) dry=1 ;;
    -h|--help) usage ;;
    -*) echo "run.sh: unknown option $a" >&2; usage ;;
    *) args+=("$a") ;;
  esac
done
(( ${#args[@]} == 2 )) || usage
[[ -d "${args[0]}" ]] || { echo "run.sh: WHEELS_DIR ${args[0]} is not a folder (make it with tools/gpu_check/prepare.sh)" >&2; exit 2; }
wheels="$(cd "${args[0]}" && pwd)"
mkdir -p "${args[1]}" || exit 2
out="$(cd "${args[1]}" && pwd)"
PY="${PYTHON:-python3}"
command -v "$PY" >/dev/null || { echo "run.sh: no interpreter $PY (set PYTHON)" >&2; exit 2; }

work="$(mktemp -d "${TMPDIR:-/tmp}/gcnet_mm_gpu_check.XXXXXX")"
site="$work/site"
stages="$work/stages.tsv"
budget="${GPU_CHECK_BUDGET_S:-$(( dry ? 1800 : 460 ))}"
deadline=$((SECONDS + budget))
jobs="$(nproc)"
dry_flag=()
(( dry )) && dry_flag=(--dry-run)
# gcnet_mm's fused CPU loops: built on the device; the dry run reuses nothing
# of the checkout's and skips them (env_check reads the same variable).
export GCNET_MM_WITH_EXT="${GCNET_MM_WITH_EXT:-$(( dry ? 0 : 1 ))}"
export GPU_CHECK_WHEELS="$wheels" GPU_CHECK_WORK="$work" GPU_CHECK_DRY="$dry" \
  GPU_CHECK_JOBS="$jobs" GPU_CHECK_PYTHON="$PY"
# The interpreter's own scripts (ninja, which the builds need to compile in
# parallel) on the PATH.
PATH="$(dirname "$(command -v "$PY")"):$PATH"
ninja_bin="$("$PY" -c 'import ninja, os; print(ninja.BIN_DIR)' 2>/dev/null)" \
  && PATH="$ninja_bin:$PATH"
export PATH

main 2>&1 | tee "$out/run.log"
rc=${PIPESTATUS[0]}
[[ -n "${GPU_CHECK_KEEP:-}" ]] || rm -rf "$work"
exit "$rc"
