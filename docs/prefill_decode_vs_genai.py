"""Prefill and decode apart: mirror-ort's ``ar`` beside onnxruntime-genai on the same token ids.

The bench times whole generations; this splits each one into its prefill (mirror-ort: the
``prefill`` timer; onnxruntime-genai: ``append_tokens``) and its decode steps, one SpecBench prompt
per category (chat template), interleaved prompt by prompt, 2 threads:

    python docs/prefill_decode_vs_genai.py bundles/smollm2-int4 GENAI_MODEL_DIR [--categories rag,writing]

GENAI_MODEL_DIR is onnxruntime-genai's build of the same model at the same precision (the bench
builds and caches it under ~/.cache/mirror-ort/genai/). Prints per prompt: prompt length, prefill
ms, decode ms per token, for each.
"""
import argparse
import json
import time

import numpy as np

from mirror_ort.bench.dataset import load_prompts
from mirror_ort.runtime.pipeline import Pipeline

NEW_TOKENS = 96


def main() -> None:
    import onnxruntime_genai as og

    parser = argparse.ArgumentParser()
    parser.add_argument("bundle")
    parser.add_argument("genai_dir")
    parser.add_argument("--dataset", default="../shared/data/spec_bench/question.jsonl")
    parser.add_argument("--categories", default=None)
    args = parser.parse_args()
    pipe = Pipeline.from_bundle(args.bundle, target_threads=2, load_draft=False)
    eos = list(pipe.bundle.eos_token_ids)
    config = og.Config(args.genai_dir)
    session = {"intra_op_num_threads": 2, "inter_op_num_threads": 1}
    config.overlay(json.dumps({"model": {"eos_token_id": eos if len(eos) > 1 else eos[0], "pad_token_id": eos[0],
                                         "decoder": {"session_options": session}}}))
    model = og.Model(config)

    def ours(ids):
        pipe.forget()
        start = time.perf_counter()
        result = pipe.generate(list(ids), method="ar", max_new_tokens=NEW_TOKENS, temperature=0.0)
        total = time.perf_counter() - start
        prefill = result.stats["seconds"]["prefill"]
        return prefill, total - prefill, len(result.token_ids)

    def genai(ids):
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=len(ids) + NEW_TOKENS, min_length=0, do_sample=False, top_k=1)
        start = time.perf_counter()
        generator = og.Generator(model, params)
        generator.append_tokens(np.asarray(ids, dtype=np.int32))
        prefilled = time.perf_counter()
        while not generator.is_done() and len(generator.get_sequence(0)) < len(ids) + NEW_TOKENS:
            generator.generate_next_token()
        done = time.perf_counter()
        return prefilled - start, done - prefilled, len(generator.get_sequence(0)) - len(ids)

    categories = args.categories.split(",") if args.categories else None
    totals = {"mirror-ort": [0.0, 0.0, 0], "genai": [0.0, 0.0, 0]}
    for prompt in load_prompts(args.dataset, per_category=1, categories=categories):
        ids = pipe.tokenizer.chat([{"role": "user", "content": prompt.turns[0]}])
        line = f"{prompt.category:15s} {len(ids):5d} tokens"
        for name, way in (("mirror-ort", ours), ("genai", genai)):
            prefill, decode, new = way(ids)
            per_token = decode / max(new - 1, 1) * 1000
            line += f"  {name}: prefill {prefill * 1000:7.1f} ms, decode {per_token:6.2f} ms/token"
            totals[name][0] += prefill
            totals[name][1] += decode
            totals[name][2] += max(new - 1, 0)
        print(line, flush=True)
    for name, (prefill, decode, steps) in totals.items():
        print(f"{name}: prefill {prefill:.2f} s in all, decode {decode / max(steps, 1) * 1000:.2f} ms/token")


if __name__ == "__main__":
    main()
