"""One decode step of the graphs alone: mirror-ort's fused target beside onnxruntime-genai's graph.

The bench and the op profile time whole steps with the Python around them, and the profiler adds
its own cost per op. This times only ``run_with_iobinding`` of a bound one-token step, on a
cache of the prompt's length, rerun in place (the step writes the same cache position each
time): mirror-ort's fused target as ``ar`` runs it (the bundle's own exactness rule, filler row
or padded attention), and onnxruntime-genai's ``model.onnx`` loaded into plain ONNX Runtime
sessions bound the way onnxruntime-genai binds it (past and present K/V one buffer). The rows
take turns in blocks of steps, so a drift of the host falls on all of them alike.

Each side is loaded twice, into two identical sessions (mirror-ort's first and last, onnxruntime-
genai's between them): the spread between two identical sessions is what the placement of a
session's memory alone moves a step on this host, the noise floor of any comparison between two
sessions.

    python docs/graph_step_vs_genai.py bundles/smollm2-int4 GENAI_MODEL_DIR [--prompt-tokens 128] [--one-row]
        [--compare OTHER_BUNDLE]

``--compare`` adds another export of the same model (an older one, say), also loaded twice: a
before and after in one process.

GENAI_MODEL_DIR is onnxruntime-genai's build of the same model at the same precision (the bench
builds and caches it under ~/.cache/mirror-ort/genai/). Prints the median and the 10th
percentile of a step per row, in ms.
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from mirror_ort.runtime.pipeline import Pipeline
from mirror_ort.runtime.stats import Stats

BLOCK, ROUNDS = 40, 12


def genai_step(model_dir: Path, prompt_tokens: int, threads: int):
    """A plain ONNX Runtime session over onnxruntime-genai's graph, bound for one-token steps after
    a prompt of ``prompt_tokens`` (prefilled through the same binding)."""
    config = json.loads((model_dir / "genai_config.json").read_text())["model"]
    decoder = config["decoder"]
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(model_dir / decoder["filename"]), options, providers=["CPUExecutionProvider"])
    capacity = prompt_tokens + 8
    caches = [np.zeros((1, decoder["num_key_value_heads"], capacity, decoder["head_size"]), np.float32)
              for _ in range(2 * decoder["num_hidden_layers"])]
    binding, kept = session.io_binding(), [caches]

    def bind(seq: int, total: int) -> None:
        ids, mask = np.full((1, seq), 42, np.int64), np.ones((1, total), np.int64)
        logits = np.empty((1, seq, config["vocab_size"]), np.float32)
        kept.append((ids, mask, logits))
        binding.bind_cpu_input("input_ids", ids)
        binding.bind_cpu_input("attention_mask", mask)
        for i, cache in enumerate(caches):
            layer, kind = divmod(i, 2)
            name = ("key", "value")[kind]
            binding.bind_input(f"past_key_values.{layer}.{name}", "cpu", 0, np.float32, cache.shape, cache.ctypes.data)
            binding.bind_output(f"present.{layer}.{name}", "cpu", 0, np.float32, cache.shape, cache.ctypes.data)
        binding.bind_output("logits", "cpu", 0, np.float32, logits.shape, logits.ctypes.data)

    bind(prompt_tokens, prompt_tokens)
    session.run_with_iobinding(binding)
    bind(1, prompt_tokens + 1)
    session.run_with_iobinding(binding)

    def step():
        return session.run_with_iobinding(binding), kept  # the bound arrays live as long as the step
    return step


def mirror_ort_step(bundle: str, prompt_tokens: int, threads: int, one_row: bool = False):
    """The fused target bound for a one-token step after ``prompt_tokens`` (as ``ar`` binds it);
    ``one_row``: a lone token without the filler row, which is not exact (for the measurement only)."""
    pipe = Pipeline.from_bundle(bundle, target_threads=threads, load_draft=False)
    target = pipe.target(Stats())
    if one_row:
        target.min_rows = 1
    target.score(list(range(100, 100 + prompt_tokens)), greedy=True, prefill=True)
    target.score([42], greedy=True)
    target.truncate(prompt_tokens)
    session = target.fused_session or target.suffix_session
    ids, window = target._padded(prompt_tokens, [42])  # bound for good: the rerun reads these arrays
    head_rows = np.zeros(target.min_rows, np.int64)
    session._bind_window(ids, *window, head_rows)

    def step():
        return session.session.run_with_iobinding(session.binding), ids, window, head_rows
    return step


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("bundle")
    parser.add_argument("genai_dir", type=Path)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--one-row", action="store_true",
                        help="add a row for the bundle with a lone token scored on one row: what the exactness "
                             "rule costs (not lossless; with a bundle whose graphs do not pad their attention)")
    parser.add_argument("--compare", help="another bundle of the same model, timed beside (before and after)")
    args = parser.parse_args()
    rows = {"mirror-ort": mirror_ort_step(args.bundle, args.prompt_tokens, args.threads),
            "genai graph": genai_step(args.genai_dir, args.prompt_tokens, args.threads),
            "genai graph again": genai_step(args.genai_dir, args.prompt_tokens, args.threads),
            "mirror-ort again": mirror_ort_step(args.bundle, args.prompt_tokens, args.threads)}
    if args.compare:
        rows["compared"] = mirror_ort_step(args.compare, args.prompt_tokens, args.threads)
        rows["compared again"] = mirror_ort_step(args.compare, args.prompt_tokens, args.threads)
    if args.one_row:
        rows["mirror-ort one row"] = mirror_ort_step(args.bundle, args.prompt_tokens, args.threads, one_row=True)
    names, times = list(rows), {name: [] for name in rows}
    for r in range(ROUNDS):
        for name in names[r % len(names):] + names[:r % len(names)]:
            for i in range(BLOCK + 2):
                start = time.perf_counter()
                rows[name]()
                if i >= 2:
                    times[name].append(time.perf_counter() - start)
    base = np.median(times["genai graph"] + times["genai graph again"])
    for name, t in times.items():
        print(f"{name:19s} median {np.median(t) * 1000:6.2f} ms, p10 {np.percentile(t, 10) * 1000:6.2f} ms, "
              f"speed vs the genai graph {base / np.median(t):.3f}x")


if __name__ == "__main__":
    main()
