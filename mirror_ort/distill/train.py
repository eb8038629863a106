"""Training the draft on the target's own continuations.

Loss at each continuation position t (the draft sees the whole prompt + continuation):
    CE(target's Top-k distribution at t, draft's main head)      (= KL up to the target's entropy)
  + 0.1 x sum_j CE(token t+2+j, stream j)                         (speculative streaming)
Only the target's Top-k ids inside the draft vocabulary count, renormalised.

Matmuls run in bfloat16 under autocast by default: on CPUs with AMX or
AVX-512-BF16 a step is 2-4x faster than in float32, and the float32 master
weights keep the updates exact enough. Batches go to the draft's device (the
target's: ``distill --device``); checkpoints are always written from host memory.

The run is time-boxed (``minutes``); the learning rate follows a cosine over the
budget, so a run always ends annealed. With ``max_steps`` the schedule follows
steps instead, and a run with the same seed and thread count repeats exactly
(the time box then only stops it early). Every ``checkpoint_minutes`` the
trainable weights, the AdamW state and the step go to one safetensors file;
a resumed run continues from it, with the same batch order.
"""

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import MirrorError
from ..export.draft_dir import trainable_state
from ..export.split import Draft
from .data import Continuation

CHECKPOINT = "checkpoint.safetensors"
MIN_STEPS = 10  # a budget that cannot fit this many steps trains nothing worth keeping
WARMUP_STEPS = 20


@dataclass
class TrainOptions:
    minutes: float = 30.0
    max_steps: int | None = None
    lr: float = 1e-3
    batch_size: int = 8  # sequences per step
    stream_weight: float = 0.1
    checkpoint_minutes: float = 2.0
    bf16: bool = True  # autocast matmuls to bfloat16 (weights, optimizer and loss stay float32)


@dataclass
class Batch:
    tokens: torch.Tensor  # [B, L] right-padded
    rows: torch.Tensor  # [N] loss positions: row ...
    cols: torch.Tensor  # ... and column (position t predicts token t+1)
    soft_ids: torch.Tensor  # [N, k] draft indices of the target's Top-k (-1 outside the draft vocabulary)
    soft_logprobs: torch.Tensor  # [N, k]
    stream_labels: torch.Tensor  # [N, streams] draft index of token t+2+j (-1: none or outside)

    def to(self, device) -> "Batch":
        return Batch(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))


def make_batch(items: list[Continuation], index: torch.Tensor, streams: int) -> Batch:
    width = max(len(c.tokens) for c in items)
    tokens = torch.zeros(len(items), width, dtype=torch.long)
    rows, cols, ids, lps, labels = [], [], [], [], []
    for r, c in enumerate(items):
        n = len(c.tokens)
        tokens[r, :n] = c.tokens
        positions = torch.arange(c.prompt_length - 1, n - 1)
        rows.append(torch.full_like(positions, r))
        cols.append(positions)
        ids.append(index[c.topk_ids])
        lps.append(c.topk_logprobs)
        ahead = positions[:, None] + 2 + torch.arange(streams)[None, :]  # [N, streams]
        padded = torch.cat([index[c.tokens], torch.full((streams + 1,), -1)])
        labels.append(padded[ahead.clamp(max=n)])
    return Batch(tokens, torch.cat(rows), torch.cat(cols), torch.cat(ids), torch.cat(lps), torch.cat(labels))


