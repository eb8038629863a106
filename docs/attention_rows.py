"""Does attention written as plain ops compute a query row alike alone and inside a window?

The exactness rule (``runtime/target.py``) costs mirror-ort's target a second attention row per
lone token, because GroupQueryAttention takes another path for one query row. This measures the
two ways one might write attention instead, on random K/V (9 heads of 64, 2 threads):

* plain MatMul/Softmax: row 0 of a two-row call against a one-row call;
* rows as a batch of one-row products (each row takes the one-row path, with its causal mask):
  each row of a window against the same token scored alone on its own cache length;
* query heads grouped by the K/V head they share (SmolLM2: 9 query heads on 3 K/V heads, so a
  lone token is 3 rows of one product per K/V head and never takes the one-row path): each row
  of a window against the same token scored alone on its own cache length, and a token over a
  cache buffer wider than the positions it sees (the rest masked). This one is exact here. Its cost for one token is timed beside GroupQueryAttention's for one row and two; those
  include copying the cache into the op's present output (no shared buffer here, unlike the
  exported target), and the plain form's figure has no K/V write at all: an indication, not the
  answer, of what a target with this attention would cost;
* the K/V write such a target needs: ONNX's TensorScatter (opset 24) with its output bound to
  its input's buffer writes the new rows in place (checked, and timed at three capacities: a
  copy of the cache would grow with it);
* what the second row costs GroupQueryAttention as the exported target runs it (the whole cache
  buffer bound as past and present), by context length.

    python docs/attention_rows.py

Prints the largest difference per case (0.0 is exact) and the costs.
"""
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

HEADS, KV_HEADS, HEAD_DIM = 9, 3, 64
GROUP = HEADS // KV_HEADS


