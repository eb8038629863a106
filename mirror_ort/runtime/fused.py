"""The whole target in one graph, for the steps that send no early-exit message.

Mirror-SD needs the target split at l_e: the prefix's exit message must leave while the suffix
still runs. Target-only decoding, ``sd``'s verification and Mirror-SD's steps without a draft
tree need only the target's output, and there a second session run per step is pure overhead
(its Run, its thread pool's wake-up, the Python between the two). So the runtime joins the
bundle's prefix and suffix graphs in memory, the prefix's hidden state feeding the suffix, and
drops the early-exit head, which nothing then reads. No file of the bundle changes and nothing
is exported twice; the fused session reads and writes the very K/V buffers of the two halves
(``KVCache.layers``), so a generation can switch between the two ways step by step. Both
compute every row bit for bit alike (``export/validate.py``'s exact_windows check).
"""

import onnx
from onnx import helper

from ..bundle import GraphSpec, TensorSpec
from .kv_cache import KVCache

FUSED_ROLE = "target"
PROTOBUF_LIMIT = 2**31 - 2**24  # bytes of one serialized model, with room to spare


def _can_fuse(prefix: GraphSpec, suffix: GraphSpec) -> bool:
    """Dynamic halves in one K/V layout whose cache names agree: static NPU graphs stay apart."""
    same_names = all(prefix.names[k] == suffix.names[k] for k in
                     ("past_key", "past_value", "present_key", "present_value", "position_ids", "attention_mask"))
    return (prefix.static is None and suffix.static is None and prefix.kv_layout == suffix.kv_layout
            and prefix.layers[1] == suffix.layers[0] and same_names)


def halves_of(cache: KVCache, prefix: GraphSpec) -> tuple[KVCache, KVCache]:
    """The fused target's cache as the prefix's layers and the suffix's, over the same memory."""
    cut = prefix.layers[1] - prefix.layers[0]
    return cache.layers(0, cut), cache.layers(cut, len(cache.buffer))


def fuse(prefix: GraphSpec, suffix: GraphSpec) -> tuple[bytes, GraphSpec] | None:
    """The fused model (serialized) and its spec: the prefix's inputs, the suffix's head; None for
    halves that stay apart (``_can_fuse``), a target too large for one in-memory protobuf (ONNX's
    2 GB limit) or one with external weights.

    Graph surgery works on the graphs without their weights; the weights go from the two files
    into the fused model as the bytes they are (``_initializer``): protobuf's Python messages
    copy and re-encode large tensors slowly (seconds for an fp32 model)."""
    if not _can_fuse(prefix, suffix):
        return None
    files = prefix.path.read_bytes(), suffix.path.read_bytes()
    if sum(len(f) for f in files) >= PROTOBUF_LIMIT:
        return None
    (first, first_weights), (second, second_weights) = (_without_weights(f) for f in files)
    if first is None or second is None:
        return None
    joined = {suffix.name("hidden"): prefix.name("hidden"),
              **{suffix.name(k): prefix.name(k) for k in ("position_ids", "attention_mask")}}
    kept_names = {v.name for v in [*second.graph.input, *second.graph.output]} - set(joined)

    def rename(name: str) -> str:
        if not name or name in kept_names:
            return name
        return joined.get(name, "suffix/" + name)

    for node in second.graph.node:
        node.input[:] = [rename(n) for n in node.input]
        node.output[:] = [rename(n) for n in node.output]
        node.name = "suffix/" + node.name
    for value in second.graph.value_info:
        value.name = rename(value.name)
    head = [suffix.name(k) for k in ("logits", "next_ids")]
    presents = {name for *_, name in [*prefix.kv_slots, *suffix.kv_slots]}
    pasts = {name for _, _, name, _ in suffix.kv_slots}
    inputs = ([v for v in first.graph.input if v.name != prefix.name("head_rows")]  # the exit head's rows
              + [v for v in second.graph.input if v.name in pasts or v.name == suffix.name("head_rows")])
    outputs = ([v for v in second.graph.output if v.name in head]
               + [v for v in [*first.graph.output, *second.graph.output] if v.name in presents])
    graph = helper.make_graph([*first.graph.node, *second.graph.node], FUSED_ROLE, inputs, outputs,
                              value_info=[*first.graph.value_info, *second.graph.value_info])  # shape inference needs it
    needed = _prune(graph)
    model = helper.make_model(graph, opset_imports=_opsets(first, second),
                              functions=list({(f.domain, f.name): f for f in [*first.functions, *second.functions]}.values()))
    model.ir_version = max(first.ir_version, second.ir_version)
    weights = [piece for name, tensor in first_weights if name in needed for piece in _initializer(tensor)]
    for name, tensor in second_weights:
        new_name = rename(name)
        if new_name in needed:
            weights += _initializer(tensor, new_name if new_name != name else None)
    graph_bytes = model.graph.SerializeToString()
    model.ClearField("graph")
    names = {**prefix.names, "head_rows": suffix.name("head_rows"), "logits": head[0], "next_ids": head[1]}
    spec = GraphSpec(
        role=FUSED_ROLE, file=f"{prefix.file}+{suffix.file}", path=prefix.path, layers=(prefix.layers[0], suffix.layers[1]),
        num_kv_heads=prefix.num_kv_heads, head_dim=prefix.head_dim, kv_layout=prefix.kv_layout,
        precision=prefix.precision, inputs=tuple(_tensor(v) for v in graph.input),
        outputs=tuple(_tensor(v) for v in graph.output), names=names,
        one_row_exact=prefix.one_row_exact and suffix.one_row_exact)
    size = len(graph_bytes) + sum(len(piece) for piece in weights)
    return b"".join([model.SerializeToString(), _key(MODEL_GRAPH, size), graph_bytes, *weights]), spec


