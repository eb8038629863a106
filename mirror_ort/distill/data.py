"""The data engine: the target's own continuations of thousands of prompts, with the target's
next-token distribution (Top-k log-probs) at every generated position.

Why the target's own output: speculative decoding only ever asks the draft to predict what
the target is about to say, so that is the text to learn from; and with greedy verification
the draft's context is always the target's text. Each prompt gets one greedy continuation
(the case acceptance is measured on) and ``samples_per_prompt`` sampled ones for variety.

Prompts: the built-in templates (``prompts``) plus what the target writes itself when asked for
questions and passages (a first, cached stage), minus anything the benchmark guard refuses.
They are shuffled once and cut into batches of similar length; every batch is one shard, so
the data grows in an order that covers every category from the start, and any prefix of the
shards is a fair sample (what the learning curve trains on).

The batches run through ``BatchedTarget``: the labels come from the same forward pass that
chose each token (one pass, no teacher-forced rerun). ``precision`` picks its matmuls:
float32, or bfloat16 where the CPU has native bf16 units (there about 1.7x float32's rate;
its Top-1 agrees with float32's on 98% of positions, measured in the docs).

On disk (``DIR``): ``data.json`` (format, the target it came from, the settings that shape
the data) and one ``shard-NNNNN.safetensors`` per batch, written whole or not at all. A run
resumes where it stopped and reuses what exists; another target's data, or data made with
other settings, is refused by name; a corrupt shard is named and made again.
"""

import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..errors import MirrorError
from ..prompts import (
    Prompt,
    built_in_prompts,
    prompts_from_self_written,
    self_written_seeds,
)
from .benchmark_guard import spec_bench_guard

FORMAT = "mirror-ort-distill-data/2"
MANIFEST = "data.json"
SELF_WRITTEN = "self-written.json"
SHARD = "shard-{:05d}.safetensors"


@dataclass
class DataOptions:
    samples_per_prompt: int = 3      # sampled continuations per prompt, besides the greedy one
    max_new_tokens: int = 256
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 16                  # soft-target size kept per position
    batch_size: int = 256            # sequences per generation batch (one shard)
    precision: str = "fp32"          # "fp32" or "bf16" (BatchedTarget's matmuls)
    exit_layer: int | None = None    # also keep the hidden state after this many layers (exit adapters)
    self_written: int = 1500         # instructions asking the target for prompts and passages (0: none)
    max_prompt_tokens: int = 768

    def shaping(self) -> dict:
        """The settings that change what the data is (not how fast it is made)."""
        return {k: v for k, v in asdict(self).items() if k != "batch_size"}


@dataclass
class Continuation:
    """One prompt + continuation. ``topk_ids[c]``/``topk_logprobs[c]`` are the target's
    distribution over the token at position ``prompt_length + c``; ``exit_hidden[c]`` the hidden
    state after the exit layer at the position that predicted it."""

    prompt_index: int
    greedy: bool
    tokens: torch.Tensor  # [length] int64: prompt then continuation
    prompt_length: int
    topk_ids: torch.Tensor  # [length - prompt_length, k] int64
    topk_logprobs: torch.Tensor  # [length - prompt_length, k] float32
    exit_hidden: torch.Tensor | None = None  # [length - prompt_length, hidden] float16


@dataclass
class DataSet:
    prompts: list[Prompt]
    continuations: list[Continuation]

    def split(self) -> tuple[list[Continuation], list[Continuation]]:
        """(training continuations, greedy continuations of the held-out prompts)."""
        train = [c for c in self.continuations if not self.prompts[c.prompt_index].held_out]
        held = [c for c in self.continuations if self.prompts[c.prompt_index].held_out and c.greedy]
        return train, held

    @property
    def tokens(self) -> int:
        return sum(len(c.topk_ids) for c in self.continuations)


def target_identity(model) -> dict:
    """What identifies the target that wrote the data: its shape and weights, not where it was
    loaded from (the draft's embedding check uses the same hash)."""
    from ..export.draft_dir import embedding_sha256

    config = model.config
    return {"model_type": config.model_type, "num_layers": config.num_hidden_layers,
            "vocab_size": config.vocab_size, "embedding_sha256": embedding_sha256(model)}