def attention_session(rows_as_batch: bool) -> ort.InferenceSession:
    q_shape = ["R", "H", 1, HEAD_DIM] if rows_as_batch else [1, "H", "S", HEAD_DIM]
    mask_shape = ["R", 1, 1, "T"] if rows_as_batch else [1, 1, "S", "T"]
    graph = helper.make_graph([
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["q", "kt"], ["scores"]),
        helper.make_node("Mul", ["scores", "scale"], ["scaled"]),
        helper.make_node("Add", ["scaled", "mask"], ["masked"]),
        helper.make_node("Softmax", ["masked"], ["probs"], axis=-1),
        helper.make_node("MatMul", ["probs", "v"], ["out"])], "attention",
        [helper.make_tensor_value_info("q", TensorProto.FLOAT, q_shape),
         helper.make_tensor_value_info("k", TensorProto.FLOAT, [1, "H", "T", HEAD_DIM]),
         helper.make_tensor_value_info("v", TensorProto.FLOAT, [1, "H", "T", HEAD_DIM]),
         helper.make_tensor_value_info("mask", TensorProto.FLOAT, mask_shape)],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        [helper.make_tensor("scale", TensorProto.FLOAT, [], [HEAD_DIM ** -0.5])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def main() -> None:
    rng = np.random.default_rng(0)
    plain = attention_session(rows_as_batch=False)
    for length in (5, 40, 130, 800):
        k, v = (rng.standard_normal((1, HEADS, length, HEAD_DIM), dtype=np.float32) for _ in range(2))
        q = rng.standard_normal((1, HEADS, 2, HEAD_DIM), dtype=np.float32)
        feeds = {1: {"q": q[:, :, :1].copy(), "k": k, "v": v, "mask": np.zeros((1, 1, 1, length), np.float32)},
                 2: {"q": q, "k": k, "v": v, "mask": np.zeros((1, 1, 2, length), np.float32)}}
        one, two = (plain.run(None, feeds[n])[0] for n in (1, 2))
        cost = {}
        for n in (1, 2):
            start = time.perf_counter()
            for _ in range(200):
                plain.run(None, feeds[n])
            cost[n] = (time.perf_counter() - start) / 200 * 1e6
        print(f"plain, {length} positions: row 0 alone vs in two rows, max |diff| "
              f"{np.abs(one[:, :, 0] - two[:, :, 0]).max():.3g}; {cost[1]:.0f} vs {cost[2]:.0f} us per call")
    batched = attention_session(rows_as_batch=True)
    for past, rows in ((5, 3), (128, 4), (800, 7)):
        width = past + rows
        k, v = (rng.standard_normal((1, HEADS, width, HEAD_DIM), dtype=np.float32) for _ in range(2))
        q = rng.standard_normal((rows, HEADS, 1, HEAD_DIM), dtype=np.float32)
        mask = np.zeros((rows, 1, 1, width), np.float32)
        for r in range(rows):
            mask[r, 0, 0, past + r + 1:] = -1e9
        window = batched.run(None, {"q": q, "k": k, "v": v, "mask": mask})[0]
        diffs = []
        for r in range(rows):
            seen = past + r + 1
            alone = batched.run(None, {"q": q[r:r + 1], "k": k[:, :, :seen].copy(), "v": v[:, :, :seen].copy(),
                                       "mask": np.zeros((1, 1, 1, seen), np.float32)})[0]
            diffs.append(float(np.abs(alone[0] - window[r]).max()))
        print(f"rows as a batch, {rows} rows after {past}: per row max |diff| {[f'{d:.2g}' for d in diffs]}")
    grouped(plain, rng)
    cache_write_in_place()
    second_row_in_place()


def grouped(session: ort.InferenceSession, rng) -> None:
    """Query rows [token, query head of the group] per K/V head: a window's rows against each token alone."""
    def rows(q):  # [tokens, KV_HEADS, GROUP, D] -> [1, KV_HEADS, tokens * GROUP, D]
        return np.ascontiguousarray(q.transpose(1, 0, 2, 3).reshape(1, KV_HEADS, -1, HEAD_DIM))
    gqa = group_query_attention()
    for past, count in ((5, 3), (60, 4), (127, 6), (500, 7), (1000, 8)):
        width = past + count
        k, v = (rng.standard_normal((1, KV_HEADS, width, HEAD_DIM), dtype=np.float32) for _ in range(2))
        q = rng.standard_normal((count, KV_HEADS, GROUP, HEAD_DIM), dtype=np.float32)
        mask = np.zeros((1, 1, count * GROUP, width), np.float32)
        for r in range(count):
            mask[0, 0, r * GROUP:(r + 1) * GROUP, past + r + 1:] = -1e9
        window = session.run(None, {"q": rows(q), "k": k, "v": v, "mask": mask})[0].reshape(KV_HEADS, count, GROUP, -1)
        worst = 0.0
        for r in range(count):
            seen = past + r + 1
            feeds = {"q": rows(q[r:r + 1]), "k": k[:, :, :seen].copy(), "v": v[:, :, :seen].copy(),
                     "mask": np.zeros((1, 1, GROUP, seen), np.float32)}
            alone = session.run(None, feeds)[0].reshape(KV_HEADS, GROUP, -1)
            worst = max(worst, float(np.abs(alone - window[:, r]).max()))
        costs = (_cost(lambda: session.run(None, feeds)), gqa(k, v, seen, 1), gqa(k, v, seen, 2))
        print(f"grouped query heads, {count} rows after {past}: max |diff| {worst:.3g}; one token {costs[0]:.0f} us, "
              f"GroupQueryAttention one row {costs[1]:.0f} us, two rows {costs[2]:.0f} us")
    worst = 0.0  # a cache buffer wider than the positions used: the columns past them masked
    for seen in (5, 64, 65, 500, 511, 512, 513, 1000, 1500):
        for extra in (1, 37, 64, 300, 600):
            k, v = (rng.standard_normal((1, KV_HEADS, seen + extra, HEAD_DIM), dtype=np.float32) for _ in range(2))
            q = rows(rng.standard_normal((1, KV_HEADS, GROUP, HEAD_DIM), dtype=np.float32))
            mask = np.zeros((1, 1, GROUP, seen + extra), np.float32)
            mask[..., seen:] = -1e9
            narrow = session.run(None, {"q": q, "k": k[:, :, :seen].copy(), "v": v[:, :, :seen].copy(),
                                        "mask": mask[..., :seen].copy()})[0]
            wide = session.run(None, {"q": q, "k": k, "v": v, "mask": mask})[0]
            worst = max(worst, float(np.abs(narrow - wide).max()))
    print(f"grouped query heads, a token over 5 to 1,500 positions in a buffer 1 to 600 wider: max |diff| {worst:.3g}")


def _cache_inputs(capacity) -> list:
    """GroupQueryAttention's past K/V (BNSH, ``capacity`` positions) and its two lengths."""
    return [helper.make_tensor_value_info("past_k", TensorProto.FLOAT, [1, KV_HEADS, capacity, HEAD_DIM]),
            helper.make_tensor_value_info("past_v", TensorProto.FLOAT, [1, KV_HEADS, capacity, HEAD_DIM]),
            helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, [1]),
            helper.make_tensor_value_info("total", TensorProto.INT32, [])]


def _gqa_session(node, inputs: list) -> ort.InferenceSession:
    """A session of the one GroupQueryAttention ``node`` over ``inputs``, 2 threads."""
    graph = helper.make_graph([node], "gqa", inputs,
                              [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in node.output])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 9
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def group_query_attention():
    """ONNX Runtime's GroupQueryAttention over a cache of ``seen - 1`` positions: the cost of 1 or 2 new rows."""
    node = helper.make_node("GroupQueryAttention", ["q", "k", "v", "past_k", "past_v", "seqlens_k", "total"],
                            ["out", "present_k", "present_v"], domain="com.microsoft",
                            num_heads=HEADS, kv_num_heads=KV_HEADS)
    session = _gqa_session(node, [
        helper.make_tensor_value_info("q", TensorProto.FLOAT, [1, "S", HEADS * HEAD_DIM]),
        helper.make_tensor_value_info("k", TensorProto.FLOAT, [1, "S", KV_HEADS * HEAD_DIM]),
        helper.make_tensor_value_info("v", TensorProto.FLOAT, [1, "S", KV_HEADS * HEAD_DIM]),
        *_cache_inputs("C")])

    def cost(k, v, seen: int, rows: int) -> float:
        past = seen - 1
        new = np.zeros((1, rows, KV_HEADS * HEAD_DIM), np.float32)
        feeds = {"q": np.zeros((1, rows, HEADS * HEAD_DIM), np.float32), "k": new, "v": new,
                 "past_k": k[:, :, :past].copy(), "past_v": v[:, :, :past].copy(),
                 "seqlens_k": np.array([past + rows - 1], np.int32), "total": np.array(past + rows, np.int32)}
        return _cost(lambda: session.run(None, feeds))
    return cost


