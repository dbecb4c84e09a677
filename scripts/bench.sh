#!/usr/bin/env bash
# Forward and forward-backward times of the reference nets with `caffe-rs time`, as a table.
#   scripts/bench.sh            CPU mode
#   scripts/bench.sh -gpu 0     GPU mode (lavapipe without a GPU: slow, use ITERATIONS=2)
# ITERATIONS (default 10) sets the timed iterations. The machine should be idle: check `uptime`.
set -euo pipefail
cd "$(dirname "$0")/.."
models=../shared/caffe_models
iterations=${ITERATIONS:-10}
cargo build --release --quiet
nets=(
  "LeNet b64|$models/examples/mnist/lenet.prototxt"
  "CaffeNet b10|$models/models/bvlc_reference_caffenet/deploy.prototxt"
  "GoogLeNet b10|$models/models/bvlc_googlenet/deploy.prototxt"
  "ResNet-50-1by2 b10|fixtures/bench/resnet50_1by2_deploy.prototxt"
)
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)   mode: ${*:-CPU}   iterations: $iterations"
printf '%-20s %12s %12s\n' net "forward ms" "fwd+bwd ms"
for entry in "${nets[@]}"; do
  name=${entry%%|*}
  model=${entry#*|}
  if [[ ! -f $model ]]; then
    printf '%-20s %s\n' "$name" "(missing $model)"
    continue
  fi
  log=$(target/release/caffe-rs time -model "$model" -iterations "$iterations" "$@" 2>&1)
  fwd=$(grep -o 'Average Forward pass: [0-9.]*' <<<"$log" | grep -o '[0-9.]*$')
  both=$(grep -o 'Average Forward-Backward: [0-9.]*' <<<"$log" | grep -o '[0-9.]*$')
  printf '%-20s %12s %12s\n' "$name" "$fwd" "$both"
done