class DataEngine:
    """Generates (or reuses) the shards of one data directory."""

    def __init__(self, directory: Path, model, render, decode, eos: set[int], identity: dict, options: DataOptions,
                 seed: int = 0, guard=None, log=print, evaluation_prompts: list[Prompt] | None = None):
        """``render(text)``: the ids of a one-turn chat prompt; ``decode(ids)``: text.

        ``evaluation_prompts``: make the target's answers to exactly these prompts, in order, for
        measuring a draft (a benchmark's, say): no guard, no self-written prompts, and the
        directory is marked so that training refuses it."""
        self.directory, self.model, self.render, self.decode, self.eos = Path(directory), model, render, decode, eos
        self.identity, self.options, self.seed, self.log = identity, options, seed, log
        self.guard = spec_bench_guard() if guard is None else guard
        self.evaluation_prompts = evaluation_prompts
        self._target = None

    # -- the contract of the directory -----------------------------------------------------
    def claim(self) -> None:
        """Create the directory, or check that what it holds was made by this target with these settings."""
        manifest = {"format": FORMAT, "purpose": "evaluation" if self.evaluation_prompts is not None else "training",
                    "target": self.identity, "options": self.options.shaping(), "seed": self.seed}
        file = self.directory / MANIFEST
        if file.exists():
            try:
                held = json.loads(file.read_text())
            except json.JSONDecodeError as e:
                raise MirrorError(f"{file} is not valid JSON ({e}): delete the data directory or use another --data") from None
            _same(held, manifest, self.directory)
            return
        if self.directory.exists() and any(self.directory.iterdir()):
            raise MirrorError(f"{self.directory} is not empty and holds no {MANIFEST}: give --data an empty "
                              "or new directory")
        self.directory.mkdir(parents=True, exist_ok=True)
        file.write_text(json.dumps(manifest, indent=2) + "\n")

    # -- prompts ---------------------------------------------------------------------------
    def prompts(self) -> list[Prompt]:
        """Built-in and self-written prompts the guard lets through, in the shards' order."""
        if self.evaluation_prompts is not None:
            return list(self.evaluation_prompts)
        prompts = built_in_prompts() + prompts_from_self_written(self._self_written(), self.seed)
        kept = [p for p in prompts if not self.guard.contaminated(p.text)]
        if len(kept) < len(prompts):
            self.log(f"benchmark guard: dropped {len(prompts) - len(kept)} prompt(s) that overlap SpecBench")
        limit = min(self.options.max_prompt_tokens,
                    self.model.config.max_position_embeddings - self.options.max_new_tokens)
        kept = [p for p in kept if len(self.render(p.text)) <= limit]
        random.Random(self.seed).shuffle(kept)
        return kept

    def _self_written(self) -> list[tuple[str, str]]:
        """What the target wrote when asked for questions and passages (cached in the directory)."""
        file = self.directory / SELF_WRITTEN
        if file.exists():
            return [tuple(x) for x in json.loads(file.read_text())]
        seeds = self_written_seeds(self.options.self_written, self.seed)
        if not seeds:
            return []
        written, started = [], time.perf_counter()
        generator = torch.Generator().manual_seed(self.seed)
        for start in range(0, len(seeds), self.options.batch_size):
            chunk = seeds[start:start + self.options.batch_size]
            out = self.target.generate([self.render(text) for _, text in chunk], [0.9] * len(chunk), 200, self.eos,
                                       top_k=1, top_p=self.options.top_p, generator=generator)
            written += [(kind, self.decode([t for t in o["tokens"].tolist() if t not in self.eos]))
                        for (kind, _), o in zip(chunk, out)]
            self.log(f"self-written prompts and passages: {len(written)}/{len(seeds)} "
                     f"({time.perf_counter() - started:.0f}s)")
        tmp = file.with_suffix(".tmp")
        tmp.write_text(json.dumps(written, ensure_ascii=False))
        tmp.replace(file)
        return written

    # -- shards ----------------------------------------------------------------------------
    def batches(self, prompts: list[Prompt]) -> list[list[int]]:
        """Prompt indices per shard: rounds of shuffled prompts, sorted by length within a round."""
        per_batch = max(1, self.options.batch_size // (1 + self.options.samples_per_prompt))
        round_size = per_batch * 16 if self.evaluation_prompts is None else len(prompts)
        lengths = [len(self.render(p.text)) for p in prompts]
        batches = []
        for start in range(0, len(prompts), round_size):
            members = sorted(range(start, min(start + round_size, len(prompts))), key=lambda i: lengths[i])
            batches += [members[s:s + per_batch] for s in range(0, len(members), per_batch)]
        return batches

    def run(self, max_tokens: int | None = None, progress=None) -> DataSet:
        """Fill the directory up to ``max_tokens`` labelled tokens (all prompts when None); return
        everything it holds. ``progress(new_tokens, total_tokens)`` after every shard."""
        self.claim()
        prompts = self.prompts()
        batches = self.batches(prompts)
        have = self._shard_tokens(len(batches))
        total = sum(have.values())
        for index, members in enumerate(batches):
            if max_tokens is not None and total >= max_tokens:
                break
            if index in have:
                continue
            rows = self._generate(prompts, members, index)
            _save_shard(self.directory / SHARD.format(index), rows)
            new = sum(len(o["tokens"]) for *_, o in rows)
            total += new
            if progress:
                progress(new, total)
        return DataSet(prompts, load_shards(self.directory))

    def _shard_tokens(self, count: int) -> dict[int, int]:
        """Labelled tokens of every readable shard; a corrupt one is named and will be made again."""
        have = {}
        for index in range(count):
            path = self.directory / SHARD.format(index)
            if not path.exists():
                continue
            try:
                have[index] = sum(len(c.topk_ids) for c in _load_shard(path))
            except MirrorError as e:
                self.log(f"{e}; making it again")
                path.unlink()
        return have

    def _generate(self, prompts: list[Prompt], members: list[int], index: int):
        copies = 1 + self.options.samples_per_prompt
        encoded = [self.render(prompts[i].text) for i in members]
        jobs = [(i, copy == 0) for i in members for copy in range(copies)]
        ids = [enc for enc in encoded for _ in range(copies)]
        temperatures = [0.0 if greedy else self.options.temperature for _, greedy in jobs]
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        out = self.target.generate(ids, temperatures, self.options.max_new_tokens, self.eos, self.options.top_k,
                                   self.options.top_p, self.options.exit_layer, generator)
        return [(i, greedy, prompt, o) for (i, greedy), prompt, o in zip(jobs, ids, out)]

    @property
    def target(self):
        if self._target is None:
            from .batched_target import BatchedTarget

            dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[self.options.precision]
            self._target = BatchedTarget(self.model, dtype=dtype)
        return self._target


def _same(held: dict, wanted: dict, directory: Path) -> None:
    """Refuse a data directory made by another target or with other settings, naming the difference."""
    if held.get("format") != FORMAT:
        raise MirrorError(f"{directory} holds data of format {held.get('format')!r}, this mirror-ort makes {FORMAT!r}: "
                          "use a new --data directory")
    if held.get("purpose", "training") != wanted["purpose"]:
        raise MirrorError(f"{directory} holds {held.get('purpose', 'training')} data, not {wanted['purpose']} data "
                          "(a benchmark's answers are never training data): use another --data directory")
    for key, value in wanted["target"].items():
        if held.get("target", {}).get(key) != value:
            raise MirrorError(f"{directory} holds data of another target ({key}: {held.get('target', {}).get(key)!r}, "
                              f"this target: {value!r}): use a new --data directory for this target")
    for key, value in {**wanted["options"], "seed": wanted["seed"]}.items():
        have = held.get("seed") if key == "seed" else held.get("options", {}).get(key)
        if have != value:
            raise MirrorError(f"{directory} holds data made with {key}={have!r}, this run asks for {value!r}: "
                              f"pass the same setting or use a new --data directory")


def _save_shard(path: Path, rows) -> None:
    from safetensors.torch import save_file

    width = max(len(prompt) + len(o["tokens"]) for _, _, prompt, o in rows)
    span = max(len(o["tokens"]) for *_, o in rows)
    k = rows[0][3]["ids"].shape[-1]
    tensors = {
        "prompt_index": torch.tensor([i for i, *_ in rows], dtype=torch.int32),
        "greedy": torch.tensor([int(g) for _, g, *_ in rows], dtype=torch.int8),
        "lengths": torch.tensor([len(p) + len(o["tokens"]) for _, _, p, o in rows], dtype=torch.int32),
        "prompt_lengths": torch.tensor([len(p) for _, _, p, _ in rows], dtype=torch.int32),
        "tokens": torch.zeros(len(rows), width, dtype=torch.int32),
        "topk_ids": torch.zeros(len(rows), span, k, dtype=torch.int32),
        "topk_logprobs": torch.zeros(len(rows), span, k, dtype=torch.float16),
    }
    exits = "exit_hidden" in rows[0][3]
    if exits:
        tensors["exit_hidden"] = torch.zeros(len(rows), span, rows[0][3]["exit_hidden"].shape[-1], dtype=torch.float16)
    for r, (_, _, prompt, o) in enumerate(rows):
        n = len(o["tokens"])
        tensors["tokens"][r, :len(prompt) + n] = torch.tensor(prompt + o["tokens"].tolist())
        tensors["topk_ids"][r, :n] = o["ids"]
        tensors["topk_logprobs"][r, :n] = o["logprobs"]
        if exits:
            tensors["exit_hidden"][r, :n] = o["exit_hidden"]
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp))
    tmp.replace(path)  # a shard is either whole or absent