def second_row_in_place(capacity: int = 2048) -> None:
    """What the exactness rule's second row costs GroupQueryAttention as the target runs it: packed
    Q/K/V, the whole cache buffer bound as past and present (written in place), by context length.
    One row multiplies the probabilities by V as a GEMV; two rows take the GEMM, which first copies
    V into a packed panel per query head, so the second row's cost grows with the context."""
    node = helper.make_node("GroupQueryAttention", ["qkv", "", "", "past_k", "past_v", "seqlens_k", "total"],
                            ["out", "present_k", "present_v"], domain="com.microsoft",
                            num_heads=HEADS, kv_num_heads=KV_HEADS)
    session = _gqa_session(node, [
        helper.make_tensor_value_info("qkv", TensorProto.FLOAT, [1, "S", (HEADS + 2 * KV_HEADS) * HEAD_DIM]),
        *_cache_inputs(capacity)])
    rng = np.random.default_rng(1)
    cache = {kind: ort.OrtValue.ortvalue_from_numpy(rng.standard_normal((1, KV_HEADS, capacity, HEAD_DIM),
                                                                        dtype=np.float32)) for kind in ("k", "v")}
    for total in (150, 400, 700, 1000):
        bindings = []
        for rows in (1, 2):
            binding = session.io_binding()
            binding.bind_cpu_input("qkv", rng.standard_normal((1, rows, (HEADS + 2 * KV_HEADS) * HEAD_DIM),
                                                              dtype=np.float32))
            binding.bind_cpu_input("seqlens_k", np.array([total - 1], np.int32))
            binding.bind_cpu_input("total", np.array(total, np.int32))
            for kind in ("k", "v"):
                binding.bind_ortvalue_input(f"past_{kind}", cache[kind])
                binding.bind_ortvalue_output(f"present_{kind}", cache[kind])
            binding.bind_output("out")
            bindings.append(binding)
        costs = [[], []]
        for _ in range(60):  # the two take turns, so a drift of the host falls on both
            for rows, binding in enumerate(bindings):
                costs[rows].append(_cost(lambda: session.run_with_iobinding(binding), repeats=20))
        one, two = (float(np.median(c)) for c in costs)
        print(f"GroupQueryAttention in place, {total} positions: one row {one:.0f} us, two rows {two:.0f} us "
              f"(x30 layers: +{(two - one) * 30 / 1000:.2f} ms a step)")


def cache_write_in_place() -> None:
    """TensorScatter with past and present bound to one buffer: one new row at position 5."""
    node = helper.make_node("TensorScatter", ["past", "update", "write_indices"], ["present"], axis=2)
    graph = helper.make_graph([node], "cache_write", [
        helper.make_tensor_value_info("past", TensorProto.FLOAT, [1, KV_HEADS, "C", HEAD_DIM]),
        helper.make_tensor_value_info("update", TensorProto.FLOAT, [1, KV_HEADS, "S", HEAD_DIM]),
        helper.make_tensor_value_info("write_indices", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("present", TensorProto.FLOAT, [1, KV_HEADS, "C", HEAD_DIM])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 24)])
    model.ir_version = 10
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for capacity in (256, 4096, 32768):
        cache = ort.OrtValue.ortvalue_from_numpy(np.zeros((1, KV_HEADS, capacity, HEAD_DIM), np.float32))
        binding = session.io_binding()
        binding.bind_ortvalue_input("past", cache)
        binding.bind_cpu_input("update", np.ones((1, KV_HEADS, 1, HEAD_DIM), np.float32))
        binding.bind_cpu_input("write_indices", np.array([5], np.int64))
        binding.bind_ortvalue_output("present", cache)
        session.run_with_iobinding(binding)
        written = cache.numpy()
        in_place = bool((written[0, :, 5] == 1).all() and written.sum() == KV_HEADS * HEAD_DIM)
        cost = _cost(lambda: session.run_with_iobinding(binding))
        print(f"TensorScatter into a {capacity}-position cache: in place {in_place}, {cost:.1f} us per call")


def _cost(call, repeats: int = 200) -> float:
    call()
    start = time.perf_counter()
    for _ in range(repeats):
        call()
    return (time.perf_counter() - start) / repeats * 1e6


if __name__ == "__main__":
    main()
