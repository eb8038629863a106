"""The target's attention rewritten so that a lone token computes the bits a window would.

GroupQueryAttention is one kernel per layer, but its CPU kernel multiplies the probabilities by V
as a GEMV when the window has one row, and a GEMV rounds otherwise than the GEMM a window takes:
a token scored alone would differ in its last bits from the same token verified inside a window.
Padding the query by a row (or the runtime's filler row) buys the bits back at the price of a
second row, whose cost grows with the context.

Here every GroupQueryAttention node of an exported graph becomes plain ONNX ops over a
positions-major cache (``BSND-shared``: one [capacity, kv_heads, head_dim] buffer per layer and
kind, of which the runtime binds the first W positions as [W, 1, kv_heads, head_dim], as past
and present at once):

    Q, K, V = Split(packed as [seq, group + 2, kv_heads, D])   Q as [seq, kv_heads, group, D]: a Reshape
    RotaryEmbedding on Q and on K                               the positions given, per row
    present = ScatterND(past, positions, K)                     the new rows written in place
    Q as [1, kv_heads, seq * group, D]       a Transpose: one product per K/V head for the whole window
    scores = FusedMatMul(Q, present^T)       ``transBatchB``: each K/V head's rows read where they lie
    probs = Softmax(scores + mask)           the mask padded to W with -1e9 once per graph
    out = FusedMatMul(probs, present_v)

The query heads that share a K/V head are the rows of one product, so a lone token is ``group``
rows and never takes the one-row path; each row's sums run over the same positions in the same
order whatever the window and W (the masked positions add exact zeros), so a lone token is bit
for bit the token inside any window (tests/test_export.py, and validate.py's exact_windows).
No cache is copied, sliced or transposed: the products read it in place. (Every query row as a
one-row product of its own, MLAS's kernels without packing, is exact too at the runtime's widths,
multiples of 32, but no faster in a whole step: docs/profile-int4.md.)

The price is a dozen small ops a layer where GroupQueryAttention is one: about what the second
query row costs it at 128 positions, less than it at long contexts. It pays where the
alternative is a filler row through the whole graph (fp32), not where the query is padded
inside GroupQueryAttention (int4: export/decoder.py has the figures).

Only what GroupQueryAttention is given here is rewritten: rotary inside, no sliding window,
no softcap, and at least two query heads per K/V head (else a lone token is one row again). A graph with any other attention keeps GroupQueryAttention (``rewrite`` returns
False) and its BNSH cache.
"""

import numpy as np
import onnx
from onnx import helper, numpy_helper

MASKED = -1e9  # the runtime's additive mask value (runtime/masks.py)
_UNSUPPORTED = ("local_window_size", "softcap", "smooth_softmax", "rotary_interleaved", "qk_output")
_PREFIX = "grouped_attention."