def _load_shard(path: Path) -> list[Continuation]:
    from safetensors.torch import load_file

    try:
        t = load_file(str(path))
        out = []
        for r in range(len(t["prompt_index"])):
            length, plen = int(t["lengths"][r]), int(t["prompt_lengths"][r])
            exits = t["exit_hidden"][r, :length - plen] if "exit_hidden" in t else None
            out.append(Continuation(int(t["prompt_index"][r]), bool(t["greedy"][r]), t["tokens"][r, :length].long(),
                                    plen, t["topk_ids"][r, :length - plen].long(),
                                    t["topk_logprobs"][r, :length - plen].float(), exits))
    except Exception as e:  # safetensors raises several types for a damaged file
        raise MirrorError(f"shard {path.name} is corrupt ({type(e).__name__}: {str(e).strip()[:120]})") from None
    return out


def load_shards(directory: Path, max_tokens: int | None = None) -> list[Continuation]:
    """The continuations of every shard in order (only the first shards up to ``max_tokens``)."""
    out, total = [], 0
    for path in sorted(Path(directory).glob("shard-*.safetensors")):
        if max_tokens is not None and total >= max_tokens:
            break
        shard = _load_shard(path)
        out += shard
        total += sum(len(c.topk_ids) for c in shard)
    return out
