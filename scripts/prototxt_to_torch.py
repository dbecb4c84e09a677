#!/usr/bin/env python3
"""Times the forward of a Caffe deploy prototxt in PyTorch on the CPU (random weights, channels
last, inference mode, BatchNorm + Scale as one BatchNorm2d), for scripts/bench_frameworks.sh:

    prototxt_to_torch.py deploy.prototxt ITERATIONS    -> prints the mean ms
"""
import os
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from caffe_prototxt import one, pair, parse  # noqa: E402


class Net(nn.Module):
    """The layers in order; each step reads and writes blobs by name."""

    def __init__(self, net):
        super().__init__()
        self.steps, self.inputs = [], []
        self.mods = nn.ModuleList()
        channels = {}
        layers = net.get("layer", [])
        skip = set()
        for n, layer in enumerate(layers):
            kind, name = one(layer, "type"), one(layer, "name")
            bottoms, tops = layer.get("bottom", []), layer.get("top", [])
            mod = None
            if kind == "Input":
                for top, shape in zip(tops, one(layer, "input_param")["shape"]):
                    self.inputs.append((top, shape["dim"]))
                    channels[top] = shape["dim"][1]
                continue
            if kind == "Convolution":
                p = one(layer, "convolution_param")
                co = one(p, "num_output")
                mod = nn.Conv2d(channels[bottoms[0]], co, pair(p, "kernel", 1),
                                pair(p, "stride", 1), pair(p, "pad", 0),
                                dilation=one(p, "dilation", 1), groups=one(p, "group", 1),
                                bias=one(p, "bias_term", "true") not in (False, "false"))
                channels[tops[0]] = co
            elif kind == "BatchNorm":
                if n + 1 < len(layers) and one(layers[n + 1], "type") == "Scale":
                    skip.add(n + 1)
                mod = nn.BatchNorm2d(channels[bottoms[0]])
            elif kind == "Scale" and n in skip:
                continue
            elif kind == "ReLU":
                mod = nn.ReLU(inplace=False)
            elif kind == "Pooling":
                p = one(layer, "pooling_param")
                if one(p, "global_pooling") in (True, "true"):
                    mod = nn.AdaptiveAvgPool2d(1)
                else:
                    pool = nn.MaxPool2d if one(p, "pool", "MAX") == "MAX" else nn.AvgPool2d
                    mod = pool(pair(p, "kernel", 1), pair(p, "stride", 1), pair(p, "pad", 0),
                               ceil_mode=True)
            elif kind == "LRN":
                p = one(layer, "lrn_param", {})
                mod = nn.LocalResponseNorm(one(p, "local_size", 5), float(one(p, "alpha", 1.0)),
                                           float(one(p, "beta", 0.75)), float(one(p, "k", 1.0)))
            elif kind == "InnerProduct":
                mod = "linear"
            elif kind in ("Concat", "Eltwise", "Softmax", "Dropout"):
                mod = kind
            else:
                sys.exit(f"prototxt_to_torch: layer '{name}' of type {kind} is not converted")
            if kind in ("Concat",):
                channels[tops[0]] = sum(channels[b] for b in bottoms)
            elif kind != "Convolution":
                channels[tops[0]] = channels.get(bottoms[0])
            self.steps.append((mod, bottoms, tops, layer))

    def build_linear(self, feed):
        """InnerProduct layers need their input sizes: one forward with placeholders."""
        with torch.inference_mode():
            self.forward(feed, build=True)

    def forward(self, feed, build=False):
        blobs = dict(feed)
        for i, (mod, bottoms, tops, layer) in enumerate(self.steps):
            x = [blobs[b] for b in bottoms]
            if mod == "linear":
                if build:
                    co = one(one(layer, "inner_product_param"), "num_output")
                    linear = nn.Linear(x[0][0].numel(), co)
                    self.steps[i] = (linear, bottoms, tops, layer)
                    self.mods.append(linear)
                    mod = linear
                else:
                    raise RuntimeError("build_linear first")
                y = mod(torch.flatten(x[0], 1))
            elif isinstance(mod, nn.Linear):
                y = mod(torch.flatten(x[0], 1))
            elif mod == "Concat":
                y = torch.cat(x, 1)
            elif mod == "Eltwise":
                y = x[0]
                for other in x[1:]:
                    y = y + other
            elif mod == "Softmax":
                y = torch.softmax(x[0], 1)
            elif mod == "Dropout":
                y = x[0]
            else:
                if mod not in self.mods:
                    self.mods.append(mod)
                y = mod(x[0])
            blobs[tops[0]] = y
        return blobs


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    torch.set_num_threads(os.cpu_count())
    with open(sys.argv[1]) as f:
        net = Net(parse(f.read()))
    feed = {name: torch.rand(*dims).contiguous(memory_format=torch.channels_last)
            if len(dims) == 4 else torch.rand(*dims) for name, dims in net.inputs}
    net.build_linear(feed)
    net = net.eval().to(memory_format=torch.channels_last)
    times = []
    with torch.inference_mode():
        for _ in range(3):
            net(feed)
        for _ in range(int(sys.argv[2])):
            start = time.perf_counter()
            net(feed)
            times.append((time.perf_counter() - start) * 1e3)
    print(f"{sum(times) / len(times):.1f}")


if __name__ == "__main__":
    main()