def rewrite(model: onnx.ModelProto, head_dim: int, position_ids: str, attention_mask: str) -> bool:
    """Rewrite every GroupQueryAttention node of ``model`` in place; False (``model`` untouched)
    when one of them is not of the supported kind."""
    graph = model.graph
    attentions = [n for n in graph.node if n.op_type == "GroupQueryAttention"]
    if not attentions or not all(_supported(n) for n in attentions):
        return False
    if not any(op.domain in ("", "ai.onnx") and op.version >= 23 for op in model.opset_import):
        return False  # RotaryEmbedding is an opset-23 op
    caches = {name for n in attentions for name in n.input[3:5]}
    readers = [n for n in graph.node if n.op_type != "GroupQueryAttention" and caches & set(n.input)]
    if not all(_batch_size(n) for n in readers):
        return False
    for node in readers:  # the batch size, read off the cache by the exporter: read it off the positions
        node.input[0] = position_ids
    const = _Constants(graph)
    first = _attrs(attentions[0])
    shared = _per_graph(graph, position_ids, attention_mask, attentions[0].input[3], first["kv_num_heads"],
                        first["num_heads"] // first["kv_num_heads"], const)
    replaced = {n.output[0]: _grouped(n, head_dim, const) for n in attentions}
    for node in [*shared, *(n for group in replaced.values() for n in group)]:
        node.name = _PREFIX + node.output[0]
    nodes = list(shared)
    for node in graph.node:
        nodes += replaced.get(node.output[0], [node]) if node.op_type == "GroupQueryAttention" else [node]
    del graph.node[:]
    graph.node.extend(nodes)
    _drop_unused(graph)
    kv_heads_of = {name: _attrs(n)["kv_num_heads"] for n in attentions for name in (*n.input[3:5], *n.output[1:3])}
    for value in [*graph.input, *graph.output]:
        if value.name in kv_heads_of:
            _set_shape(value, ["width", 1, kv_heads_of[value.name], head_dim])
    return True


def _attrs(node) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _batch_size(node) -> bool:
    attrs = _attrs(node)
    return node.op_type == "Shape" and attrs.get("start") == 0 and attrs.get("end") == 1


def _supported(node) -> bool:
    attrs, inputs = _attrs(node), list(node.input) + [""] * 12
    packed = not inputs[1] and not inputs[2]
    group = attrs["num_heads"] // attrs["kv_num_heads"]  # a lone token is ``group`` rows: one row takes the GEMV
    return (group >= 2 and attrs.get("do_rotary") == 1 and bool(inputs[7] and inputs[8]) and not any(attrs.get(k) for k in _UNSUPPORTED)
            and (packed or bool(inputs[1] and inputs[2])) and not any(inputs[9:]))


class _Constants:
    """int64 constants (shapes, pads), each added to the graph once."""

    def __init__(self, graph):
        self.graph, self.names = graph, {}

    def __call__(self, values) -> str:
        key = tuple(int(v) for v in values)
        if key not in self.names:
            name = _PREFIX + "const." + "_".join(str(v) for v in key)
            self.graph.initializer.append(numpy_helper.from_array(np.array(key, np.int64), name))
            self.names[key] = name
        return self.names[key]


def _per_graph(graph, position_ids: str, attention_mask: str, some_cache: str, kv_heads: int, group: int,
               const) -> list:
    """Once per graph: where the new rows go ([seq, 1]), each row's position once per K/V head
    ([seq, kv_heads], for RotaryEmbedding on [seq, group, kv_heads, head_dim]) and the mask padded
    to the bound width W with -1e9, a row per query row of a group ([seq * group, W])."""
    p = _PREFIX
    graph.initializer.append(numpy_helper.from_array(np.array(MASKED, np.float32), p + "masked"))
    return [
        helper.make_node("Reshape", [position_ids, const([-1, 1])], [p + "where"]),
        helper.make_node("Expand", [p + "where", const([1, kv_heads])], [p + "positions"]),
        helper.make_node("Shape", [some_cache], [p + "width"], start=0, end=1),
        helper.make_node("Shape", [attention_mask], [p + "total"], start=3, end=4),
        helper.make_node("Sub", [p + "width", p + "total"], [p + "tail"]),
        helper.make_node("Mul", [const([0] * 7 + [1]), p + "tail"], [p + "pads"]),  # the last axis' end
        helper.make_node("Pad", [attention_mask, p + "pads", p + "masked"], [p + "mask_w"], mode="constant"),
        helper.make_node("Transpose", [p + "mask_w"], [p + "mask_t"], perm=[2, 0, 1, 3]),
        helper.make_node("Expand", [p + "mask_t", const([1, 1, group, 1])], [p + "mask_g"]),
        helper.make_node("Flatten", [p + "mask_g"], [p + "mask"], axis=3),
    ]


def _grouped(node, head_dim: int, const) -> list:
    """One GroupQueryAttention node as the ops of the module docstring. Packed Q/K/V is
    [seq, group + 2, kv_heads, head_dim] (a Reshape): Q the first ``group`` rows, K and V one each,
    already shaped as the cache's rows."""
    attrs = _attrs(node)
    heads, kv_heads = attrs["num_heads"], attrs["kv_num_heads"]
    group = heads // kv_heads
    out, present_k, present_v = node.output[:3]
    past_k, past_v, cos, sin = node.input[3], node.input[4], node.input[7], node.input[8]
    p = out + "." + _PREFIX
    q, k, v = p + "q", p + "k", p + "v"
    if node.input[1]:  # Q, K, V apart (normalised per head first)
        nodes = [helper.make_node("Reshape", [name, const([-1, rows, kv_heads, head_dim])], [to])
                 for name, rows, to in zip(node.input[:3], (group, 1, 1), (q, k, v))]
    else:
        nodes = [helper.make_node("Reshape", [node.input[0], const([-1, group + 2, kv_heads, head_dim])], [p + "qkv"]),
                 helper.make_node("Split", [p + "qkv", const([group, 1, 1])], [q, k, v], axis=1)]
    positions = _PREFIX + "positions"
    nodes += [
        helper.make_node("RotaryEmbedding", [q, cos, sin, positions], [p + "q_rot"]),
        helper.make_node("RotaryEmbedding", [k, cos, sin, positions], [p + "k_rot"]),
        helper.make_node("ScatterND", [past_k, _PREFIX + "where", p + "k_rot"], [present_k]),
        helper.make_node("ScatterND", [past_v, _PREFIX + "where", v], [present_v]),
    ]
    # Q's rows per K/V head j: [seq, kv_heads, group, D] (query head h = j * group + r), then
    # [1, kv_heads, seq * group, D]: one product per K/V head over all of the window's rows
    q_rows = p + "q_rot"
    if group != kv_heads:
        q_rows = p + "q_heads"
        nodes.append(helper.make_node("Reshape", [p + "q_rot", const([-1, kv_heads, group, head_dim])], [q_rows]))
    nodes += [
        helper.make_node("Transpose", [q_rows], [p + "q_t"], perm=[1, 0, 2, 3]),
        helper.make_node("Reshape", [p + "q_t", const([1, kv_heads, -1, head_dim])], [p + "q_groups"]),
        helper.make_node("FusedMatMul", [p + "q_groups", present_k], [p + "scores"], domain="com.microsoft",
                         alpha=float(attrs.get("scale", head_dim ** -0.5)), transB=1, transBatchB=1),
        helper.make_node("Add", [p + "scores", _PREFIX + "mask"], [p + "masked"]),
        helper.make_node("Softmax", [p + "masked"], [p + "probs"], axis=-1),
        helper.make_node("FusedMatMul", [p + "probs", present_v], [p + "out"], domain="com.microsoft", transBatchB=1),
        helper.make_node("Reshape", [p + "out", const([kv_heads, -1, group * head_dim])], [p + "out_rows"]),
        helper.make_node("Transpose", [p + "out_rows"], [p + "out_t"], perm=[1, 0, 2]),
        helper.make_node("Reshape", [p + "out_t", const([1, -1, heads * head_dim])], [out]),
    ]
    return nodes


def _drop_unused(graph) -> None:
    """Drop the nodes and initializers nothing reads any more (GroupQueryAttention's lengths)."""
    needed = {o.name for o in graph.output}
    kept = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    initializers = [i for i in graph.initializer if i.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(initializers)


def _set_shape(value, dims) -> None:
    shape = value.type.tensor_type.shape
    del shape.dim[:]
    for d in dims:
        dim = shape.dim.add()
        if isinstance(d, str):
            dim.dim_param = d
        else:
            dim.dim_value = d
