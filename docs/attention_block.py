"""A target layer's attention block three ways, on ONNX Runtime's CPU EP: cost and exactness.

* ``padded``: what an exact target runs today (``export/decoder.py``): packed Q/K/V padded by one
  zero row, GroupQueryAttention with rotary inside over the whole cache buffer (bound in place as
  past and present), the output sliced back to the window;
* ``one row``: GroupQueryAttention on the lone row, as onnxruntime-genai runs it; not exact
  against a window (its one-row path multiplies the probabilities by V as a GEMV);
* ``grouped``: plain ops: Split, RotaryEmbedding on Q and K, TensorScatter (opset 24) writing
  K and V into a BNSH cache buffer in place, the query heads that share a K/V head stacked as
  rows of one product per K/V head (SmolLM2: 9 heads on 3, so a lone token is 3 rows and never
  takes the one-row path), FusedMatMul (K transposed, the scale folded in), the additive mask,
  Softmax, MatMul with V, the heads put back. Timed over a buffer as wide as the positions seen,
  one up to 63 wider (a buffer that grows in steps of 64), and the whole capacity sliced to the
  positions seen in the graph (a buffer sized once).

Then the grouped block's exactness: each row of a window against the same token scored alone,
each over its own buffer width, K/V written by the block itself.

    python docs/attention_block.py

Prints microseconds per call (median of rounds in which the forms take turns) at 128 and 700
positions, and the largest difference per case (0.0 is exact).
"""
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

HEADS, KV_HEADS, HEAD_DIM = 9, 3, 64
GROUP = HEADS // KV_HEADS
PACKED = (HEADS + 2 * KV_HEADS) * HEAD_DIM
CAPACITY = 2048
MASKED = -1e9


def _session(nodes, inputs, outputs, initializers) -> ort.InferenceSession:
    graph = helper.make_graph(nodes, "attention_block", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 24), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 10
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _ints(name, values):
    return helper.make_tensor(name, TensorProto.INT64, [len(values)], values)


