#!/usr/bin/env bash
# CPU forward times of the reference nets in caffe-rs (`caffe-rs time`'s average forward pass)
# and in onnxruntime on the same machine, with the same threads (the nproc cores), run in turns,
# as a table with their ratio. The nets are converted by scripts/prototxt_to_onnx.py (random
# weights; onnxruntime folds BatchNorm into the convolutions). onnxruntime comes from PyPI into
# target/onnxruntime-venv on the first run.
#   scripts/bench_onnxruntime.sh      ITERATIONS (default 20) sets the timed forwards per run.
set -euo pipefail
cd "$(dirname "$0")/.."
models=../shared/caffe_models
iterations=${ITERATIONS:-20}
venv=target/onnxruntime-venv
if [[ ! -x $venv/bin/python ]] || ! "$venv/bin/python" -c 'import onnxruntime, onnx' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet onnxruntime onnx numpy
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
ort_median() {
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
print(f"{sorted(times)[len(times) // 2]:.1f}")
EOF
}
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)   threads: $(nproc)   forwards per run: $iterations"
printf '%-20s %14s %16s %7s\n' net "caffe-rs ms" "onnxruntime ms" ratio
for entry in "${nets[@]}"; do
  IFS='|' read -r name model <<<"$entry"
  if [[ ! -f $model ]]; then
    printf '%-20s %s\n' "$name" "(missing $model)"
    continue
  fi
  "$venv/bin/python" scripts/prototxt_to_onnx.py "$model" "$work/net.onnx"
  ours=$(target/release/caffe-rs time -model "$model" -iterations "$iterations" 2>&1 |
    grep -o 'Average Forward pass: [0-9.]*' | grep -o '[0-9.]*$')
  theirs=$(ort_median "$work/net.onnx")
  printf '%-20s %14.1f %16.1f %7.2f\n' "$name" "$ours" "$theirs" "$(echo "$ours / $theirs" | bc -l)"
done