def _prune(graph: onnx.GraphProto) -> set[str]:
    """Keep only the nodes an output needs (the early-exit head goes); returns the names they read."""
    needed, kept = {v.name for v in graph.output}, []
    for node in reversed(list(graph.node)):
        if any(name in needed for name in node.output):
            kept.append(node)
            needed |= set(node.input)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    used = [v for v in graph.value_info if v.name in needed]
    del graph.value_info[:]
    graph.value_info.extend(used)
    return needed


# Protobuf field numbers (onnx.proto): ModelProto.graph, GraphProto.initializer, TensorProto.name and .raw_data
MODEL_GRAPH, GRAPH_INITIALIZER, TENSOR_NAME, RAW_DATA = 7, 5, 8, 9


def _without_weights(model: bytes) -> tuple[onnx.ModelProto | None, list[tuple[str, memoryview]]]:
    """The model parsed without its initializers, and each initializer's encoded TensorProto by
    name; (None, []) when a weight lives in an external file."""
    kept, weights = [], []
    for number, value, encoded in _fields(model):
        if number != MODEL_GRAPH:
            kept.append(encoded)
            continue
        graph = []
        for field, tensor, encoded_field in _fields(value):
            if field != GRAPH_INITIALIZER:
                graph.append(encoded_field)
                continue
            head = onnx.TensorProto()  # the tensor without its data: its name and where the data lives
            head.ParseFromString(b"".join(e for n, _, e in _fields(tensor) if n != RAW_DATA))
            if head.data_location == onnx.TensorProto.EXTERNAL:
                return None, []
            weights.append((head.name, tensor))
        body = b"".join(graph)
        kept.append(_key(MODEL_GRAPH, len(body)) + body)
    return onnx.load_from_string(b"".join(kept)), weights


def _initializer(tensor: memoryview, new_name: str | None = None) -> list:
    """The pieces of an encoded ``GraphProto.initializer`` field, renamed: a name appended to a
    message overrides the earlier one (protobuf: the last value of a singular field wins), so the
    tensor's bytes are never re-encoded, only copied once into the fused model."""
    tail = _key(TENSOR_NAME, len(new_name.encode())) + new_name.encode() if new_name else b""
    return [_key(GRAPH_INITIALIZER, len(tensor) + len(tail)), tensor, tail]


def _fields(data):
    """(field number, value, the whole encoded field) for each field of an encoded message; the
    value is the payload of a length-delimited field, else None."""
    view, i = memoryview(data), 0
    while i < len(view):
        start = i
        key, i = _varint(view, i)
        wire, value = key & 7, None
        if wire == 2:
            size, i = _varint(view, i)
            value, i = view[i:i + size], i + size
        elif wire == 0:
            _, i = _varint(view, i)
        else:
            i += {1: 8, 5: 4}[wire]
        yield key >> 3, value, view[start:i]


def _varint(view, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = view[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7


def _key(number: int, size: int) -> bytes:
    """The key and length that start a length-delimited field."""
    out = bytearray()
    for value in ((number << 3) | 2, size):
        while value >= 0x80:
            out.append((value & 0x7F) | 0x80)
            value >>= 7
        out.append(value)
    return bytes(out)


def _opsets(*models: onnx.ModelProto) -> list:
    versions: dict[str, int] = {}
    for model in models:
        for opset in model.opset_import:
            versions[opset.domain] = max(versions.get(opset.domain, 0), opset.version)
    return [helper.make_opsetid(domain, version) for domain, version in versions.items()]


def _tensor(value: onnx.ValueInfoProto) -> TensorSpec:
    t = value.type.tensor_type
    dtype = helper.tensor_dtype_to_np_dtype(t.elem_type).name
    return TensorSpec(value.name, dtype, [d.dim_param or d.dim_value for d in t.shape.dim])