def _rotary_tables(rng):
    cos, sin = (rng.standard_normal((4096, HEAD_DIM // 2)).astype(np.float32) for _ in range(2))
    return [helper.make_tensor("cos", TensorProto.FLOAT, cos.shape, cos.ravel()),
            helper.make_tensor("sin", TensorProto.FLOAT, sin.shape, sin.ravel())]


def gqa_block(tables, padded: bool) -> ort.InferenceSession:
    qkv, nodes, extra = "qkv", [], []
    if padded:
        nodes.append(helper.make_node("Pad", ["qkv", "pads"], ["padded"]))
        qkv, extra = "padded", [_ints("pads", [0, 0, 0, 0, 1, 0]), _ints("start", [0]), _ints("axis", [1])]
    nodes.append(helper.make_node("GroupQueryAttention", [qkv, "", "", "past_k", "past_v", "seqlens_k", "total", "cos", "sin"],
                                  ["out", "present_k", "present_v"], domain="com.microsoft", num_heads=HEADS,
                                  kv_num_heads=KV_HEADS, do_rotary=1, scale=HEAD_DIM ** -0.5))
    out = "out"
    if padded:
        nodes += [helper.make_node("Shape", ["qkv"], ["rows"], start=1, end=2),
                  helper.make_node("Slice", ["out", "start", "rows", "axis"], ["window"])]
        out = "window"
    v = helper.make_tensor_value_info
    return _session(nodes, [v("qkv", TensorProto.FLOAT, [1, "S", PACKED]),
                            v("past_k", TensorProto.FLOAT, [1, KV_HEADS, CAPACITY, HEAD_DIM]),
                            v("past_v", TensorProto.FLOAT, [1, KV_HEADS, CAPACITY, HEAD_DIM]),
                            v("seqlens_k", TensorProto.INT32, [1]), v("total", TensorProto.INT32, [])],
                    [v(out, TensorProto.FLOAT, None), v("present_k", TensorProto.FLOAT, None),
                     v("present_v", TensorProto.FLOAT, None)], tables + extra)


def grouped_block(tables, sliced: bool) -> ort.InferenceSession:
    """Inputs: packed Q/K/V [1, S, 15*64], positions [1, S], the cache buffers [1, 3, W, 64], where
    the window goes (``write``), the mask [1, 1, 3S, W'] (a token's causal row once per query head
    of a group, as the runtime would write it; W' = W, or ``seen`` when ``sliced``)."""
    kv = ["cache_k", "cache_v"]
    nodes = [
        helper.make_node("Split", ["qkv", "split"], ["q", "k", "v"], axis=2),
        helper.make_node("RotaryEmbedding", ["q", "cos", "sin", "positions"], ["q_rot"], num_heads=HEADS),
        helper.make_node("RotaryEmbedding", ["k", "cos", "sin", "positions"], ["k_rot"], num_heads=KV_HEADS),
        helper.make_node("Reshape", ["k_rot", "bsnd"], ["k4"]), helper.make_node("Transpose", ["k4"], ["k_new"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["v", "bsnd"], ["v4"]), helper.make_node("Transpose", ["v4"], ["v_new"], perm=[0, 2, 1, 3]),
        helper.make_node("TensorScatter", ["cache_k", "k_new", "write"], ["present_k"], axis=2),
        helper.make_node("TensorScatter", ["cache_v", "v_new", "write"], ["present_v"], axis=2),
        # [1, S, 3 K/V heads, 3 query heads, D] -> [1, 3 K/V heads, S * 3 rows, D]
        helper.make_node("Reshape", ["q_rot", "grouped5"], ["q5"]),
        helper.make_node("Transpose", ["q5"], ["q5t"], perm=[0, 2, 1, 3, 4]),
        helper.make_node("Reshape", ["q5t", "grouped4"], ["q_rows"])]
    if sliced:
        nodes += [helper.make_node("Slice", ["present_k", "zero", "seen", "two"], ["keys"]),
                  helper.make_node("Slice", ["present_v", "zero", "seen", "two"], ["values"])]
        kv_seen = ["keys", "values"]
    else:
        kv_seen = ["present_k", "present_v"]
    nodes += [
        helper.make_node("FusedMatMul", ["q_rows", kv_seen[0]], ["scores"], domain="com.microsoft", transB=1,
                         alpha=HEAD_DIM ** -0.5),
        helper.make_node("Add", ["scores", "mask"], ["masked"]),
        helper.make_node("Softmax", ["masked"], ["probs"], axis=-1),
        helper.make_node("MatMul", ["probs", kv_seen[1]], ["out4"]),
        helper.make_node("Reshape", ["out4", "out5_shape"], ["out5"]),
        helper.make_node("Transpose", ["out5"], ["out5t"], perm=[0, 2, 1, 3, 4]),
        helper.make_node("Reshape", ["out5t", "out_shape"], ["out"])]
    constants = [_ints("split", [HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM]),
                 _ints("bsnd", [1, -1, KV_HEADS, HEAD_DIM]), _ints("grouped5", [1, -1, KV_HEADS, GROUP, HEAD_DIM]),
                 _ints("grouped4", [1, KV_HEADS, -1, HEAD_DIM]),
                 _ints("out5_shape", [1, KV_HEADS, -1, GROUP, HEAD_DIM]), _ints("out_shape", [1, -1, HEADS * HEAD_DIM]),
                 _ints("zero", [0]), _ints("two", [2])]
    v = helper.make_tensor_value_info
    inputs = [v("qkv", TensorProto.FLOAT, [1, "S", PACKED]), v("positions", TensorProto.INT64, [1, "S"]),
              *(v(name, TensorProto.FLOAT, [1, KV_HEADS, "W", HEAD_DIM]) for name in kv),
              v("write", TensorProto.INT64, [1]), v("mask", TensorProto.FLOAT, [1, 1, "R", "T"])]
    if sliced:
        inputs.append(v("seen", TensorProto.INT64, [1]))
    else:
        constants = [c for c in constants if c.name not in ("zero", "two")]
    return _session(nodes, inputs, [v("out", TensorProto.FLOAT, None), v("present_k", TensorProto.FLOAT, None),
                                    v("present_v", TensorProto.FLOAT, None)], tables + constants)


def _bind_cache(binding, past: str, present: str, buffer: np.ndarray) -> None:
    binding.bind_input(past, "cpu", 0, np.float32, buffer.shape, buffer.ctypes.data)
    binding.bind_output(present, "cpu", 0, np.float32, buffer.shape, buffer.ctypes.data)


def grouped_feeds(binding, qkv, start: int, buffers, seen_width: int | None) -> list:
    """Bind a window of ``len(qkv[0])`` tokens at ``start`` over ``buffers`` (their width W); the
    mask is W wide, or ``seen_width`` wide when the block slices the buffer to it."""
    rows, width = qkv.shape[1], buffers[0].shape[2]
    mask_width = seen_width or width
    mask = np.zeros((1, 1, rows * GROUP, mask_width), np.float32)
    for r in range(rows):  # row r * GROUP + g: token r seen by query head g of each group
        mask[0, 0, r * GROUP:(r + 1) * GROUP, start + r + 1:] = MASKED
    kept = [qkv, np.arange(start, start + rows, dtype=np.int64)[None], np.array([start], np.int64), mask]
    binding.bind_output("out")  # first: copy_outputs_to_cpu()[0]
    binding.bind_cpu_input("qkv", kept[0])
    binding.bind_cpu_input("positions", kept[1])
    binding.bind_cpu_input("write", kept[2])
    binding.bind_cpu_input("mask", mask)
    if seen_width:
        kept.append(np.array([seen_width], np.int64))
        binding.bind_cpu_input("seen", kept[-1])
    _bind_cache(binding, "cache_k", "present_k", buffers[0])
    _bind_cache(binding, "cache_v", "present_v", buffers[1])
    return kept


def costs(tables, rng) -> None:
    gqa = {padded: gqa_block(tables, padded) for padded in (False, True)}
    grouped = {sliced: grouped_block(tables, sliced) for sliced in (False, True)}
    for seen in (128, 700):
        cache = [rng.standard_normal((1, KV_HEADS, CAPACITY, HEAD_DIM)).astype(np.float32) for _ in range(2)]
        calls, kept = {}, []
        for name, padded in (("one row (not exact)", False), ("padded (today)", True)):
            binding = gqa[padded].io_binding()
            binding.bind_cpu_input("qkv", rng.standard_normal((1, 1, PACKED)).astype(np.float32))
            lengths = (np.array([seen - 1 + padded], np.int32), np.array(seen + padded, np.int32))
            kept.append(lengths)
            binding.bind_cpu_input("seqlens_k", lengths[0])
            binding.bind_cpu_input("total", lengths[1])
            _bind_cache(binding, "past_k", "present_k", cache[0])
            _bind_cache(binding, "past_v", "present_v", cache[1])
            binding.bind_output("window" if padded else "out")
            calls[name] = (gqa[padded], binding)
        for name, width, sliced in (("grouped, buffer = seen", seen, False), ("grouped, buffer = seen + 63", seen + 63, False),
                                    ("grouped, whole buffer sliced", CAPACITY, True)):
            buffers = [np.ascontiguousarray(c[:, :, :width]) for c in cache]
            binding = grouped[sliced].io_binding()
            kept += [buffers, grouped_feeds(binding, rng.standard_normal((1, 1, PACKED)).astype(np.float32), seen - 1,
                                            buffers, seen if sliced else None)]
            calls[name] = (grouped[sliced], binding)
        times = {name: [] for name in calls}
        names = list(calls)
        for round_ in range(8):
            for name in names[round_ % len(names):] + names[:round_ % len(names)]:
                session, binding = calls[name]
                for _ in range(20):
                    session.run_with_iobinding(binding)
                for _ in range(10):
                    start = time.perf_counter()
                    for _ in range(20):
                        session.run_with_iobinding(binding)
                    times[name].append((time.perf_counter() - start) / 20 * 1e6)
        print(f"{seen} positions seen: " + ", ".join(f"{name} {np.median(t):.1f} us" for name, t in times.items()))


def exactness(tables, rng) -> None:
    """Each row of a window (the block writes its K/V) against the same token alone, over a buffer
    of another width, after the same past."""
    session = grouped_block(tables, sliced=False)
    worst = 0.0
    for past, rows, window_width, alone_width in ((0, 4, 64, 5), (5, 3, 64, 128), (127, 6, 192, 140), (500, 7, 576, 512 + 64),
                                                  (1000, 8, 1024, 1100)):
        history = [rng.standard_normal((1, KV_HEADS, past, HEAD_DIM)).astype(np.float32) for _ in range(2)]
        qkv = rng.standard_normal((1, rows, PACKED)).astype(np.float32)
        buffers = [np.zeros((1, KV_HEADS, window_width, HEAD_DIM), np.float32) for _ in range(2)]
        for buffer, h in zip(buffers, history):
            buffer[:, :, :past] = h
        binding = session.io_binding()
        kept = grouped_feeds(binding, qkv, past, buffers, None)
        session.run_with_iobinding(binding)
        window = binding.copy_outputs_to_cpu()[0]
        alone_buffers = [np.zeros((1, KV_HEADS, max(alone_width, past + rows), HEAD_DIM), np.float32) for _ in range(2)]
        for buffer, h in zip(alone_buffers, history):
            buffer[:, :, :past] = h
        for r in range(rows):  # token by token, each writing its own K/V as decoding would
            binding = session.io_binding()
            kept = grouped_feeds(binding, qkv[:, r:r + 1].copy(), past + r, alone_buffers, None)
            session.run_with_iobinding(binding)
            alone = binding.copy_outputs_to_cpu()[0]
            worst = max(worst, float(np.abs(alone[0, 0] - window[0, r]).max()))
        del kept
        print(f"grouped block, {rows} rows after {past} (buffer {window_width}) against each token alone "
              f"(buffer {alone_buffers[0].shape[2]}): max |diff| so far {worst:.3g}")


def main() -> None:
    rng = np.random.default_rng(0)
    tables = _rotary_tables(rng)
    exactness(tables, rng)
    costs(tables, rng)


if __name__ == "__main__":
    main()
