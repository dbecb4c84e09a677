#!/usr/bin/env bash
# CPU forward times of the reference nets in caffe-rs and in onnxruntime (and with PYTORCH=1 in
# PyTorch) on the same machine, with the same threads (the nproc cores), run in turns, as a table.
# caffe-rs is timed twice: `time`'s training-phase forward (Caffe's figure: in-place Scale layers
# also keep their inputs for the backward) and `time -forward_only` (inference, as the others);
# the ratios are the latter's. Each figure is the mean of
# ITERATIONS forwards (as `caffe time` reports it), the best of three runs (the machine's
# neighbours come and go). The nets are converted by
# scripts/prototxt_to_onnx.py and scripts/prototxt_to_torch.py (random weights; onnxruntime folds
# BatchNorm into the convolutions; PyTorch runs channels-last in inference mode). onnxruntime
# (and PyTorch, a download of about 3.5 GB with its CUDA libraries) come from PyPI into
# target/onnxruntime-venv and target/pytorch-venv on the first run.
#   scripts/bench_frameworks.sh      ITERATIONS (default 20) sets the timed forwards per run.
set -euo pipefail
cd "$(dirname "$0")/.."
models=../shared/caffe_models
iterations=${ITERATIONS:-20}
venv=target/onnxruntime-venv
if [[ ! -x $venv/bin/python ]] || ! "$venv/bin/python" -c 'import onnxruntime, onnx' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet onnxruntime onnx numpy
fi
torch_venv=target/pytorch-venv
if [[ ${PYTORCH:-0} == 1 ]] && ! "$torch_venv/bin/python" -c 'import torch' 2>/dev/null; then
  python3 -m venv "$torch_venv"
  "$torch_venv/bin/pip" install --quiet torch numpy
fi
cargo build --release --quiet
nets=(
  "LeNet b64|$models/examples/mnist/lenet.prototxt"
  "CaffeNet b10|$models/models/bvlc_reference_caffenet/deploy.prototxt"
  "GoogLeNet b10|$models/models/bvlc_googlenet/deploy.prototxt"
  "ResNet-50-1by2 b10|fixtures/bench/resnet50_1by2_deploy.prototxt"
)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ort_mean() {
  "$venv/bin/python" - "$1" "$iterations" <<'EOF'
import os, sys, time
import numpy as np
import onnxruntime as ort
options = ort.SessionOptions()
options.intra_op_num_threads = os.cpu_count()
options.inter_op_num_threads = 1
session = ort.InferenceSession(sys.argv[1], options, providers=["CPUExecutionProvider"])
feed = {i.name: np.random.rand(*i.shape).astype(np.float32) for i in session.get_inputs()}
for _ in range(3):
    session.run(None, feed)
times = []
for _ in range(int(sys.argv[2])):
    start = time.perf_counter()
    session.run(None, feed)
    times.append((time.perf_counter() - start) * 1e3)
print(f"{sum(times) / len(times):.1f}")
EOF
}
best() { printf '%s\n' "$@" | sort -g | head -1; }
# `caffe-rs time`'s average forward pass of a net (more flags after it).
caffe_rs_forward() {
  target/release/caffe-rs time -model "$1" -iterations "$iterations" "${@:2}" 2>&1 |
    grep -o 'Average Forward pass: [0-9.]*' | grep -o '[0-9.]*$'
}
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)   threads: $(nproc)   forwards per run: $iterations, best of 3 runs"
printf '%-20s %10s %13s %15s %6s' net "time ms" "inference ms" "onnxruntime ms" ratio
[[ ${PYTORCH:-0} == 1 ]] && printf ' %11s %6s' "PyTorch ms" ratio
echo
for entry in "${nets[@]}"; do
  IFS='|' read -r name model <<<"$entry"
  if [[ ! -f $model ]]; then
    printf '%-20s %s\n' "$name" "(missing $model)"
    continue
  fi
  "$venv/bin/python" scripts/prototxt_to_onnx.py "$model" "$work/net.onnx"
  training=()
  ours=()
  theirs=()
  torch=()
  for _ in 1 2 3; do
    training+=("$(caffe_rs_forward "$model")")
    ours+=("$(caffe_rs_forward "$model" -forward_only)")
    theirs+=("$(ort_mean "$work/net.onnx")")
    if [[ ${PYTORCH:-0} == 1 ]]; then
      torch+=("$("$torch_venv/bin/python" scripts/prototxt_to_torch.py "$model" "$iterations")")
    fi
  done
  ours_ms=$(best "${ours[@]}")
  ort_ms=$(best "${theirs[@]}")
  printf '%-20s %10.1f %13.1f %15.1f %6.2f' "$name" "$(best "${training[@]}")" "$ours_ms" \
    "$ort_ms" "$(echo "$ours_ms / $ort_ms" | bc -l)"
  if [[ ${PYTORCH:-0} == 1 ]]; then
    torch_ms=$(best "${torch[@]}")
    printf ' %11.1f %6.2f' "$torch_ms" "$(echo "$ours_ms / $torch_ms" | bc -l)"
  fi
  echo
done
