"""Self-distillation data: the target's own continuations of the built-in prompts, with the
target's next-token distribution (Top-k log-probs) at every generated position.

Why the target's own output: speculative decoding only ever asks the draft to
predict what the target is about to say, so that is the text to learn from; and
the distribution at each position comes free with generation.

Each prompt (chat template applied) gets one greedy continuation, the case the
acceptance targets are measured on, plus ``samples_per_prompt`` sampled ones for
variety (held-out prompts get only the greedy one: they are for measuring).
Generation runs in batches; each batch is cached as a safetensors shard under
``DIR/data/``, so an interrupted run resumes, and a finished one is reused.
"""

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..errors import MirrorError
from .prompts import Prompt

DATA_DIR = "data"
PLAN = "plan.json"


@dataclass
class DataOptions:
    samples_per_prompt: int = 1
    max_new_tokens: int = 160
    temperature: float = 0.8
    top_k: int = 16  # soft-target size kept per position
    batch_size: int = 16


@dataclass
class Continuation:
    """One prompt + continuation. ``topk_ids[c]``/``topk_logprobs[c]`` are the target's
    distribution over the token at position ``prompt_length + c``."""

    prompt_index: int
    greedy: bool
    tokens: torch.Tensor  # [length] int64: prompt then continuation
    prompt_length: int
    topk_ids: torch.Tensor  # [length - prompt_length, k] int64
    topk_logprobs: torch.Tensor  # [length - prompt_length, k] float32


def prompt_ids(tokenizer, prompt: Prompt) -> list[int]:
    """The prompt as the runtime will see it: one user turn with the chat template."""
    if getattr(tokenizer, "chat_template", None):
        return list(tokenizer.apply_chat_template([{"role": "user", "content": prompt.text}], add_generation_prompt=True))
    return tokenizer(prompt.text, add_special_tokens=True)["input_ids"]


def generate_data(target, tokenizer, prompts: list[Prompt], directory: Path, options: DataOptions, seed: int,
                  progress=None) -> list[Continuation]:
    """Generate (or reuse) the cached data in ``directory``; returns every continuation."""
    directory = Path(directory) / DATA_DIR
    directory.mkdir(parents=True, exist_ok=True)
    encoded = [prompt_ids(tokenizer, p) for p in prompts]
    batches = _plan(prompts, encoded, options)
    plan = {"options": asdict(options), "seed": seed, "prompts": len(prompts), "batches": len(batches)}
    plan_file = directory / PLAN
    if plan_file.exists() and json.loads(plan_file.read_text()) != plan:
        raise MirrorError(f"{directory} holds data generated with other settings: use a new output dir or --force")
    plan_file.write_text(json.dumps(plan, indent=2))
    eos = tokenizer.eos_token_id
    for index, (greedy, members) in enumerate(batches):
        shard = directory / f"batch-{index:04d}.safetensors"
        if not shard.exists():
            torch.manual_seed(seed * 100_003 + index)
            rows = _generate(target, [encoded[i] for i in members], greedy, eos, options)
            _save_shard(shard, members, greedy, rows)
        if progress:
            progress(index + 1, len(batches))
    return load_data(directory.parent)


def load_data(directory: Path) -> list[Continuation]:
    from safetensors.torch import load_file

    out = []
    for shard in sorted((Path(directory) / DATA_DIR).glob("batch-*.safetensors")):
        t = load_file(str(shard))
        for r in range(len(t["prompt_index"])):
            length, plen = int(t["lengths"][r]), int(t["prompt_lengths"][r])
            out.append(Continuation(int(t["prompt_index"][r]), bool(t["greedy"][r]), t["tokens"][r, :length].long(), plen,
                                    t["topk_ids"][r, : length - plen].long(), t["topk_logprobs"][r, : length - plen].float()))
    return out


def _plan(prompts, encoded, options: DataOptions) -> list[tuple[bool, list[int]]]:
    """Batches of similar prompt lengths (less padding): greedy ones for every prompt,
    then the sampled ones for training prompts."""
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    jobs = [(True, i) for i in order]
    jobs += [(False, i) for _ in range(options.samples_per_prompt) for i in order if not prompts[i].held_out]
    batches = []
    for greedy in (True, False):
        members = [i for g, i in jobs if g == greedy]
        batches += [(greedy, members[s:s + options.batch_size]) for s in range(0, len(members), options.batch_size)]
    return batches


@torch.no_grad()
def _generate(target, prompts: list[list[int]], greedy: bool, eos: int, options: DataOptions):
    """Left-padded batched generation; returns per row (tokens, prompt_length, topk ids, topk logprobs)."""
    width = max(len(p) for p in prompts)
    input_ids = torch.tensor([[eos] * (width - len(p)) + p for p in prompts])
    attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    sampling = {"do_sample": False} if greedy else {"do_sample": True, "temperature": options.temperature, "top_p": 0.95, "top_k": 0}
    input_ids, attention = input_ids.to(target.device), attention.to(target.device)
    out = target.generate(input_ids=input_ids, attention_mask=attention, max_new_tokens=options.max_new_tokens,
                          eos_token_id=eos, pad_token_id=eos, output_logits=True, return_dict_in_generate=True,
                          **sampling)
    logprobs = torch.log_softmax(torch.stack(out.logits, dim=1).float(), dim=-1)  # [B, T, V]
    top_lp, top_ids = (t.cpu() for t in torch.topk(logprobs, options.top_k, dim=-1))
    sequences = out.sequences.cpu()
    rows = []
    for r, prompt in enumerate(prompts):
        new = sequences[r, width:]
        ends = (new == eos).nonzero()
        n = int(ends[0]) + 1 if len(ends) else len(new)
        rows.append((torch.tensor(prompt + new[:n].tolist()), len(prompt), top_ids[r, :n], top_lp[r, :n]))
    return rows


def _save_shard(path: Path, members: list[int], greedy: bool, rows) -> None:
    from safetensors.torch import save_file

    width = max(len(t) for t, *_ in rows)
    span = max(len(ids) for _, _, ids, _ in rows)
    k = rows[0][2].shape[-1]
    tokens = torch.zeros(len(rows), width, dtype=torch.int32)
    topk_ids = torch.zeros(len(rows), span, k, dtype=torch.int32)
    topk_lp = torch.zeros(len(rows), span, k, dtype=torch.float16)
    for r, (t, _, ids, lp) in enumerate(rows):
        tokens[r, : len(t)] = t
        topk_ids[r, : len(ids)] = ids
        topk_lp[r, : len(lp)] = lp
    tmp = path.with_suffix(".tmp")
    save_file({"prompt_index": torch.tensor(members, dtype=torch.int32),
               "greedy": torch.full((len(rows),), int(greedy), dtype=torch.int8),
               "lengths": torch.tensor([len(t) for t, *_ in rows], dtype=torch.int32),
               "prompt_lengths": torch.tensor([p for _, p, *_ in rows], dtype=torch.int32),
               "tokens": tokens, "topk_ids": topk_ids, "topk_logprobs": topk_lp}, str(tmp))
    tmp.rename(path)  # a shard is either whole or absent
