#!/usr/bin/env bash
# Create or refresh the project's virtual environment in .venv/ and verify it.
#
#   bash tools/setup_env.sh          # idempotent: seconds when already set up
#
# Environment variables:
#   PYTHON            interpreter to build the venv from (default: python3.11, else python3)
#   GCNET_MM_CACHE    where the mmcv wheel built here is cached
#                     (default: ${XDG_CACHE_HOME:-~/.cache}/gcnet_mm)
#   MMCV_CUDA=0|1     force building mmcv without / with its CUDA ops
#                     (default: with them when torch sees a GPU and nvcc exists)
#   MAX_JOBS          parallel compile jobs for mmcv (default: number of cores)
#   GCNET_MM_WITH_EXT=0  install gcnet_mm without its fused CPU loops (gcnet_mm._ext)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
py="$venv/bin/python"
stamp="$venv/.gcnet_mm-setup"
cache="${GCNET_MM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gcnet_mm}"
log() { printf '[setup_env] %s\n' "$*" >&2; }
die() { printf '[setup_env] ERROR: %s\n' "$*" >&2; exit 1; }

# Everything that decides what gets installed; a change to any of it reinstalls.
fingerprint() {
  cat "$root"/requirements/*.txt "$root/setup.py" "$root/tools/setup_env.sh" \
    "$root"/gcnet_mm/csrc/* | sha256sum | cut -d' ' -f1
}

if [[ -x "$py" && -f "$stamp" && "$(cat "$stamp")" == "$(fingerprint)" ]]; then
  log "environment up to date ($venv); verifying"
  if "$py" -m gcnet_mm.utils.env_check --quick --all-hosts; then exit 0; fi
  log "verification failed; installing again"
fi

# -- interpreter and venv ---------------------------------------------------
if [[ -z "${PYTHON:-}" ]]; then
  PYTHON="$(command -v python3.11 || command -v python3 || true)"
fi
[[ -n "$PYTHON" ]] || die "no python3 found; set PYTHON=/path/to/python3.11"
"$PYTHON" -c 'import sys; sys.exit(not ((3, 10) <= sys.version_info[:2] <= (3, 12)))' \
  || die "$PYTHON is Python $("$PYTHON" -c 'import platform; print(platform.python_version())'); expected 3.10 to 3.12 (torch 2.13 has wheels from 3.10 on; mmcv 2.1 is built and tested up to 3.12)"
if [[ ! -x "$py" ]]; then
  log "creating $venv with $PYTHON"
  "$PYTHON" -m venv "$venv" || die "could not create a venv (on Debian/Ubuntu: apt-get install python3-venv)"
fi
# setuptools < 81 in every install: mmcv 2.1.0's setup.py imports pkg_resources,
# and torch would otherwise pull the newest setuptools in.
constraints="$(mktemp)"; trap 'rm -f "$constraints"' EXIT
echo 'setuptools>=64,<81' > "$constraints"
pip_() {  # pip, minus the noise of unreachable local mirrors in some pip configs
  "$py" -m pip --disable-pip-version-check "$@" -c "$constraints" 2> >(grep -v 'is ignored: it is neither a file' >&2)
}
pip_ install -q "pip>=23" setuptools wheel ninja

# -- torch + torchvision ------------------------------------------------------
log "installing torch + torchvision (requirements/torch.txt)"
pip_ install -q -r "$root/requirements/torch.txt"
"$py" - <<'PY' || die "torch and torchvision do not work together (see above); reinstall them from requirements/torch.txt"
import torch, torchvision
from torchvision.ops import nms
boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.]])
keep = nms(boxes, torch.tensor([0.9, 0.8]), 0.5)
assert keep.tolist() == [0], keep
print(f'[setup_env] torch {torch.__version__}, torchvision {torchvision.__version__}: ops load')
PY

# -- mmcv with compiled ops, built once and cached ------------------------------
read -r torch_ver cuda_ok < <("$py" -c 'import torch; print(torch.__version__.split("+")[0], int(torch.cuda.is_available()))')
if [[ -z "${MMCV_CUDA:-}" ]]; then
  MMCV_CUDA=0
  if [[ "$cuda_ok" == 1 ]] && command -v nvcc >/dev/null; then MMCV_CUDA=1; fi
fi
mmcv_req="$(grep -v '^#' "$root/requirements/mmcv.txt" | head -n1)"
pytag="$("$py" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
flavour="torch${torch_ver}-$([[ "$MMCV_CUDA" == 1 ]] && echo cuda || echo cpu)-${pytag}"
wheel_dir="$cache/wheels/${mmcv_req/==/-}/$flavour"
if ! ls "$wheel_dir"/mmcv-*.whl >/dev/null 2>&1; then
  log "building $mmcv_req with its ops ($flavour) into $wheel_dir; this happens once and takes ~10 min on 2 cores"
  tmp="$(mktemp -d)"
  MMCV_WITH_OPS=1 FORCE_CUDA="$MMCV_CUDA" MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
    pip_ wheel --no-build-isolation --no-deps --no-binary mmcv -w "$tmp" "$mmcv_req" \
    || die "building $mmcv_req failed (see the compiler output above; a C++17 compiler and Python headers are needed)"
  mkdir -p "$wheel_dir" && mv "$tmp"/mmcv-*.whl "$wheel_dir"/ && rm -rf "$tmp"
else
  log "reusing cached $(basename "$(ls "$wheel_dir"/mmcv-*.whl)")"
fi
pip_ install -q --force-reinstall --no-deps "$wheel_dir"/mmcv-*.whl
# mmcv's own dependencies (without letting pip replace the wheel).
pip_ install -q "$(grep '^mmengine' "$root/requirements/runtime.txt")" addict \
  packaging Pillow pyyaml yapf "opencv-python>=4.5"

# -- the OpenMMLab hosts, test tools and this package ----------------------------
log "installing mmengine, mmdet, mmsegmentation, mmpretrain, mmaction2 and test tools"
grep -v '^#' "$root/requirements/torch.txt" >> "$constraints"; echo "$mmcv_req" >> "$constraints"
pip_ install -q -r "$root/requirements/runtime.txt" -r "$root/requirements/tests.txt"
# mmaction2 without its declared dependencies: they are in runtime.txt, all but
# opencv-contrib-python, a second cv2 (docs/mmaction2.md).
pip_ install -q --no-deps -r "$root/requirements/mmaction.txt"
# Builds gcnet_mm._ext, the GC block's fused CPU loops (about 1 min); here a
# failed build is an error (GCNET_MM_WITH_EXT=1), for users it only warns.
log "installing gcnet_mm (building its fused CPU loops)"
GCNET_MM_WITH_EXT="${GCNET_MM_WITH_EXT:-1}" \
  pip_ install -q --no-deps --no-build-isolation -e "$root"

# mmaction2 1.2.0's PyPI wheel lacks a subpackage it imports (docs/mmaction2.md).
"$py" -m gcnet_mm.utils.mmaction_compat || die "could not make mmaction2 importable (see above)"

"$py" -m gcnet_mm.utils.env_check --all-hosts || die "the environment does not work (see above)"
fingerprint > "$stamp"
log "ready: $venv"
