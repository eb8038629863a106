"""A target layer's attention, as GroupQueryAttention runs it and as export/grouped_attention.py rewrites it.

One layer (SmolLM2-135M's shape: 9 query heads on 3 K/V heads of 64), on ONNX Runtime's CPU EP:

* ``one row``: GroupQueryAttention on the lone row, as onnxruntime-genai runs it; not exact
  against a window (its one-row path multiplies the probabilities by V as a GEMV);
* ``padded``: GroupQueryAttention on the row and a zero row (``PAD_QUERY_PRECISIONS``), the whole
  BNSH cache buffer bound in place;
* ``grouped``: the same node rewritten by ``grouped_attention.rewrite`` (what fp32 targets ship),
  over the first W positions of a positions-major buffer bound in place, W as the runtime binds
  it (the positions seen rounded up to ``WIDTH_STEP``).

Each row is the same token after ``positions`` cached ones, rerun in place; the rows take turns in
rounds. A layer alone keeps its cache in the CPU's caches: in a whole step each layer's K/V come
from memory and every op also costs the executor its own overhead, so compare whole steps with
``docs/graph_step_vs_genai.py``. Exactness of the rewrite: tests/test_export.py.

    python docs/attention_block.py [--positions 128 300 700]

Prints microseconds per call (median).
"""
import argparse
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from mirror_ort.export import grouped_attention
from mirror_ort.runtime.masks import causal_mask, positions
from mirror_ort.runtime.session import WIDTH_STEP

HEADS, KV_HEADS, HEAD_DIM = 9, 3, 64
PACKED = (HEADS + 2 * KV_HEADS) * HEAD_DIM
CAPACITY = 2048


def layer(padded: bool) -> onnx.ModelProto:
    """The target's attention node as the exporter writes it, its lengths from the mask."""
    rng = np.random.default_rng(0)
    tables = [numpy_helper.from_array(rng.uniform(-1, 1, (CAPACITY, HEAD_DIM // 2)).astype(np.float32), name)
              for name in ("cos", "sin")]
    ints = [numpy_helper.from_array(np.array(values, dtype), name) for name, values, dtype in
            (("one", [1], np.int32), ("pads", [0, 0, 0, 0, 1, 0], np.int64), ("zero", [0], np.int64),
             ("axis", [1], np.int64))]
    qkv, out = ("qkv_padded", "out_padded") if padded else ("qkv", "out")
    nodes = [helper.make_node("Shape", ["attention_mask"], ["total64"], start=3, end=4),
             helper.make_node("Cast", ["total64"], ["total1"], to=TensorProto.INT32),
             helper.make_node("Add", ["total1", "one"] if padded else ["total1", "zero32"], ["total_rows"]),
             helper.make_node("Squeeze", ["total_rows"], ["total"]),
             helper.make_node("Sub", ["total_rows", "one"], ["seqlens"]),
             helper.make_node("GroupQueryAttention", [qkv, "", "", "past.0.key", "past.0.value", "seqlens", "total",
                                                      "cos", "sin"], [out, "present.0.key", "present.0.value"],
                              domain="com.microsoft", num_heads=HEADS, kv_num_heads=KV_HEADS, scale=HEAD_DIM ** -0.5,
                              do_rotary=1)]
    if padded:
        nodes += [helper.make_node("Pad", ["qkv", "pads"], ["qkv_padded"]),
                  helper.make_node("Shape", ["qkv"], ["rows"], start=1, end=2),
                  helper.make_node("Slice", ["out_padded", "zero", "rows", "axis"], ["out"])]
    else:
        ints.append(numpy_helper.from_array(np.array([0], np.int32), "zero32"))
    v = helper.make_tensor_value_info
    cache = [1, KV_HEADS, CAPACITY, HEAD_DIM]
    graph = helper.make_graph(
        nodes, "layer",
        [v("qkv", TensorProto.FLOAT, [1, "seq", PACKED]), v("position_ids", TensorProto.INT64, [1, "seq"]),
         v("attention_mask", TensorProto.FLOAT, [1, 1, "seq", "total"]),
         v("past.0.key", TensorProto.FLOAT, cache), v("past.0.value", TensorProto.FLOAT, cache)],
        [v("out", TensorProto.FLOAT, None), v("present.0.key", TensorProto.FLOAT, None),
         v("present.0.value", TensorProto.FLOAT, None)], [*tables, *ints])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 10
    return model


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def bound_step(sess: ort.InferenceSession, seen: int, grouped: bool, rng) -> tuple:
    """A one-token step after ``seen - 1`` positions, its cache bound in place as the runtime binds it."""
    binding = sess.io_binding()
    binding.bind_output("out")
    kept = [rng.standard_normal((1, 1, PACKED)).astype(np.float32), positions(seen - 1, 1), causal_mask(seen - 1, 1)]
    for name, array in zip(("qkv", "position_ids", "attention_mask"), kept):
        binding.bind_cpu_input(name, array)
    width = -(-seen // WIDTH_STEP) * WIDTH_STEP
    for name in ("key", "value"):
        if grouped:
            buffer = rng.standard_normal((CAPACITY, KV_HEADS, HEAD_DIM)).astype(np.float32)
            view = buffer[:width].reshape(width, 1, KV_HEADS, HEAD_DIM)
        else:
            buffer = view = rng.standard_normal((1, KV_HEADS, CAPACITY, HEAD_DIM)).astype(np.float32)
        kept.append(buffer)
        binding.bind_input(f"past.0.{name}", "cpu", 0, np.float32, view.shape, view.ctypes.data)
        binding.bind_output(f"present.0.{name}", "cpu", 0, np.float32, view.shape, view.ctypes.data)
    return sess, binding, kept


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--positions", type=int, nargs="+", default=[128, 300, 700])
    args = parser.parse_args()
    rewritten = layer(padded=False)
    assert grouped_attention.rewrite(rewritten, HEAD_DIM, "position_ids", "attention_mask")
    sessions = {"one row (not exact)": (session(layer(False)), False), "padded": (session(layer(True)), False),
                "grouped": (session(rewritten), True)}
    rng = np.random.default_rng(1)
    for seen in args.positions:
        steps = {name: bound_step(sess, seen, grouped, rng) for name, (sess, grouped) in sessions.items()}
        times = {name: [] for name in steps}
        names = list(steps)
        for round_ in range(8):
            for name in names[round_ % len(names):] + names[:round_ % len(names)]:
                sess, binding, _ = steps[name]
                for _ in range(20):
                    sess.run_with_iobinding(binding)
                for _ in range(10):
                    start = time.perf_counter()
                    for _ in range(20):
                        sess.run_with_iobinding(binding)
                    times[name].append((time.perf_counter() - start) / 20 * 1e6)
        print(f"{seen} positions: " + ", ".join(f"{name} {np.median(t):.1f} us" for name, t in times.items()))


if __name__ == "__main__":
    main()
