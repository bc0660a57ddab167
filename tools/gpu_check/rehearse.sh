#!/usr/bin/env bash
# The GPU check rehearsed offline on a machine without a GPU, on the
# software stack of the GPU machine it is prepared for:
#
#   bash tools/gpu_check/rehearse.sh DIR [STEP...]
#
# DIR (outside the repository) keeps the downloads, the virtual environment
# and the results between runs.  STEP (download, prepare, venv, dry_run,
# triton_tests; default: all five, in this order) runs those steps alone, on
# what earlier runs left in DIR: e.g. `rehearse.sh DIR triton_tests` after a
# fix to the tests.  With a registry:
#   1. downloads, for CPython 3.12 on manylinux x86_64, the GPU machine's
#      stack (STACK below: torch 2.11.0 with its CUDA 13 libraries, about
#      3 GB, Triton 3.6.0, torchvision 0.26.0, timm, ninja, numpy,
#      opencv-python-headless) into DIR/stack, and what the Triton tests add
#      (TEST_EXTRAS: pytest, an interpreter-friendly numpy) into DIR/test;
#   2. runs tools/gpu_check/prepare.sh DIR/gpu_wheels.
# Then, in a network namespace with no network at all (`unshare -rn`, its
# loopback up, as on a GPU machine without network access):
#   3. builds DIR/venv with PYTHON312 (default: python3.12 on the PATH,
#      else pyenv's 3.12.x) from DIR/stack
#      only;
#   4. runs tools/gpu_check/run.sh DIR/gpu_wheels DIR/out --dry-run with
#      that interpreter: the wheels installed offline, mmcv built with its
#      CPU ops from source and gcnet_mm's C++ loops as optional, as on the
#      GPU machine (nothing of this machine's own environment is reused);
#   5. runs the Triton kernels' tests with Triton 3.6.0
#      (tests/test_triton_kernels.py, slow ones included: the kernels
#      compiled for sm_80 and sm_90; and the Triton cases of
#      tests/test_global_context_op.py in Triton's interpreter) against the
#      packages run.sh installed, with an empty Triton cache.
#
# numpy and Triton 3.6.0's interpreter: with numpy 2.4 or later the
# interpreter fails at any `for c in range(0, C, BLOCK)` over a runtime C
# ("only 0-dimensional arrays can be converted to Python scalars"); Triton
# 3.7 runs it.  Only the interpreter is affected (on a GPU, Triton compiles),
# so run.sh runs with the GPU machine's own numpy, and step 5 puts numpy
# INTERPRETER_NUMPY first on PYTHONPATH; the kernels' compilation in step 5
# runs under the same numpy, which it does not use.  Step 5 first reports
# whether the machine's numpy itself works with the interpreter.
#
# Too big for CI (3 GB; on 2 cores, an hour or more, most of it mmcv's
# build).  Each step's outcome and wall time go to DIR/steps/ (the latest
# run of each step) and DIR/rehearsal.md (all five); the log of each run to
# DIR/rehearsal.log (a run of all the steps starts it afresh, a run of some
# adds to it).
# run.sh's budget is GPU_CHECK_BUDGET_S (default 7200 here).  Exit status: 0
# when run.sh and the tests passed.
# The steps run through step() and offline() (shellcheck cannot see it).
# shellcheck disable=SC2317
set -uo pipefail

STACK=(torch==2.11.0 triton==3.6.0 torchvision==0.26.0 timm ninja numpy
       opencv-python-headless)
INTERPRETER_NUMPY=2.3.5
TEST_EXTRAS=(pytest pytest-timeout "numpy==$INTERPRETER_NUMPY")

STEPS=(download prepare venv dry_run triton_tests)

usage() { echo "usage: rehearse.sh DIR [STEP...] (STEP: ${STEPS[*]})" >&2; exit 2; }
die() { printf '[rehearse] ERROR: %s\n' "$*" >&2; exit 1; }
log() { printf '[rehearse %5ds] %s\n' "$SECONDS" "$*"; }

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
py312="${PYTHON312:-}"  # found below when unset

step() {  # step NAME CMD...: run, time and record, if its step is chosen
  local name="$1" key t0 rc dt; shift
  key="$1"
  [[ "$key" == offline ]] && key="$2"
  [[ " ${chosen[*]} " == *" $key "* ]] || return 0
  log "== $name"
  t0=$SECONDS
  "$@" 2>&1 | tee "$dir/steps/$key.log"
  rc=${PIPESTATUS[0]}
  dt=$((SECONDS - t0))
  log "== $name: exit $rc in ${dt} s"
  printf '| %s | %s | %s | %s |\n' "$name" "$dt" "$rc" \
    "$(date -u '+%Y-%m-%d %H:%M UTC')" > "$dir/steps/$key.row"
  return "$rc"
}