def forward_losses(draft: Draft, batch: Batch, stream_weight: float) -> dict:
    """Total loss and its parts (main soft CE, main top-1 agreement, per-stream CE/accuracy)."""
    tokens = batch.tokens
    b, width = tokens.shape
    span, device = draft.span, tokens.device
    positions = torch.arange(width, device=device).expand(b, width)
    mask = torch.full((width, width), -1e9, device=device).triu(1).expand(b, 1, width, width)
    empty = torch.zeros(b, 0, span.num_kv_heads, span.head_dim, device=device)
    hidden, _ = span(draft.embed(tokens), positions, mask, [(empty, empty)] * len(span.layers))
    logits, stream_logits = draft.logits(hidden[batch.rows, batch.cols][None])
    logp = F.log_softmax(logits[0], dim=-1)  # [N, V']
    inside = batch.soft_ids >= 0
    weights = torch.where(inside, batch.soft_logprobs.exp(), 0.0)
    weights = weights / weights.sum(-1, keepdim=True).clamp_min(1e-9)
    main = -(weights * logp.gather(1, batch.soft_ids.clamp_min(0))).sum(-1).mean()
    out = {"main": main, "agreement": (logp.argmax(-1) == batch.soft_ids[:, 0]).float().mean()}
    total = main
    if stream_logits is not None:
        out["stream_ce"], out["stream_accuracy"] = [], []
        for j in range(stream_logits.shape[2]):
            labels = batch.stream_labels[:, j]
            ce = F.cross_entropy(stream_logits[0, :, j], labels, ignore_index=-1)
            valid = labels >= 0
            ce = ce if valid.any() else stream_logits.sum() * 0.0
            total = total + stream_weight * ce
            out["stream_ce"].append(ce)
            out["stream_accuracy"].append((stream_logits[0, valid, j].argmax(-1) == labels[valid]).float().mean()
                                          if valid.any() else torch.tensor(0.0, device=device))
    out["loss"] = total
    return out


