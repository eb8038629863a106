"""What an early-exit head costs per row: hidden size x vocabulary MatMul, LogSoftmax and TopK,
as an ONNX graph on ONNX Runtime's CPU provider, for the whole vocabulary and for the draft's.

    python docs/exit_head_cost.py            # SmolLM2: 576 x 49,152 against 576 x 8,192, one thread
"""

import argparse
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper


def head_session(hidden: int, vocab: int, kappa: int, threads: int) -> ort.InferenceSession:
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array((rng.standard_normal((hidden, vocab)) * 0.02).astype(np.float32), "weight")
    k = numpy_helper.from_array(np.array([kappa], np.int64), "k")
    nodes = [helper.make_node("MatMul", ["hidden", "weight"], ["logits"]),
             helper.make_node("LogSoftmax", ["logits"], ["logprobs"], axis=-1),
             helper.make_node("TopK", ["logprobs", "k"], ["values", "ids"])]
    graph = helper.make_graph(nodes, "exit_head", [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, [1, hidden])],
                              [helper.make_tensor_value_info("values", TensorProto.FLOAT, None),
                               helper.make_tensor_value_info("ids", TensorProto.INT64, None)], [weight, k])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=576)
    parser.add_argument("--vocab", type=int, nargs="+", default=[49152, 8192])
    parser.add_argument("--kappa", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    x = np.random.default_rng(1).standard_normal((1, args.hidden)).astype(np.float32)
    for vocab in args.vocab:
        session = head_session(args.hidden, vocab, args.kappa, args.threads)
        for _ in range(20):
            session.run(None, {"hidden": x})
        start = time.perf_counter()
        for _ in range(args.calls):
            session.run(None, {"hidden": x})
        print(f"{args.hidden} x {vocab}: {(time.perf_counter() - start) / args.calls * 1000:.2f} ms per row "
              f"({args.threads} thread(s), MatMul + LogSoftmax + TopK {args.kappa})")


if __name__ == "__main__":
    main()
