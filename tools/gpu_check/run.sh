#!/usr/bin/env bash
# The GPU check in one command, on a GPU machine with or without network
# access:
#
#   bash tools/gpu_check/run.sh WHEELS_DIR OUT_DIR [--dry-run]
#
# WHEELS_DIR comes from tools/gpu_check/prepare.sh.  Its wheels go into a
# temporary folder first on PYTHONPATH (${PYTHON:-python3}'s own torch,
# Triton, numpy and the rest stay); then, most valuable first:
#
#   base            gcnet_mm without its C++ loops, mmcv without its compiled
#                   ops (seconds): enough for the block's parity and timings
#   env, parity, blocks   check.py's sections
#   mmcv-build, gcnet_mm-loops   in parallel: mmcv with its CPU ops (mmdet
#                   and mmseg import them), gcnet_mm's optional C++ loops
#   env-check, head, resnet      `python -m gcnet_mm.utils.env_check`,
#                   check.py's sections
#   toy-data, train, test        the user's loop (tools/dist_train.sh with
#                   SyncBN, then tools/test.py)
#
# and writes OUT_DIR/report.md, results.json, gpu_check.png and run.log.
# Each stage has a time cap (PLAN below) and logs its wall time; a stage
# that fails is reported with the last line it printed, and the run goes on.
# The caps add up to GPU_CHECK_BUDGET_S seconds (default 460; 1800 for a dry
# run) less 20 s for the report; a stage may also use the time earlier
# stages left unused, as long as the later ones keep their caps.  The report
# is written whatever fails, also when the run is stopped (SIGTERM, SIGINT).
# Exit status: 0 when every stage passed and parity held.
#
# --dry-run: the same on the CPU at toy sizes.  An interpreter that has mmcv
# with its ops (the project's .venv) is reused for mmcv, and gcnet_mm's loops
# are skipped (GCNET_MM_WITH_EXT=0; unset it to build them).

# stage() runs the functions below through a copy of this script.
# shellcheck disable=SC2317
set -uo pipefail
self="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
root="$(cd "$(dirname "$self")/../.." && pwd)"

# KEY:CAP, in running order: each stage's time cap in seconds at the default
# budget of 460 s (scaled with GPU_CHECK_BUDGET_S); with the 20 s kept for
# the report they add up to the budget.
PLAN=(install:15 base:30 env:10 parity:45 blocks:90 builds:130 env-check:10
      head:10 resnet:45 toy-data:10 train:30 test:15)
PLAN_BUDGET=460
REPORT_S=20

log() { printf '[gpu_check %5ds] %s\n' "$SECONDS" "$*"; }

