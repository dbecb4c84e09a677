#!/usr/bin/env python3
"""Writes an ONNX model with the layers of a Caffe deploy prototxt and random weights, so that
onnxruntime can be timed on the same net as `caffe-rs time` (scripts/bench_frameworks.sh).

    prototxt_to_onnx.py deploy.prototxt out.onnx

The values are not Caffe's (random weights, ONNX's pooling sizes): this is for timing only.
Layers: Input, Convolution, BatchNorm + Scale (one BatchNormalization), Scale, ReLU, Pooling,
LRN, Concat, Eltwise SUM, InnerProduct, Dropout (dropped, as at test time), Softmax.
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from caffe_prototxt import one, pair, parse  # noqa: E402

def convert(net):
    rng = np.random.default_rng(0)
    nodes, weights, inputs = [], [], []
    tensor = {}  # Caffe blob -> current ONNX tensor
    channels = {}
    layers = net.get("layer", [])
    if "input" in net:  # the old input fields
        dims = one(net, "input_shape", {}).get("dim") or net.get("input_dim")
        layers = [{"type": ["Input"], "top": net["input"], "name": ["input"],
                   "input_param": [{"shape": [{"dim": dims}]}]}] + layers

    def weight(name, values):
        weights.append(numpy_helper.from_array(values.astype(np.float32), name))
        return name

    def output(blob, name):
        tensor[blob] = f"{blob}:{name}"
        return tensor[blob]

    skip_scale = set()
    for n, layer in enumerate(layers):
        kind, name = one(layer, "type"), one(layer, "name")
        bottoms, tops = layer.get("bottom", []), layer.get("top", [])
        x = [tensor[b] for b in bottoms]
        if kind == "Input":
            for top, shape in zip(tops, one(layer, "input_param")["shape"]):
                dims = shape["dim"]
                inputs.append(helper.make_tensor_value_info(top, TensorProto.FLOAT, dims))
                tensor[top], channels[top] = top, dims[1] if len(dims) > 1 else 1
        elif kind == "Convolution":
            p = one(layer, "convolution_param")
            co, group = one(p, "num_output"), one(p, "group", 1)
            k, s, pad = pair(p, "kernel", 1), pair(p, "stride", 1), pair(p, "pad", 0)
            ci = channels[bottoms[0]] // group
            w = weight(f"{name}_w", rng.standard_normal((co, ci, *k)) / np.sqrt(ci * k[0] * k[1]))
            args = [x[0], w]
            if one(p, "bias_term", "true") not in (False, "false"):
                args.append(weight(f"{name}_b", np.zeros(co)))
            nodes.append(helper.make_node("Conv", args, [output(tops[0], name)], kernel_shape=k,
                                          strides=s, pads=pad * 2, group=group,
                                          dilations=[one(p, "dilation", 1)] * 2))
            channels[tops[0]] = co
        elif kind == "BatchNorm":
            # With the Scale after it, one BatchNormalization (as exporters write them).
            c = channels[bottoms[0]]
            if n + 1 < len(layers) and one(layers[n + 1], "type") == "Scale":
                skip_scale.add(n + 1)
            args = [x[0], weight(f"{name}_s", 1 + 0.1 * rng.standard_normal(c)),
                    weight(f"{name}_b", 0.1 * rng.standard_normal(c)),
                    weight(f"{name}_m", 0.1 * rng.standard_normal(c)),
                    weight(f"{name}_v", 1 + 0.1 * rng.random(c))]
            nodes.append(helper.make_node("BatchNormalization", args, [output(tops[0], name)],
                                          epsilon=1e-5))
        elif kind == "Scale":
            if n in skip_scale:
                continue
            c = channels[bottoms[0]]
            scale = weight(f"{name}_s", rng.standard_normal((1, c, 1, 1)))
            y = output(tops[0], name)
            nodes.append(helper.make_node("Mul", [x[0], scale], [y]))
            if one(one(layer, "scale_param", {}), "bias_term") in (True, "true"):
                bias = weight(f"{name}_b", rng.standard_normal((1, c, 1, 1)))
                nodes.append(helper.make_node("Add", [y, bias], [output(tops[0], name + "_bias")]))
        elif kind == "ReLU":
            nodes.append(helper.make_node("Relu", x, [output(tops[0], name)]))
        elif kind == "Pooling":
            p = one(layer, "pooling_param")
            op = "MaxPool" if one(p, "pool", "MAX") == "MAX" else "AveragePool"
            if one(p, "global_pooling") in (True, "true"):
                nodes.append(helper.make_node("Global" + op, x, [output(tops[0], name)]))
            else:
                nodes.append(helper.make_node(op, x, [output(tops[0], name)],
                                              kernel_shape=pair(p, "kernel", 1),
                                              strides=pair(p, "stride", 1),
                                              pads=pair(p, "pad", 0) * 2, ceil_mode=1))
            channels[tops[0]] = channels[bottoms[0]]
        elif kind == "LRN":
            p = one(layer, "lrn_param", {})
            nodes.append(helper.make_node("LRN", x, [output(tops[0], name)],
                                          size=one(p, "local_size", 5),
                                          alpha=float(one(p, "alpha", 1.0)),
                                          beta=float(one(p, "beta", 0.75)),
                                          bias=float(one(p, "k", 1.0))))
            channels[tops[0]] = channels[bottoms[0]]
        elif kind == "Concat":
            nodes.append(helper.make_node("Concat", x, [output(tops[0], name)], axis=1))
            channels[tops[0]] = sum(channels[b] for b in bottoms)
        elif kind == "Eltwise":
            nodes.append(helper.make_node("Sum", x, [output(tops[0], name)]))
            channels[tops[0]] = channels[bottoms[0]]
        elif kind == "InnerProduct":
            p = one(layer, "inner_product_param")
            co = one(p, "num_output")
            flat = output(tops[0], name + "_flat")
            nodes.append(helper.make_node("Flatten", x, [flat]))
            inputs_per_output = int(np.prod(shape_of(nodes, weights, inputs, flat)[1:]))
            w = weight(f"{name}_w", 0.01 * rng.standard_normal((co, inputs_per_output)))
            args = [flat, w, weight(f"{name}_b", np.zeros(co))]
            nodes.append(helper.make_node("Gemm", args, [output(tops[0], name)], transB=1))
            channels[tops[0]] = co
        elif kind == "Dropout":
            tensor[tops[0]] = x[0]
            channels[tops[0]] = channels[bottoms[0]]
        elif kind == "Softmax":
            nodes.append(helper.make_node("Softmax", x, [output(tops[0], name)], axis=1))
            channels[tops[0]] = channels[bottoms[0]]
        else:
            sys.exit(f"prototxt_to_onnx: layer '{name}' of type {kind} is not converted")
    consumed = {b for layer in layers for b in layer.get("bottom", [])}
    outputs = [helper.make_tensor_value_info(tensor[t], TensorProto.FLOAT, None)
               for layer in layers for t in layer.get("top", []) if t not in consumed]
    graph = helper.make_graph(nodes, net.get("name", ["net"])[0], inputs, outputs, weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def shape_of(nodes, weights, inputs, name):
    """The shape of tensor `name` of the graph so far."""
    out = helper.make_tensor_value_info(name, TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "partial", inputs, [out], weights)
    model = onnx.shape_inference.infer_shapes(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    for value in list(model.graph.value_info) + list(model.graph.output):
        if value.name == name:
            return [d.dim_value for d in value.type.tensor_type.shape.dim]
    sys.exit(f"prototxt_to_onnx: no shape for {name}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        model = convert(parse(f.read()))
    onnx.save(model, sys.argv[2])