def batch_order(data: list[Continuation], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """One epoch's batches: shuffled by (seed, epoch), similar lengths grouped to save padding."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(data))
    chunk = batch_size * 16
    batches = []
    for s in range(0, len(order), chunk):
        group = sorted(order[s:s + chunk].tolist(), key=lambda i: len(data[i].tokens))
        batches += [group[g:g + batch_size] for g in range(0, len(group), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


class Trainer:
    def __init__(self, draft: Draft, data: list[Continuation], index: torch.Tensor, options: TrainOptions,
                 seed: int, work_dir: Path):
        if not data:
            raise MirrorError("no training continuations: the prompt set produced no data")
        self.draft, self.data, self.index, self.options, self.seed = draft, data, index, options, seed
        self.streams = draft.stream_heads.config["num_streams"] if draft.stream_heads is not None else 0
        self.checkpoint = Path(work_dir) / CHECKPOINT
        self.params = trainable_state(draft)
        self.device = next(iter(self.params.values())).device
        self.optimizer = torch.optim.AdamW(self.params.values(), lr=options.lr, weight_decay=0.0, betas=(0.9, 0.98))
        self.step, self.elapsed = 0, 0.0
        self._epoch_batches = (None, [])

    # -- schedule and data -------------------------------------------------------------
    def progress(self) -> float:
        if self.options.max_steps:
            return self.step / self.options.max_steps
        return self.elapsed / (self.options.minutes * 60)

    def learning_rate(self) -> float:
        warm = min(1.0, (self.step + 1) / WARMUP_STEPS)
        return self.options.lr * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, self.progress()))))

    def batch(self, step: int) -> Batch:
        per_epoch = math.ceil(len(self.data) / self.options.batch_size)
        epoch, i = divmod(step, per_epoch)
        if self._epoch_batches[0] != epoch:
            self._epoch_batches = (epoch, batch_order(self.data, self.options.batch_size, self.seed, epoch))
        return make_batch([self.data[j] for j in self._epoch_batches[1][i]], self.index, self.streams).to(self.device)

    # -- training ------------------------------------------------------------------------
    def train_step(self) -> dict:
        self.draft.train()
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.options.bf16):
            out = forward_losses(self.draft, self.batch(self.step), self.options.stream_weight)
        self.optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(self.params.values(), 1.0)
        self.optimizer.step()
        self.step += 1
        return out

    def done(self) -> bool:
        if self.options.max_steps and self.step >= self.options.max_steps:
            return True
        return self.elapsed >= self.options.minutes * 60

    def run(self, bar=None, on_checkpoint=None) -> None:
        """Train until the budget is spent, checkpointing on the way and at the end;
        ``on_checkpoint(trainer)`` runs after each checkpoint (e.g. a held-out measurement)."""
        last_save = time.perf_counter()
        while not self.done():
            start = time.perf_counter()
            out = self.train_step()
            took = time.perf_counter() - start
            self.elapsed += took
            if self.step == 1:
                self._check_budget(took)
            if bar is not None:
                bar.update(1)
                postfix = {"loss": f"{out['loss'].item():.3f}", "agree": f"{out['agreement'].item():.1%}"}
                if "stream_accuracy" in out:
                    postfix["streams"] = "/".join(f"{a.item():.0%}" for a in out["stream_accuracy"])
                bar.set_postfix(postfix, refresh=False)
            if time.perf_counter() - last_save >= self.options.checkpoint_minutes * 60:
                self.save_checkpoint()
                if on_checkpoint:
                    on_checkpoint(self)
                last_save = time.perf_counter()
        self.save_checkpoint()

    def _check_budget(self, step_seconds: float) -> None:
        budget = self.options.minutes * 60
        if not self.options.max_steps and budget < MIN_STEPS * step_seconds:
            need = math.ceil(MIN_STEPS * step_seconds / 60 * 10) / 10
            raise MirrorError(f"--minutes {self.options.minutes:g} fits fewer than {MIN_STEPS} training steps "
                              f"({step_seconds:.1f}s each here): give at least --minutes {need:g}")

    # -- checkpoints -----------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        from safetensors.torch import save_file

        tensors = {f"param.{n}": p.detach().cpu().contiguous() for n, p in self.params.items()}
        for n, p in self.params.items():
            state = self.optimizer.state.get(p)
            if state:
                tensors[f"adam.{n}.exp_avg"] = state["exp_avg"].cpu().contiguous()
                tensors[f"adam.{n}.exp_avg_sq"] = state["exp_avg_sq"].cpu().contiguous()
                tensors[f"adam.{n}.step"] = torch.as_tensor(state["step"], dtype=torch.float32).reshape(1)
        meta = {"step": str(self.step), "elapsed": repr(self.elapsed), "seed": str(self.seed)}
        tmp = self.checkpoint.with_suffix(".tmp")
        tmp.parent.mkdir(parents=True, exist_ok=True)  # with --data elsewhere, nothing made the work dir yet
        save_file(tensors, str(tmp), metadata=meta)
        tmp.rename(self.checkpoint)

    def load_checkpoint(self) -> bool:
        """Continue from the checkpoint in the work dir; False when there is none."""
        from safetensors import safe_open

        if not self.checkpoint.exists():
            return False
        with safe_open(str(self.checkpoint), framework="pt") as f:
            meta = f.metadata()
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        if int(meta["seed"]) != self.seed:
            raise MirrorError(f"{self.checkpoint} was trained with --seed {meta['seed']}: pass the same seed to resume")
        with torch.no_grad():
            for n, p in self.params.items():
                key = f"param.{n}"
                if key not in tensors or tensors[key].shape != p.shape:
                    raise MirrorError(f"{self.checkpoint} does not match this draft's shape ({n}): "
                                      "resume with the flags of the first run, or use --force")
                p.copy_(tensors[key])
                if f"adam.{n}.exp_avg" in tensors:
                    self.optimizer.state[p] = {"step": tensors[f"adam.{n}.step"].reshape(()),
                                               "exp_avg": tensors[f"adam.{n}.exp_avg"].to(p.device),
                                               "exp_avg_sq": tensors[f"adam.{n}.exp_avg_sq"].to(p.device)}
        self.step, self.elapsed = int(meta["step"]), float(meta["elapsed"])
        return True
