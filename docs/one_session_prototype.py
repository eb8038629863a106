"""Measurement for the next step of target-only speed: prefix and suffix as one session.

Merges a bundle's prefix.onnx and suffix.onnx in memory into one graph (the prefix's hidden
state feeds the suffix; the early-exit head, which target-only decoding does not need, is
pruned; no file of the bundle changes), then times one-token decode steps through the one
session and through the two, with I/O binding on the same K/V buffers, and checks that both
compute the same logits bit for bit.

    python docs/one_session_prototype.py bundles/smollm2-int4

Prints ms per decode step for each way, four alternating repetitions of 100 steps.
"""
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from mirror_ort.bundle import Bundle
from mirror_ort.runtime.masks import causal_mask, positions

CAPACITY, START, STEPS = 300, 128, 100


def merged_target(bundle: Bundle) -> onnx.ModelProto:
    prefix, suffix = (onnx.load(str(bundle.graph(role).path)) for role in ("prefix", "suffix"))
    shared = ({"position_ids", "attention_mask", "head_rows", "hidden", "logits", "next_ids"}
              | {v.name for v in [*suffix.graph.input, *suffix.graph.output] if v.name.startswith(("past.", "present."))})
    renamed = {}

    def rename(name):
        return name if not name or name in shared else renamed.setdefault(name, "suffix/" + name)
    for node in suffix.graph.node:
        node.input[:] = [rename(n) for n in node.input]
        node.output[:] = [rename(n) for n in node.output]
        node.name = "suffix/" + node.name
    for initializer in suffix.graph.initializer:
        initializer.name = rename(initializer.name)
    pasts = [v for v in suffix.graph.input if v.name.startswith("past.")]
    graph = helper.make_graph(
        [*prefix.graph.node, *suffix.graph.node], "target",
        [v for v in prefix.graph.input if v.name != "head_rows"] + pasts + [v for v in suffix.graph.input if v.name == "head_rows"],
        [v for v in suffix.graph.output if v.name in ("logits", "next_ids")]
        + [v for v in [*prefix.graph.output, *suffix.graph.output] if v.name.startswith("present.")],
        [*prefix.graph.initializer, *suffix.graph.initializer])
    needed, kept = {v.name for v in graph.output}, []
    for node in reversed(list(graph.node)):  # prune what no output needs: the early-exit head
        if any(name in needed for name in node.output):
            kept.append(node)
            needed |= set(node.input)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    model = helper.make_model(graph, opset_imports=prefix.opset_import)
    model.ir_version = prefix.ir_version
    return model


def session(model):
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 2, 1
    options.add_session_config_entry("session.force_spinning_stop", "1")
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def bind(binding, name, array):
    binding.bind_input(name, "cpu", 0, array.dtype, array.shape, array.ctypes.data)


def bind_out(binding, name, array):
    binding.bind_output(name, "cpu", 0, array.dtype, array.shape, array.ctypes.data)


def main(path):
    bundle = Bundle.load(path, verify=False)
    spec = bundle.graph("prefix")
    one = session(merged_target(bundle).SerializeToString())
    prefix, suffix = session(str(spec.path)), session(str(bundle.graph("suffix").path))
    caches = {f"past.{i}.{t}": np.zeros((1, spec.num_kv_heads, CAPACITY, spec.head_dim), np.float32)
              for i in range(bundle.manifest.model.num_layers) for t in ("key", "value")}
    sessions = {"one": one, "prefix": prefix, "suffix": suffix}
    bindings = {}
    for name, s in sessions.items():
        b = bindings[name] = s.io_binding()
        for i in s.get_inputs():
            if i.name in caches:
                bind(b, i.name, caches[i.name])
                bind_out(b, i.name.replace("past.", "present."), caches[i.name])
    logits = np.zeros((1, 1, bundle.vocab_size), np.float32)
    hidden = np.zeros((1, 1, bundle.manifest.model.hidden_size), np.float32)
    next_ids = np.zeros((1, 1), np.int64)
    exit_ids, exit_logprobs = np.zeros((1, 0, bundle.kappa), np.int64), np.zeros((1, 0, bundle.kappa), np.float32)
    ids = np.random.default_rng(0).integers(100, 5000, START + STEPS)

    def run(name, inputs, outputs):
        b = bindings[name]
        for input_name, array in inputs.items():
            bind(b, input_name, array)
        for output_name, array in outputs.items():
            bind_out(b, output_name, array)
        sessions[name].run_with_iobinding(b)

    def step(way, position):
        window = {"position_ids": positions(position, 1), "attention_mask": causal_mask(position, 1)}
        head = {"logits": logits, "next_ids": next_ids}
        token, row = np.array([[ids[position]]]), np.array([0])
        if way == "one":
            run("one", {"input_ids": token, **window, "head_rows": row}, head)
            return
        run("prefix", {"input_ids": token, **window, "head_rows": np.zeros(0, np.int64)},
            {"hidden": hidden, "exit_ids": exit_ids, "exit_logprobs": exit_logprobs})
        run("suffix", {"hidden": hidden, **window, "head_rows": row}, head)

    times, seen = {"one": [], "two": []}, {"one": [], "two": []}
    for repetition in range(4):
        for way in ("one", "two"):
            start = time.perf_counter()
            for position in range(START, START + STEPS):
                step(way, position)
                if repetition == 0:
                    seen[way].append(logits.copy())
            times[way].append((time.perf_counter() - start) / STEPS * 1000)
    exact = all(np.array_equal(a, b) for a, b in zip(seen["one"], seen["two"]))
    print({way: [round(t, 2) for t in ts] for way, ts in times.items()}, "ms per step; bit-exact:", exact)


if __name__ == "__main__":
    main(sys.argv[1])