cap_of() {  # cap_of KEY: that stage's cap at this run's budget
  local e
  for e in "${PLAN[@]}"; do
    [[ "${e%%:*}" == "$1" ]] && { echo $(( ${e#*:} * budget / PLAN_BUDGET )); return; }
  done
  echo 0
}

later_of() {  # later_of KEY: the caps of the stages after it
  local e seen=0 sum=0
  for e in "${PLAN[@]}"; do
    (( seen )) && sum=$(( sum + ${e#*:} * budget / PLAN_BUDGET ))
    [[ "${e%%:*}" == "$1" ]] && seen=1
  done
  echo "$sum"
}

# stage KEY NAME CMD...: run CMD with a timeout (KEY's cap, more if earlier
# stages left time unused, less if the budget runs short); record KEY, NAME,
# seconds, status, exit code and the last line CMD printed in stages.tsv.
stage() {
  local key="$1" name="$2"; shift 2
  local left=$((deadline - SECONDS - REPORT_S)) cap later t rc status t0 dt why
  cap="$(cap_of "$key")"
  later="$(later_of "$key")"
  t=$(( left - later > cap ? left - later : cap ))
  t=$(( t < left ? t : left ))
  if (( t < 5 )); then
    log "== $name: skipped, the ${budget} s budget is spent"
    printf '%s\t%s\t0\tskipped (no time left)\t-1\t\n' "$key" "$name" >> "$stages"
    return 1
  fi
  log "== $name (timeout ${t} s)"
  t0="$(date +%s.%N)"
  local slog="$work/logs/${key}-${BASHPID}.log"
  # A function of this script runs in a fresh copy of it.  In the
  # background, so that a signal reaches the trap at once; the timeout's
  # pid in running/ for the trap to stop it.
  local cmd=("$@")
  [[ "$(type -t "$1")" == function ]] && cmd=(bash "$self" __stage "$@")
  {
    timeout --kill-after=10 "$t" "${cmd[@]}" &
    printf '%s\t%s\n' "$key" "$name" > "$work/running/$!"
    wait $!
    echo $? > "$slog.rc"
    rm -f "$work/running/$!"
  } 2>&1 | tee "$slog" &
  wait $!
  rc="$(cat "$slog.rc" 2>/dev/null || echo 143)"
  dt="$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')"
  case "$rc" in
    0) status=ok ;;
    124|137) status="timed out after ${t} s" ;;
    *) status="failed (exit $rc)" ;;
  esac
  why=""
  (( rc == 0 )) || why="$(grep -v '^[[:space:]]*$' "$slog" | tail -n1 | tr '\t' ' ' | cut -c1-300)"
  log "== $name: $status in ${dt} s"
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$key" "$name" "$dt" "$status" "$rc" "$why" >> "$stages"
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
  # The OpenMMLab hosts and setuptools (< 81, for pkg_resources) always;
  # the other wheels where the machine has no version of its own.
  local todo=()
  mapfile -t todo < <("$PY" - "${w[@]}" <<'EOF'
import os.path as osp
import re
import sys
from importlib import metadata

always = {'mmengine', 'mmdet', 'mmsegmentation', 'mmpretrain', 'setuptools'}
for path in sys.argv[1:]:
    name = re.sub(r'[-_.]+', '-', osp.basename(path).split('-')[0]).lower()
    try:
        have = metadata.version(name)
    except metadata.PackageNotFoundError:
        have = None
    if have is None or name in always:
        print(path)
    else:
        print(f'keeping the machine\'s {name} {have}', file=sys.stderr)
EOF
)
  (( ${#todo[@]} )) || { echo "nothing to install from $wheels" >&2; return 1; }
  pip_ install -q --no-index --no-deps --no-compile --no-cache-dir \
    --target "$site" "${todo[@]}" || return 1
  # What pip says of the whole environment (opencv-python is satisfied by
  # the machine's opencv-python-headless, which pip does not know).
  PYTHONPATH="$site" pip_ check || true
}

has_mmcv_ops() {  # PYTHON's own mmcv, with its compiled ops (the .venv's)
  "$PY" -c 'import mmcv.ops' >/dev/null 2>&1
}

mmcv_sdist() {
  local sdist=("$wheels"/mmcv-*.tar.gz)
  [[ -f "${sdist[0]}" ]] || { echo "no mmcv source in $wheels" >&2; return 1; }
  echo "${sdist[0]}"
}

gcnet_mm_wheel() {  # gcnet_mm_wheel WITH_EXT: a wheel of a copy of the checkout
  local src="$work/src-$1" dist="$work/dist-gcnet_mm-$1"
  mkdir -p "$src" "$dist"
  tar -C "$root" --exclude=./.git --exclude=./.venv --exclude=./build \
    --exclude=./work_dirs --exclude=./data --exclude='*.so' \
    --exclude="./$(basename "$wheels")" -cf - . | tar -C "$src" -xf - \
    || return 1
  if [[ "$1" == 0 ]]; then
    GCNET_MM_WITH_EXT=0 pip_ wheel -q --no-index --no-deps --no-build-isolation -w "$dist" "$src"
  else  # unset: optional (setup.py warns and leaves them out); 1: required
    pip_ wheel --no-index --no-deps --no-build-isolation -w "$dist" "$src"
  fi || return 1
  pip_ install -q --no-index --no-deps --upgrade --target "$site" "$dist"/gcnet_mm-*.whl
}

install_base() {
  # gcnet_mm without its C++ loops (pure Python, seconds).
  gcnet_mm_wheel 0 || return 1
  if has_mmcv_ops; then
    "$PY" -c 'import mmcv; print("reusing mmcv", mmcv.__version__, "with its ops, from", mmcv.__file__)'
    return
  fi
  # mmcv without its compiled ops ("mmcv-lite": seconds) in a folder after
  # the site one; the build with its ops later takes precedence.
  local sdist
  sdist="$(mmcv_sdist)" || return 1
  MMCV_WITH_OPS=0 pip_ wheel -q --no-index --no-deps --no-build-isolation \
    -w "$work/dist-lite" "$sdist" || return 1
  pip_ install -q --no-index --no-deps --target "$work/lite" "$work"/dist-lite/mmcv*.whl
}

build_mmcv() {
  local sdist
  sdist="$(mmcv_sdist)" || return 1
  if has_mmcv_ops; then
    tar -tzf "$sdist" >/dev/null || return 1  # the source unpacks
    "$PY" -c 'import mmcv; print("reusing mmcv", mmcv.__version__, "with its ops, from", mmcv.__file__)'
    return
  fi
  # CPU ops only: mmcv's setup.py builds its CUDA ops whenever torch sees
  # a GPU, so the GPU is hidden from the build.
  CUDA_VISIBLE_DEVICES="" MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS="$jobs" \
    pip_ wheel -q --no-index --no-deps --no-build-isolation \
    -w "$work/dist" "$sdist" || return 1
  pip_ install -q --no-index --no-deps --target "$site" "$work"/dist/mmcv-*.whl
}

build_loops() {
  if [[ "${GCNET_MM_WITH_EXT:-}" == 0 ]]; then
    echo "gcnet_mm's C++ loops: not built (GCNET_MM_WITH_EXT=0)"
    return
  fi
  gcnet_mm_wheel 1 || return 1
  cd "$work" || return 1  # the installed package, not the checkout
  "$PY" -c 'from gcnet_mm.ops.cpu_kernels import extension_isa as f; i = f(); print("gcnet_mm C++ loops:", i or "not built (see the build log above)")'
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

preflight() {
  # One line: what the check runs on (a missing piece says so, nothing stops).
  local line gpu
  line="$("$PY" - <<'EOF' 2>&1
import platform
from importlib import metadata
parts = [f'Python {platform.python_version()}']
for name in ('torch', 'triton', 'torchvision', 'timm', 'numpy'):
    try:
        parts.append(f'{name} {metadata.version(name)}')
    except metadata.PackageNotFoundError:
        parts.append(f'{name} missing')
try:
    import torch
    parts[1] += f' (CUDA {torch.version.cuda})'
except Exception as e:  # the line still says what is there
    parts[1] += f' (import failed: {type(e).__name__})'
print(' | '.join(parts))
EOF
)"
  tool_version() {  # tool_version NAME CMD...: NAME and its version
    local v
    v="$("${@:2}" 2>/dev/null | grep -Eo '[0-9]+\.[0-9]+(\.[0-9]+)?' | head -n1)"
    printf '%s %s' "$1" "${v:-missing}"
  }
  line+=" | $(tool_version gcc "${CC:-gcc}" --version) | $(tool_version ninja ninja --version) | $(tool_version nvcc nvcc --version)"
  gpu="$(nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv,noheader 2>/dev/null | head -n1)"
  line+=" | GPU ${gpu:-none (nvidia-smi: none or no GPU)}"
  echo "$line" > "$work/preflight.txt"
  log "preflight: $line"
}

report() {
  log "== report"
  "$PY" "$root/tools/gpu_check/check.py" report --work "$work" --out "$out_dir" \
    "${dry_flag[@]}"
  local rc=$?
  if [[ ! -s "$out_dir/report.md" ]]; then  # check.py itself did not run
    {
      echo "# gcnet_mm GPU check: no report"
      echo
      echo "tools/gpu_check/check.py report exited $rc (see run.log). Stages:"
      echo
      echo "| stage | seconds | status | last line |"
      echo "|---|---|---|---|"
      awk -F'\t' '{ printf "| %s | %s | %s | %s |\n", $2, $3, $4, $6 }' "$stages"
    } > "$out_dir/report.md"
    printf '{"error": "check.py report exited %s", "stages_tsv": "%s"}\n' \
      "$rc" "$stages" > "$out_dir/results.json"
  fi
  return "$rc"
}

stopped() {  # SIGTERM / SIGINT: stop the stages that run, report, leave
  local f pid
  trap '' TERM INT
  log "== stopped by a signal"
  for f in "$work"/running/*; do
    [[ -e "$f" ]] || continue
    pid="$(basename "$f")"
    printf '%s\t0\tstopped (the run was stopped by a signal)\t143\t\n' \
      "$(cat "$f")" >> "$stages"
    kill -TERM "$pid" 2>/dev/null
  done
  deadline=$((SECONDS + REPORT_S))
  report
  finish 143
}

finish() {
  [[ -n "${GPU_CHECK_KEEP:-}" ]] || rm -rf "$work"
  exec >&- 2>&-
  wait "$tee_pid" 2>/dev/null  # run.log complete before the exit
  exit "$1"
}

main() {
  log "gcnet_mm GPU check$( (( dry )) && echo ' (DRY RUN on the CPU)'): $PY, wheels $wheels, out $out_dir, work $work, budget ${budget} s"
  preflight
  local torch_before torch_after rc=0
  torch_before="$("$PY" -c 'import torch; print(torch.__file__, torch.__version__)' 2>&1)"

  stage install install install_wheels
  export PYTHONPATH="$site:$work/lite${PYTHONPATH:+:$PYTHONPATH}"
  torch_after="$("$PY" -c 'import torch; print(torch.__file__, torch.__version__)' 2>&1)"
  [[ "$torch_before" == "$torch_after" ]] \
    || log "WARNING: torch changed: $torch_before -> $torch_after"
  stage base base install_base

  stage env env section env
  stage parity parity section parity
  stage blocks blocks section blocks

  # mmcv's ops and gcnet_mm's loops compile at the same time.
  local mmcv_stage="mmcv-build (${jobs} jobs)"
  has_mmcv_ops && mmcv_stage=mmcv-reuse
  stage builds gcnet_mm-loops build_loops &
  local loops_pid=$!
  stage builds "$mmcv_stage" build_mmcv
  wait "$loops_pid"
  stage env-check env-check env_check
  stage head head section head
  stage resnet resnet section resnet

  mkdir -p "$work/loop"
  stage toy-data toy-data "$PY" "$root/tools/misc/make_toy_data.py" \
    cityscapes "$work/loop/data/toy_cityscapes"
  stage train "train (dist_train.sh, SyncBN)" user_loop_train
  stage test "test (test.py)" user_loop_test

  report || rc=$?
  return "$rc"
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
out_dir="$(cd "${args[1]}" && pwd)"
rm -f "$out_dir/report.md" "$out_dir/results.json" "$out_dir/gpu_check.png"  # no stale ones
PY="${PYTHON:-python3}"
command -v "$PY" >/dev/null || { echo "run.sh: no interpreter $PY (set PYTHON)" >&2; exit 2; }
budget="${GPU_CHECK_BUDGET_S:-$(( dry ? 1800 : PLAN_BUDGET ))}"
if ! [[ "$budget" =~ ^[0-9]+$ ]] || (( budget < 60 )); then
  echo "run.sh: GPU_CHECK_BUDGET_S=$budget: expected whole seconds, at least 60" >&2
  exit 2
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/gcnet_mm_gpu_check.XXXXXX")"
site="$work/site"
stages="$work/stages.tsv"
mkdir -p "$work/logs" "$work/running" "$site" "$work/lite"
: > "$stages"
printf '%s\n' "${PLAN[@]}" > "$work/plan.txt"
deadline=$((SECONDS + budget))
jobs="$(nproc)"
dry_flag=()
(( dry )) && dry_flag=(--dry-run)
# gcnet_mm's C++ loops: optional on a GPU machine (built if they compile);
# the dry run skips them unless GCNET_MM_WITH_EXT is set.  env_check reads
# the same variable.
if (( dry )); then
  export GCNET_MM_WITH_EXT="${GCNET_MM_WITH_EXT-0}"
fi
export GPU_CHECK_WHEELS="$wheels" GPU_CHECK_WORK="$work" GPU_CHECK_DRY="$dry" \
  GPU_CHECK_JOBS="$jobs" GPU_CHECK_PYTHON="$PY"
# The interpreter's own scripts (ninja, which the builds need to compile in
# parallel) on the PATH.
PATH="$(dirname "$(command -v "$PY")"):$PATH"
ninja_bin="$("$PY" -c 'import ninja, os; print(ninja.BIN_DIR)' 2>/dev/null)" \
  && PATH="$ninja_bin:$PATH"
export PATH

exec > >(tee "$out_dir/run.log") 2>&1
tee_pid=$!
trap stopped TERM INT
main
finish "$?"
