"""Peer ``ort-genai``: onnxruntime-genai on the same target (its own model builder, same
precision, see ``genai_build``), plain greedy/sampled decoding; and ``ort-genai-sd``: its
draft-model speculative decoding with the bundle's draft (``model.draft`` in
genai_config, ``max_draft_tokens`` = ``--gamma``, at most 16).

Prompts go in as token ids (the bundle's tokenizer and chat template), so every row
sees the same ids; onnxruntime-genai's tokenizer is not used. Threads, eos and the
draft are set through ``Config.overlay`` at load time, so one cached build serves every
allocation. onnxruntime-genai runs the draft and the target one after the other, so
``split`` gives both sessions one thread.
"""

import json
import time

from ..generation import GenerationConfig
from .alloc import Allocation
from .requirements import require
from .rows import Generation, Row, Skipped, peer_window

MAX_DRAFT_TOKENS = 16  # onnxruntime-genai's limit


class GenaiRow(Row):
    def __init__(self, name, method, alloc: Allocation, target_dir, draft_rel: str | None, eos: list[int],
                 vocab_size: int, notes: list[str]):
        import onnxruntime_genai as og

        from .genai_build import _version

        threads = {"target": alloc.target_threads}
        if draft_rel:
            threads["draft"] = alloc.target_threads  # sessions alternate: the draft gets the same cores
        super().__init__(name, method, alloc, threads, f"onnxruntime-genai {_version()} cpu", notes)
        session = {"intra_op_num_threads": alloc.target_threads, "inter_op_num_threads": 1}
        model = {"eos_token_id": eos if len(eos) > 1 else eos[0], "pad_token_id": eos[0],
                 "decoder": {"session_options": session}}
        if draft_rel:
            draft_config = json.loads((target_dir / draft_rel / "genai_config.json").read_text())["model"]["decoder"]
            model["draft"] = {**draft_config, "filename": f"{draft_rel}/{draft_config['filename']}",
                              "session_options": {**draft_config.get("session_options", {}), **session}}
        # Sliding-window models (Gemma 3) need a KV cache of at least the window: generations then
        # ask for that capacity and stop at --max-new-tokens themselves.
        window = json.loads((target_dir / "genai_config.json").read_text())["model"]["decoder"].get("sliding_window")
        self.min_capacity = int(window["window_size"]) if window else 0
        config = og.Config(str(target_dir))
        config.overlay(json.dumps({"model": model}))
        try:
            self.model = og.Model(config)
        except Exception as e:  # onnxruntime-genai raises RuntimeError/OgaError with a message
            raise Skipped(f"onnxruntime-genai could not load {target_dir}: {str(e).strip().splitlines()[0]}") from None
        self.og, self.speculative, self.vocab_size = og, draft_rel is not None, vocab_size

    def generate(self, ids, s: GenerationConfig) -> Generation:
        import numpy as np

        og = self.og
        params = og.GeneratorParams(self.model)
        options = dict(max_length=max(len(ids) + s.max_new_tokens, self.min_capacity), min_length=0, num_beams=1,
                       repetition_penalty=1.0)
        if s.greedy:
            options.update(do_sample=False, top_k=1)
        else:
            options.update(do_sample=True, temperature=s.temperature, top_p=s.top_p,
                           top_k=s.top_k or self.vocab_size, random_seed=s.seed)
        params.set_search_options(**options)
        if self.speculative:
            params.set_speculative_options(max_draft_tokens=min(peer_window(s), MAX_DRAFT_TOKENS))
        start = time.perf_counter()
        generator = og.Generator(self.model, params)
        generator.append_tokens(np.asarray(ids, dtype=np.int32))
        stop = len(ids) + s.max_new_tokens
        while not generator.is_done() and len(generator.get_sequence(0)) < stop:
            generator.generate_next_token()
        sequence = generator.get_sequence(0)
        seconds = time.perf_counter() - start
        new = [int(t) for t in sequence[len(ids):stop]]
        if self.speculative:
            calls = 1 + int(generator.get_speculative_stats().get("target_forward_passes", 0))  # + the prompt
        else:
            calls = len(new)
        return Generation(new, seconds, calls)


def genai_row(speculative: bool):
    def make(ctx, alloc: Allocation) -> Row:
        require("onnxruntime_genai", purpose="the ort-genai peer")
        require("onnx_ir", "torch", "transformers", purpose="onnxruntime-genai's model builder")
        from .genai_build import PRECISIONS, build_draft, build_target

        if ctx.genai_precision not in PRECISIONS:
            raise Skipped(f"onnxruntime-genai's CPU model builder makes no {ctx.genai_precision} model: "
                          f"pass --genai-precision {', '.join(PRECISIONS)}")

        target_dir = build_target(ctx)
        notes = [f"built by onnxruntime-genai's model builder from {ctx.peers.source_spec}, {ctx.genai_precision}"]
        draft_rel = None
        if speculative:
            draft_rel = build_draft(ctx, target_dir)
            notes.append(ctx.peers.draft()[1])
        name = ("ort-genai-sd" if speculative else "ort-genai") + alloc.suffix
        return GenaiRow(name, "ort-genai-sd" if speculative else "ort-genai", alloc, target_dir, draft_rel,
                        list(ctx.bundle.eos_token_ids), ctx.bundle.vocab_size, notes)
    return make
