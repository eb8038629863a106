"""``--exit-layer auto``: the exit layer where Mirror-SD's expected step is shortest.

A deeper exit puts the final token among the early-exit Top-kappa more often (the overlap
mass, which bounds how often the draft tree is reused), but leaves less of the target (the
suffix) for the tree to hide behind. Per candidate layer l, in units of one target step T:
    step(l) = 1 + (1 - overlap(l)) * fallback + max(0, tree - (N - l) / N)
where ``fallback`` is the serial draft a missed tree costs and ``tree`` the tree's own time,
both from the draft's share of the target's weights (a decode step reads every weight once,
so its time follows its size; each tree level or serial call reads the draft's). The overlap
is measured on the target's own greedy continuations of built-in prompts, with the plain
logit lens (a trained exit adapter raises it at every layer; its own layer is kept when the
draft brings one).
"""

import math

import torch

from ..chat import chat_encoder
from ..prompts import built_in_prompts

PROMPTS = 6
NEW_TOKENS = 48


def measure_overlaps(model, tokenizer, kappa: int) -> dict[int, float]:
    """Overlap mass of the plain early exit at every layer 1..N-1."""
    encode = chat_encoder(tokenizer)
    seen, prompts = set(), []
    for p in built_in_prompts():
        if p.category not in seen and len(prompts) < PROMPTS:
            seen.add(p.category)
            prompts.append(encode(p.text))
    n = model.config.num_hidden_layers
    hits = {layer: 0 for layer in range(1, n)}
    total = 0
    with torch.no_grad():
        for ids in prompts:
            out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                 max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=tokenizer.eos_token_id)
            seq = out[0:1]
            states = model(seq, output_hidden_states=True)
            final = states.logits[0, len(ids) - 1:-1].argmax(-1)  # the target's own next tokens
            for layer in hits:
                logits = model.lm_head(model.model.norm(states.hidden_states[layer][0, len(ids) - 1:-1]))
                hits[layer] += int((logits.topk(kappa, -1).indices == final[:, None]).any(-1).sum())
            total += len(final)
    return {layer: h / total for layer, h in hits.items()}


def choose_exit_layer(overlaps: dict[int, float], num_layers: int, draft_share: float, gamma: int = 6,
                      streams: int = 0) -> tuple[int, dict[int, float]]:
    """The layer with the shortest expected step, and every candidate's step (in target steps)."""
    calls = math.ceil(gamma / (1 + streams))
    fallback = calls * draft_share
    tree = (calls + 1) * draft_share  # its levels, the first one also feeding the uncached window
    steps = {layer: 1 + (1 - overlap) * fallback + max(0.0, tree - (num_layers - layer) / num_layers)
             for layer, overlap in overlaps.items()}
    return min(steps, key=lambda layer: (steps[layer], layer)), steps
