"""Does attention written as plain ops compute a query row alike alone and inside a window?

The exactness rule (``runtime/target.py``) costs mirror-ort's target a second attention row per
lone token, because GroupQueryAttention takes another path for one query row. This measures the
two ways one might write attention instead, on random K/V (9 heads of 64, 2 threads):

* plain MatMul/Softmax: row 0 of a two-row call against a one-row call;
* rows as a batch of one-row products (each row takes the one-row path, with its causal mask):
  each row of a window against the same token scored alone on its own cache length.

    python docs/attention_rows.py

Prints the largest difference per case (0.0 is exact) and the plain form's cost for one row and two.
"""
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

HEADS, HEAD_DIM = 9, 64


def attention_session(rows_as_batch: bool) -> ort.InferenceSession:
    q_shape = ["R", HEADS, 1, HEAD_DIM] if rows_as_batch else [1, HEADS, "S", HEAD_DIM]
    mask_shape = ["R", 1, 1, "T"] if rows_as_batch else [1, 1, "S", "T"]
    graph = helper.make_graph([
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["q", "kt"], ["scores"]),
        helper.make_node("Mul", ["scores", "scale"], ["scaled"]),
        helper.make_node("Add", ["scaled", "mask"], ["masked"]),
        helper.make_node("Softmax", ["masked"], ["probs"], axis=-1),
        helper.make_node("MatMul", ["probs", "v"], ["out"])], "attention",
        [helper.make_tensor_value_info("q", TensorProto.FLOAT, q_shape),
         helper.make_tensor_value_info("k", TensorProto.FLOAT, [1, HEADS, "T", HEAD_DIM]),
         helper.make_tensor_value_info("v", TensorProto.FLOAT, [1, HEADS, "T", HEAD_DIM]),
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


if __name__ == "__main__":
    main()
