#!/usr/bin/env bash
# Collect everything the GPU check installs into one folder, on a machine
# that reaches a package registry, so that the GPU machine needs none:
#
#   bash tools/gpu_check/prepare.sh WHEELS_DIR [--python-version X.Y]
#
# - wheels of mmengine, mmdet, mmsegmentation and mmpretrain (the versions of
#   requirements/runtime.txt) and of the dependencies such a machine lacks
#   (tools/gpu_check/wheels.txt), for CPython X.Y (default 3.12) on
#   manylinux x86_64, without their own dependencies;
# - the source distribution of mmcv (requirements/mmcv.txt), built there.
#
# Needs a registry (pip's configured index).  Fetching mmcv's source runs its
# setup.py, which imports torch: PYTHON (default .venv/bin/python, else
# python3) must have torch and setuptools < 81.  WHEELS_DIR is emptied of
# earlier wheels and sources first, so it holds one version of each.  Inside
# the repository it must be git-ignored (.gpu_wheels/ is).
set -euo pipefail

usage() { echo "usage: prepare.sh WHEELS_DIR [--python-version X.Y]" >&2; exit 2; }
die() { printf '[prepare] ERROR: %s\n' "$*" >&2; exit 1; }
log() { printf '[prepare] %s\n' "$*" >&2; }

dir=""
pyver=3.12
while [[ $# -gt 0 ]]; do
  case "$1" in
    --python-version) [[ $# -ge 2 ]] || usage; pyver="$2"; shift 2 ;;
    -h|--help) usage ;;
    -*) echo "prepare.sh: unknown option $1" >&2; usage ;;
    *) [[ -z "$dir" ]] || usage; dir="$1"; shift ;;
  esac
done
[[ -n "$dir" ]] || usage
[[ "$pyver" =~ ^3\.[0-9]+$ ]] || die "--python-version $pyver: expected 3.N, e.g. 3.12"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
  PYTHON=python3
  [[ -x "$root/.venv/bin/python" ]] && PYTHON="$root/.venv/bin/python"
fi

dir="$(realpath -m "$dir")"
if git -C "$root" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  case "$dir/" in
    "$root"/*)
      git -C "$root" check-ignore -q "$dir/" \
        || die "$dir is inside the repository but not git-ignored; add it to .gitignore (e.g. .gpu_wheels/)" ;;
  esac
fi
mkdir -p "$dir" || die "cannot create $dir"
shopt -s nullglob
old=("$dir"/*.whl "$dir"/*.tar.gz)
if (( ${#old[@]} )); then
  log "removing ${#old[@]} earlier file(s) from $dir"
  rm -f -- "${old[@]}"
fi

# The hosts' pins, one source of truth with the project's own requirements.
hosts=()
while read -r line; do hosts+=("$line"); done \
  < <(grep -E '^(mmengine|mmdet|mmsegmentation|mmpretrain)==' "$root/requirements/runtime.txt")
(( ${#hosts[@]} == 4 )) || die "expected the 4 OpenMMLab pins in requirements/runtime.txt, found: ${hosts[*]:-none}"
mmcv_req="$(grep -E '^mmcv==' "$root/requirements/mmcv.txt" | head -n1 || true)"
[[ -n "$mmcv_req" ]] || die "no mmcv==VERSION line in requirements/mmcv.txt"

log "wheels for CPython $pyver, manylinux x86_64: ${hosts[*]} + tools/gpu_check/wheels.txt"
platforms=()
for p in manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do
  platforms+=(--platform "${p}_x86_64")
done
"$PYTHON" -m pip download --disable-pip-version-check -q --no-deps \
  --only-binary=:all: --python-version "$pyver" --implementation cp \
  "${platforms[@]}" -d "$dir" "${hosts[@]}" -r "$here/wheels.txt" \
  || die "pip could not download the wheels (see above)"

log "source of $mmcv_req"
# Its setup.py runs for the metadata (no compiling); without a GPU in view it
# does not look for CUDA.
CUDA_VISIBLE_DEVICES="" "$PYTHON" -m pip download --disable-pip-version-check -q \
  --no-deps --no-binary=:all: --no-build-isolation -d "$dir" "$mmcv_req" \
  || die "pip could not download the $mmcv_req source (PYTHON=$PYTHON needs torch and setuptools < 81)"

# One version of each distribution.
dupes="$(for f in "$dir"/*.whl "$dir"/*.tar.gz; do
  b="$(basename "$f")"; n="${b%%-[0-9]*}"; echo "${n,,}" | tr '_.' '--'
done | sort | uniq -d)"
[[ -z "$dupes" ]] || die "more than one version of: $dupes"

files=("$dir"/*)
bytes="$(du -cb "${files[@]}" 2>/dev/null | tail -n1 | cut -f1)"
printf '[prepare] %s: %d files, %s MiB\n' "$dir" "${#files[@]}" \
  "$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1048576 }')" >&2
log "ready: copy $dir to the GPU machine with the checkout, then run tools/gpu_check/run.sh there (docs/gpu_check.md)"