download() {
  mkdir -p "$dir/stack" "$dir/test"
  local pip=("$py312" -m pip --disable-pip-version-check download -q)
  "${pip[@]}" -d "$dir/stack" "${STACK[@]}" || return 1
  "${pip[@]}" -d "$dir/test" "${TEST_EXTRAS[@]}" || return 1
}

prepare() {
  bash "$here/prepare.sh" "$dir/gpu_wheels" --python-version 3.12
}

# What runs in the namespace without network: this script again.
offline() { unshare -rn bash "${BASH_SOURCE[0]}" __offline "$dir" "$@"; }

venv() {
  rm -rf "$dir/venv"
  "$py312" -m venv "$dir/venv" || return 1
  "$dir/venv/bin/python" -m pip --disable-pip-version-check install -q \
    --no-index --find-links "$dir/stack" "${STACK[@]}" || return 1
  "$dir/venv/bin/python" -m pip --disable-pip-version-check list 2>/dev/null \
    | grep -Ei '^(torch|triton|torchvision|timm|numpy|ninja|opencv)' \
    | tr -s ' ' | paste -sd ';' -
}

dry_run() {
  rm -rf "$dir/out" "$dir/tmp"
  mkdir -p "$dir/tmp"
  # Compiling goes through ccache where it is installed: the same compiler
  # and flags, and a second rehearsal recompiles nothing.
  if [[ -d /usr/lib/ccache ]]; then
    export PATH="/usr/lib/ccache:$PATH" CCACHE_DIR="$dir/ccache" \
      CCACHE_BASEDIR="$dir/tmp" CCACHE_NOHASHDIR=1
  fi
  # The GPU machine's path: mmcv from source, gcnet_mm's loops optional.
  # mmcv's CPU ops take most of the time: on 2 busy cores, up to an hour.
  TMPDIR="$dir/tmp" PYTHON="$dir/venv/bin/python" GPU_CHECK_KEEP=1 \
    GPU_CHECK_BUDGET_S="${GPU_CHECK_BUDGET_S:-7200}" GCNET_MM_WITH_EXT="" \
    PYTHONUNBUFFERED=1 bash "$here/run.sh" "$dir/gpu_wheels" "$dir/out" \
    --dry-run
}

