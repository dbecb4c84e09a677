#!/usr/bin/env bash
# Forward and forward-backward times of the reference nets with `caffe-rs time`, as a table.
#   scripts/bench.sh            CPU mode
#   scripts/bench.sh -gpu 0     GPU mode (lavapipe without a GPU: slow, use ITERATIONS=2)
# ITERATIONS (default 10) sets the timed iterations. The machine should be idle: check `uptime`.
# The forward column times the deploy net. The fwd+bwd column times a training iteration: the same
# net with a SoftmaxWithLoss on its classifier (and a label Input), so gradients flow into every
# blob as in training; a deploy net alone has no loss and Caffe computes only parameter gradients.
set -euo pipefail
cd "$(dirname "$0")/.."
models=../shared/caffe_models
iterations=${ITERATIONS:-10}
cargo build --release --quiet
# name|deploy prototxt|classifier blob|batch
nets=(
  "LeNet b64|$models/examples/mnist/lenet.prototxt|ip2|64"
  "CaffeNet b10|$models/models/bvlc_reference_caffenet/deploy.prototxt|fc8|10"
  "GoogLeNet b10|$models/models/bvlc_googlenet/deploy.prototxt|loss3/classifier|10"
  "ResNet-50-1by2 b10|fixtures/bench/resnet50_1by2_deploy.prototxt|fc_nsfw|10"
)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
average() { grep -o "Average $1: [0-9.]*" | grep -o '[0-9.]*$'; }
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)   mode: ${*:-CPU}   iterations: $iterations"
printf '%-20s %12s %12s\n' net "forward ms" "fwd+bwd ms"
for entry in "${nets[@]}"; do
  IFS='|' read -r name model classifier batch <<<"$entry"
  if [[ ! -f $model ]]; then
    printf '%-20s %s\n' "$name" "(missing $model)"
    continue
  fi
  train=$work/train.prototxt
  {
    cat "$model"
    echo "layer { name: \"bench_label\" type: \"Input\" top: \"bench_label\" input_param { shape { dim: $batch } } }"
    echo "layer { name: \"bench_loss\" type: \"SoftmaxWithLoss\" bottom: \"$classifier\" bottom: \"bench_label\" top: \"bench_loss\" }"
  } >"$train"
  fwd=$(target/release/caffe-rs time -model "$model" -iterations "$iterations" "$@" 2>&1 | average 'Forward pass')
  both=$(target/release/caffe-rs time -model "$train" -iterations "$iterations" "$@" 2>&1 | average 'Forward-Backward')
  printf '%-20s %12s %12s\n' "$name" "$fwd" "$both"
done
