"""Training the exit adapter (``export/exit_adapter.py``) on the data engine's hidden states.

Every labelled position carries the target's hidden state after the exit layer (``exit_hidden``)
and its final Top-k distribution. The adapter learns to map the one to the other through the
target's own final norm and LM head (frozen): the loss is the cross-entropy to the Top-k
distribution (renormalised), over the whole vocabulary, on random batches of positions; the
measure is the overlap mass on held-out text (and on a sample of the training positions), the share of positions whose final token is in
the adapted exit's Top-kappa, which bounds Mirror-SD's reuse.
"""

import math
import time

import torch
import torch.nn.functional as F

from ..errors import MirrorError
from ..export.exit_adapter import ExitAdapter

POSITIONS_PER_STEP = 512
TRAIN_SAMPLE = 4096  # training positions measured before and after


def positions(continuations) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(hidden [N, H] float16, Top-k ids [N, k], Top-k log-probs [N, k]) of every labelled position."""
    items = [c for c in continuations if c.exit_hidden is not None]
    if not items:
        raise MirrorError("the data holds no exit hidden states: generate it with --exit-layer")
    return (torch.cat([c.exit_hidden for c in items]), torch.cat([c.topk_ids for c in items]),
            torch.cat([c.topk_logprobs for c in items]))


def overlap(adapter: ExitAdapter | None, head, hidden, ids, kappa: int = 8, chunk: int = 2048) -> dict:
    """Share of positions whose target token is among the exit Top-kappa (and is its Top-1)."""
    hits = top1 = 0
    device = next(head.parameters()).device
    with torch.no_grad():
        for s in range(0, len(hidden), chunk):
            h = hidden[s:s + chunk].to(device, torch.float32)
            logits = head(adapter(h) if adapter is not None else h)
            top = logits.topk(kappa, dim=-1).indices.cpu()
            target = ids[s:s + chunk, :1]
            hits += int((top == target).any(-1).sum())
            top1 += int((top[:, :1] == target).sum())
    return {"overlap": hits / len(hidden), "top1": top1 / len(hidden), "positions": len(hidden), "kappa": kappa}


def train_exit_adapter(model, train, held_out, exit_layer: int, rank: int = 256, minutes: float = 10.0,
                       max_steps: int | None = None, lr: float = 2e-3, seed: int = 0, bf16: bool = True,
                       log=print) -> tuple[ExitAdapter, dict]:
    """Train an adapter for ``exit_layer`` on the target's device; returns it (on the CPU) and its
    before/after figures on ``held_out``. The positions stay in host memory; each step's batch moves."""
    from ..export.architectures import arch_spec
    from ..export.decoder import Head

    head = Head(model, arch_spec(model.config)).eval()
    for p in head.parameters():
        p.requires_grad_(False)
    hidden, ids, logprobs = positions(train)
    test = positions(held_out) if held_out else None
    torch.manual_seed(seed)
    device = next(head.parameters()).device
    adapter = ExitAdapter(model.config.hidden_size, rank, exit_layer,
                          eps=getattr(model.model.norm, "variance_epsilon", 1e-5)).to(device)
    seen = slice(0, TRAIN_SAMPLE)  # what it fits, beside what it generalises to
    before = overlap(None, head, *test[:2]) if test else None
    before_train = overlap(None, head, hidden[seen], ids[seen])
    optimizer = torch.optim.AdamW(adapter.parameters(), lr=lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    started, step = time.perf_counter(), 0
    budget = minutes * 60
    while (max_steps is None or step < max_steps) and time.perf_counter() - started < budget:
        progress = step / max_steps if max_steps else (time.perf_counter() - started) / budget
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 20) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
        rows = torch.randint(0, len(hidden), (POSITIONS_PER_STEP,), generator=generator)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = head(adapter(hidden[rows].to(device, torch.float32)))
        logp = F.log_softmax(logits.float(), dim=-1)
        weights = logprobs[rows].to(device).exp()
        loss = -(weights / weights.sum(-1, keepdim=True) * logp.gather(1, ids[rows].to(device))).sum(-1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        if step % 200 == 0:
            log(f"exit adapter step {step}: loss {loss.item():.3f}")
    adapter.eval()
    after = overlap(adapter, head, *test[:2]) if test else None
    train_after = overlap(adapter, head, hidden[seen], ids[seen])
    report = {"exit_layer": exit_layer, "rank": rank, "steps": step, "minutes": (time.perf_counter() - started) / 60,
              "training_positions": len(hidden), "held_out": {"plain": before, "adapted": after},
              "train": {"plain": before_train, "adapted": train_after}}
    return adapter.cpu(), report
