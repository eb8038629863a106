"""Peer ``hf``: transformers ``generate`` in PyTorch (float32, the bundle's source weights),
and ``hf-assisted``: assisted generation with the bundle's draft as ``assistant_model``.

Assisted generation drafts ``--gamma`` tokens per step (``num_assistant_tokens``, constant
schedule) and keeps transformers' other defaults (``assistant_confidence_threshold`` 0.4
may end a window early). PyTorch's intra-op threads are set before every generation,
since rows with different allocations take turns in one process.
"""

import time

from ..generation import GenerationConfig
from .alloc import Allocation
from .requirements import require
from .rows import Generation, Row, Skipped, peer_window


class HFRow(Row):
    def __init__(self, name, method, alloc: Allocation, model, assistant, eos: list[int], notes: list[str]):
        import torch
        import transformers

        threads = {"torch": alloc.target_threads}
        runtime = f"transformers {transformers.__version__} on torch {torch.__version__} cpu, float32"
        super().__init__(name, method, alloc, threads, runtime, notes)
        self.model, self.assistant, self.eos = model, assistant, eos
        self.calls = 0
        self._hook = model.register_forward_pre_hook(self._count)

    def _count(self, module, args):
        self.calls += 1

    def _config(self, s: GenerationConfig):
        from transformers import GenerationConfig as HFGenerationConfig

        kw = dict(max_new_tokens=s.max_new_tokens, eos_token_id=self.eos, pad_token_id=self.eos[0], num_beams=1)
        if s.greedy:
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kw.update(do_sample=True, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k or None)
        return HFGenerationConfig(**kw)

    def generate(self, ids, s: GenerationConfig) -> Generation:
        import torch

        torch.set_num_threads(self.threads["torch"])
        torch.manual_seed(s.seed)
        input_ids = torch.tensor([list(ids)], dtype=torch.long)
        kw = {"attention_mask": torch.ones_like(input_ids)}
        if self.assistant is not None:
            self.assistant.generation_config.num_assistant_tokens = peer_window(s)
            self.assistant.generation_config.num_assistant_tokens_schedule = "constant"
            kw["assistant_model"] = self.assistant
        self.calls = 0
        config = self._config(s)
        with torch.inference_mode():
            start = time.perf_counter()
            out = self.model.generate(input_ids, generation_config=config, **kw)
            seconds = time.perf_counter() - start
        return Generation(out[0, len(ids):].tolist(), seconds, self.calls)

    def close(self):
        self._hook.remove()


def hf_row(assisted: bool):
    def make(ctx, alloc: Allocation) -> Row:
        require("torch", "transformers", purpose="the hf peer")
        model, _ = ctx.peers.target()
        assistant, notes = None, [f"target = {ctx.peers.source_spec} in PyTorch float32"]
        if assisted:
            assistant, note = ctx.peers.draft()
            notes.append(note)
        eos = list(ctx.bundle.eos_token_ids)
        if not eos:
            raise Skipped("the bundle names no eos token")
        name = ("hf-assisted" if assisted else "hf") + alloc.suffix
        return HFRow(name, "hf-assisted" if assisted else "hf", alloc, model, assistant, eos, notes)
    return make