triton_tests() {
  local work overlay
  local kept=("$dir"/tmp/gcnet_mm_gpu_check.*)
  work="${kept[0]}"
  [[ -d "$work/site" ]] || { echo "no kept work folder of run.sh in $dir/tmp" >&2; return 1; }
  overlay="$dir/test-site"
  rm -rf "$overlay"
  "$dir/venv/bin/python" -m pip --disable-pip-version-check install -q \
    --no-index --find-links "$dir/test" --target "$overlay" \
    "${TEST_EXTRAS[@]}" || return 1
  # A cache of its own, emptied: every kernel variant compiles here.
  export TRITON_CACHE_DIR="$dir/triton-cache"
  rm -rf "$TRITON_CACHE_DIR"
  cd "$root" || return 1
  echo "The machine's numpy with Triton's interpreter:"
  PYTHONPATH="$root:$work/site" TRITON_INTERPRET=1 "$dir/venv/bin/python" - <<'EOF'
import numpy
import torch
import triton
import triton.language as tl


@triton.jit
def total(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for i in range(0, n, BLOCK):
        offs = i + tl.arange(0, BLOCK)
        acc += tl.load(x_ptr + offs, mask=offs < n, other=0.)
    tl.store(out_ptr, tl.sum(acc, axis=0))


x, out = torch.ones(40), torch.zeros(1)
try:
    total[(1, )](x, out, 40, BLOCK=16)
    print(f'  numpy {numpy.__version__}, triton {triton.__version__}: runs')
except Exception as e:
    print(f'  numpy {numpy.__version__}, triton {triton.__version__}: '
          f'{type(e).__name__}: {e}')
EOF
  echo "The tests, with numpy $INTERPRETER_NUMPY first on PYTHONPATH:"
  PYTHONPATH="$root:$overlay:$work/site" "$dir/venv/bin/python" -m pytest \
    -q -rs -p no:cacheprovider tests/test_triton_kernels.py \
    tests/test_global_context_op.py -k triton -W ignore::DeprecationWarning
}

if [[ "${1:-}" == __offline ]]; then  # offline(): one step, no network
  dir="$2"
  ip link set lo up 2>/dev/null || true  # a machine's own loopback
  "${@:3}"
  exit
fi

[[ $# -ge 1 && "$1" != -* ]] || usage
dir="$(realpath -m "$1")"
chosen=("${@:2}")
for s in "${chosen[@]}"; do
  [[ " ${STEPS[*]} " == *" $s "* ]] || { echo "rehearse.sh: unknown step $s" >&2; usage; }
done
(( ${#chosen[@]} )) || chosen=("${STEPS[@]}")
case "$dir/" in
  "$root"/*) die "$dir is inside the repository; give a folder outside it" ;;
esac
mkdir -p "$dir" || die "cannot create $dir"
if [[ -z "$py312" ]]; then  # python3.12 on the PATH, else pyenv's 3.12.x
  for c in python3.12 "$(pyenv root 2>/dev/null)"/versions/3.12*/bin/python3.12; do
    if "$c" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null; then
      py312="$c"
      break
    fi
  done
  [[ -n "$py312" ]] || die "no CPython 3.12 (python3.12 on the PATH or pyenv's 3.12.x); set PYTHON312"
fi
command -v "$py312" >/dev/null || die "no $py312 (set PYTHON312 to a CPython 3.12)"
[[ "$("$py312" -c 'import sys; print(*sys.version_info[:2], sep=".")')" == 3.12 ]] \
  || die "$py312 is not CPython 3.12"
export PYTHON312="$py312"  # for the offline steps
command -v unshare >/dev/null || die "unshare (util-linux) is needed"
unshare -rn true 2>/dev/null || die "unshare -rn is refused here (user namespaces)"
summary="$dir/rehearsal.md"
tee_log=(tee -a "$dir/rehearsal.log")
if (( ${#chosen[@]} == ${#STEPS[@]} )); then  # all of them: afresh
  rm -rf "$dir/steps"
  tee_log=(tee "$dir/rehearsal.log")
fi
mkdir -p "$dir/steps"

{
  log "rehearsal of the GPU check in $dir ($(date -u '+%Y-%m-%d %H:%M UTC'), steps: ${chosen[*]}), offline steps in a network namespace (unshare -rn)"
  step "download the GPU machine's stack (registry)" download || die "download failed"
  step "prepare.sh (registry)" prepare || die "prepare.sh failed"
  step "venv: Python 3.12 + the stack, offline" offline venv || die "the venv did not build"
  step "run.sh --dry-run, offline" offline dry_run
  dry_rc=$?
  step "Triton tests with triton 3.6, offline" offline triton_tests
  tests_rc=$?
  exit $(( dry_rc || tests_rc ))
} 2>&1 | "${tee_log[@]}"
rc=${PIPESTATUS[0]}

{
  echo "# Rehearsal of the GPU check"
  echo
  echo "Stack: ${STACK[*]} (CPython 3.12, $("$py312" -c 'import platform; print(platform.python_version())')); offline steps in \`unshare -rn\`."
  echo
  echo "The latest run of each step:"
  echo
  echo "| step | seconds | exit | run |"
  echo "|---|---|---|---|"
  total=0
  for s in "${STEPS[@]}"; do
    if [[ -f "$dir/steps/$s.row" ]]; then
      cat "$dir/steps/$s.row"
      total=$(( total + $(cut -d'|' -f3 "$dir/steps/$s.row") ))
    else
      echo "| $s | - | - | not run |"
    fi
  done
  echo
  echo "Steps' total: ${total} s; this run (${chosen[*]}): ${SECONDS} s."
  echo
  echo "## run.sh's report: what did not run"
  echo
  sed -n '/^## What did not run, and why/,/^## Targets/p' "$dir/out/report.md" 2>/dev/null \
    | grep -v '^## ' || printf '(no report)\n\n'
  echo "## Triton tests"
  echo
  grep -E '^  numpy |^(FAILED|ERROR|SKIPPED) |^[0-9]+ (passed|failed|errors?|skipped|deselected)\b' \
    "$dir/steps/triton_tests.log" 2>/dev/null || echo "(not run)"
} > "$summary"
cat "$summary"
exit "$rc"
