#!/usr/bin/env bash
# The main job on a small built-in example, CPU friendly:
#   set up .venv, write a toy COCO-format dataset (128 training and 16 test
#   images of coloured shapes), train the package's GC Mask R-CNN scaled down
#   to it (configs/_toy_/mask-rcnn_r50-gcb-r16-c3-c5_fpn_toy-coco.py: a
#   quarter of the channels, 150 iterations) from random weights, evaluate it
#   with the COCO metric, and draw WORK_DIR/gc_attention.png: the training
#   loss, the predictions on a test image and the attention map of its last
#   GC block in c4 before and after training, on one colour scale.
#
#   bash tools/run_demo.sh [WORK_DIR]      (default work_dirs/demo)
#
# Environment variables:
#   GCNET_MM_SETUP=0   skip the set-up: use the python on PATH (an environment
#                      of your own with gcnet_mm installed) instead of .venv/
#   OMP_NUM_THREADS    threads per process (default 1: on 2 idle cores a
#                      second thread makes the demo's small layers about 1.2x
#                      faster, and many times slower when the other core is
#                      busy, its threads waiting for each other)
#
# A checkpoint that an earlier demo left in WORK_DIR is removed: the demo
# keeps one, that of its own run.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
if [[ "${GCNET_MM_SETUP:-1}" != 0 ]]; then
  bash tools/setup_env.sh
  py=.venv/bin/python
else
  py="$(command -v python3 || command -v python)"
fi
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
work_dir="${1:-work_dirs/demo}"
config=configs/_toy_/mask-rcnn_r50-gcb-r16-c3-c5_fpn_toy-coco.py
rm -f "$work_dir"/*.pth "$work_dir"/last_checkpoint
"$py" tools/misc/make_toy_data.py coco data/toy_coco --num-train 128 \
  --num-val 16 --image-size 128 128
# cpu_now: sets $cpu to the CPU seconds (user + system) of this script's
# finished child processes (bash's `times`, run in this shell).
times_file="$(mktemp)"; trap 'rm -f "$times_file"' EXIT
cpu_now() {
  times > "$times_file"
  cpu=$(awk 'NR == 2 { t = 0; for (i = 1; i <= 2; i++) {
    split($i, p, "m"); t += p[1] * 60 + p[2] } printf "%.0f", t }' "$times_file")
}
start=$(date +%s); cpu_now; cpu_start=$cpu
"$py" tools/train.py "$config" --work-dir "$work_dir"
ckpt="$(cat "$work_dir/last_checkpoint")"
"$py" tools/test.py "$config" "$ckpt" --work-dir "$work_dir"
seconds=$(( $(date +%s) - start )); cpu_now; cpu=$(( cpu - cpu_start ))
"$py" tools/analysis/show_gc_attention.py "$config" "$ckpt" \
  --work-dir "$work_dir" --out "$work_dir/gc_attention.png"
metrics="$(ls -t "$work_dir"/metrics_*.json | head -n1)"
map50="$("$py" -c 'import json, sys
m = json.load(open(sys.argv[1]))["metrics"]
print("{:.3f} (bbox mAP {:.3f}, mask mAP {:.3f})".format(
    m["coco/bbox_mAP_50"], m["coco/bbox_mAP"], m["coco/segm_mAP"]))' "$metrics")"
read -r load1 load5 load15 _ < /proc/loadavg
echo "[demo] $config: trained from random weights and tested in $seconds s"
echo "[demo]  (CPU time ${cpu} s; $(getconf _NPROCESSORS_ONLN) cores, OMP_NUM_THREADS=$OMP_NUM_THREADS, load average $load1 $load5 $load15)"
echo "[demo] test set: bbox mAP_50 $map50"
echo "[demo] checkpoint: $ckpt; metrics: $metrics"
echo "[demo] look at $work_dir/gc_attention.png: the loss of each iteration, the"
echo "[demo]  predictions on a test image over its ground truth, and where the last"
echo "[demo]  GC block of c4 takes its context from (softmax of conv_mask over"
echo "[demo]  positions), at initialisation and after training, on one scale"
