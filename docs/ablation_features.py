"""Ablation: a token-only draft against one that also reads the target's exit-layer hidden state
(EAGLE-style), trained alike on the data engine's shards (docs/distillation.md).

    python docs/ablation_features.py tok 192 2.5e5 DATA
    python docs/ablation_features.py feat 192 2.5e5 DATA

MODE (tok|feat), training steps, labelled tokens to load, the data directory (made by
``mirror-ort distill --data DATA --exit-layer 15``). Prints held-out top-1 agreement before and
after (feat: with the feature, and with it withheld as for the draft's own proposals).
"""
import math
import random
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from mirror_ort.distill.data import load_shards
from mirror_ort.distill.vocab import draft_index, reduced_vocabulary
from mirror_ort.export.draft_dir import DraftShape, draft_from_target, trainable_state
from mirror_ort.export.sources import load_source

torch.set_num_threads(1)
mode, max_steps = sys.argv[1], int(sys.argv[2])
max_tokens = int(float(sys.argv[3]))
src = load_source("smollm2-135m"); model = src.model
conts = load_shards(sys.argv[4], max_tokens)
# held-out: by prompt index parity with a hash of tokens of the prompt (prompt list not needed)
import zlib


def held(c): return zlib.crc32(bytes(c.tokens[:c.prompt_length].numpy().astype("int32"))) % 10 == 0
train = [c for c in conts if not held(c)]
test = [c for c in conts if held(c) and c.greedy][:60]
print(mode, "train tokens", sum(len(c.topk_ids) for c in train), "held-out", sum(len(c.topk_ids) for c in test), flush=True)
V = 8192
vocab_map = reduced_vocabulary(train, V, model.config.vocab_size, [2])
index = draft_index(vocab_map, model.config.vocab_size)
torch.manual_seed(0)
draft = draft_from_target(model, DraftShape(2, 0, 576), vocab_map)
H = 576
feat_proj = nn.Linear(H, H, bias=False); nn.init.zeros_(feat_proj.weight)
feat_norm = nn.RMSNorm(H, eps=1e-5)
params = list(trainable_state(draft).values()) + (list(feat_proj.parameters()) + list(feat_norm.parameters()) if mode == "feat" else [])
opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0, betas=(0.9, 0.98))

def batch_tensors(items, null_p):
    W = max(len(c.tokens) for c in items)
    tok = torch.zeros(len(items), W, dtype=torch.long)
    feats = torch.zeros(len(items), W, H)
    has = torch.zeros(len(items), W, dtype=torch.bool)
    rows, cols, ids, lps = [], [], [], []
    for r, c in enumerate(items):
        n, p = len(c.tokens), c.prompt_length
        tok[r, :n] = c.tokens
        if c.exit_hidden is not None:
            feats[r, p:n] = c.exit_hidden[: n - p].float()
            has[r, p:n] = True
        pos = torch.arange(p - 1, n - 1)
        rows.append(torch.full_like(pos, r)); cols.append(pos); ids.append(index[c.topk_ids]); lps.append(c.topk_logprobs)
    if null_p > 0:  # runs of featureless rows, as the draft's own proposals are at inference
        drop = torch.rand(has.shape) < null_p
        has &= ~drop
    return tok, feats, has, torch.cat(rows), torch.cat(cols), torch.cat(ids), torch.cat(lps)

def forward(items, null_p):
    tok, feats, has, rows, cols, ids, lps = batch_tensors(items, null_p)
    B, W = tok.shape
    x = draft.embed(tok)
    if mode == "feat":
        x = x + torch.where(has[..., None], feat_proj(feat_norm(feats)), 0.0)
    span = draft.span
    mask = torch.full((W, W), -1e9).triu(1).expand(B, 1, W, W)
    empty = torch.zeros(B, 0, span.num_kv_heads, span.head_dim)
    hidden, _ = span(x, torch.arange(W).expand(B, W), mask, [(empty, empty)] * len(span.layers))
    logits, _ = draft.logits(hidden[rows, cols][None])
    logp = F.log_softmax(logits[0].float(), -1)
    inside = ids >= 0
    w = torch.where(inside, lps.exp(), 0.0); w = w / w.sum(-1, keepdim=True).clamp_min(1e-9)
    loss = -(w * logp.gather(1, ids.clamp_min(0))).sum(-1).mean()
    agree = (logp.argmax(-1) == ids[:, 0]).float()
    return loss, agree

def evaluate():
    draft.eval()
    with torch.no_grad():
        a = torch.cat([forward([c], 0.0)[1] for c in test])
        a_null = torch.cat([forward([c], 1.0)[1] for c in test]) if mode == "feat" else a
    draft.train()
    return float(a.mean()), float(a_null.mean())

print("before", evaluate(), flush=True)
rng = random.Random(0)
order = sorted(range(len(train)), key=lambda i: len(train[i].tokens))
batches = [order[s:s + 8] for s in range(0, len(order), 8)]
t0, step, seen = time.perf_counter(), 0, 0
while step < max_steps:
    rng.shuffle(batches)
    for b in batches:
        el = time.perf_counter() - t0
        if step >= max_steps: break
        lr = 1e-3 * min(1, (step + 1) / 20) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / max_steps)))
        for g in opt.param_groups: g["lr"] = lr
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, agree = forward([train[i] for i in b], 0.3 if mode == "feat" else 0.0)
        opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(params, 1.0); opt.step()
        step += 1; seen += sum(len(train[i].topk_ids) for i in b)
        if step % 200 == 0:
            print(f"step {step} {el/60:.1f}min loss {loss.item():.3f} train-agree {agree.mean().item():.3f} tokens seen {seen}", flush=True)
print("after", mode, evaluate(), "steps", step, "tokens seen", seen, flush=True)
