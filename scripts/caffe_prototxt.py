"""Caffe's protobuf text format (prototxt) as nested dicts, for the benchmark scripts
(scripts/prototxt_to_onnx.py, scripts/prototxt_to_torch.py)."""
import re

TOKEN = re.compile(r'\s*(?:#[^\n]*|"((?:[^"\\]|\\.)*)"|([{}:])|([^\s{}:"#]+))')


def parse(text):
    """Protobuf text format as nested dicts of lists (every field repeated)."""
    tokens, pos = [], 0
    while pos < len(text):
        m = TOKEN.match(text, pos)
        if not m or m.end() == pos:
            break
        pos = m.end()
        if m.group(1) is not None:
            tokens.append(("str", m.group(1)))
        elif m.group(2):
            tokens.append((m.group(2), None))
        elif m.group(3):
            tokens.append(("word", m.group(3)))

    def message(i):
        fields = {}
        while i < len(tokens) and tokens[i][0] != "}":
            name = tokens[i][1]
            i += 1
            if tokens[i][0] == ":":
                i += 1
            if tokens[i][0] == "{":
                value, i = message(i + 1)
                i += 1
            else:
                kind, raw = tokens[i]
                i += 1
                value = raw if kind == "str" else number_or_word(raw)
            fields.setdefault(name, []).append(value)
        return fields, i

    return message(0)[0]


def number_or_word(raw):
    for convert in (int, float):
        try:
            return convert(raw)
        except ValueError:
            pass
    return raw


def one(msg, name, default=None):
    return msg.get(name, [default])[0]


def pair(param, name, default):
    """Caffe's kernel/stride/pad: `name` (repeated or one) or name_h / name_w."""
    if f"{name}_h" in param:
        return [param[f"{name}_h"][0], param[f"{name}_w"][0]]
    values = param.get(f"{name}_size" if name == "kernel" else name, [default])
    return values * 2 if len(values) == 1 else values[:2]
