"""How well a draft would serve speculative decoding, measured on the target's own greedy text.

Greedy verification accepts the longest prefix of the window that matches the
target's greedy tokens, and the draft only proposes beyond an accepted prefix.
So teacher forcing the draft on the target's greedy continuation gives exactly
the proposals that matter, and acceptance can be replayed without a runtime:
  * agreement: the main head's top-1 equals the target's next token;
  * vanilla sd at window gamma: mean tokens committed per target call (the
    accepted prefix plus the correction or bonus token);
  * streams: each draft call proposes 1 + S tokens (main head, then stream j for
    the token j+1 further on); accepted draft tokens per draft call.

``python -m mirror_ort.distill.evaluate DRAFT_DIR --questions question.jsonl``
reports these per category of a SpecBench-style question file.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..export.split import Draft
from .data import Continuation


@dataclass
class Matches:
    """Per continuation token c (predicted from position prompt_length + c - 1)."""

    main: np.ndarray  # [C] bool: the main head's token is the target's
    streams: np.ndarray  # [C, S] bool: stream j at that position predicts token c + 1 + j correctly


@torch.no_grad()
def matches(draft: Draft, continuation: Continuation) -> Matches:
    plen, device = continuation.prompt_length, draft.head.lm_head.weight.device
    tokens = continuation.tokens.to(device)
    n = len(tokens)
    span = draft.span
    empty = torch.zeros(1, 0, span.num_kv_heads, span.head_dim, device=device)
    mask = torch.full((n, n), -1e9, device=device).triu(1)[None, None]
    hidden, _ = span(draft.embed(tokens[None]), torch.arange(n, device=device)[None], mask,
                     [(empty, empty)] * len(span.layers))
    logits, stream_logits = draft.logits(hidden[:, plen - 1: n - 1])
    main = (draft.target_ids(logits[0].argmax(-1)) == tokens[plen:]).cpu().numpy()
    streams = np.zeros((n - plen, 0), dtype=bool)
    if stream_logits is not None:
        ids = draft.target_ids(stream_logits[0].argmax(-1))  # [C, S]
        ahead = torch.cat([tokens, torch.full((ids.shape[1] + 1,), -1, device=device)])
        targets = ahead[torch.arange(plen, n, device=device)[:, None] + 1 + torch.arange(ids.shape[1], device=device)[None]]
        streams = (ids == targets).cpu().numpy()
    return Matches(main, streams)


def replay(m: Matches, gamma: int, use_streams: bool) -> dict:
    """Greedy speculative decoding over one continuation: counts of committed tokens,
    target calls (steps), draft calls and accepted draft tokens."""
    total, pos = len(m.main), 0
    counts = {"tokens": total, "steps": 0, "draft_calls": 0, "accepted": 0}
    while pos < total:
        window = min(gamma, total - pos)
        chain = []
        while len(chain) < window:
            q = pos + len(chain)
            counts["draft_calls"] += 1
            chain += [m.main[q]] + (list(m.streams[q]) if use_streams else [])
        chain = chain[:window]
        accepted = next((i for i, ok in enumerate(chain) if not ok), window)
        counts["accepted"] += accepted
        counts["steps"] += 1
        pos += min(accepted + 1, total - pos)
    return counts


def summarize(draft: Draft, continuations: list[Continuation], gamma: int = 6) -> dict:
    """Agreement, stream accuracy and replayed sd figures, pooled over ``continuations``."""
    all_matches = [matches(draft, c) for c in continuations if len(c.tokens) > c.prompt_length]
    main = np.concatenate([m.main for m in all_matches])
    streams = np.concatenate([m.streams for m in all_matches])
    out = {"positions": int(len(main)), "agreement": float(main.mean()),
           "stream_accuracy": [float(a) for a in streams.mean(0)] if streams.size else []}
    plans = {f"sd_gamma{gamma}": (gamma, False)}
    if streams.shape[1]:
        s = streams.shape[1]
        plans.update({f"streams_gamma{1 + s}": (1 + s, True), f"streams_gamma{gamma}": (gamma, True)})
    for name, (g, use_streams) in plans.items():
        runs = [replay(m, g, use_streams) for m in all_matches]
        total = {k: sum(r[k] for r in runs) for k in runs[0]}
        out[name] = {"committed_per_target_call": total["tokens"] / total["steps"],
                     "accepted_per_draft_call": total["accepted"] / total["draft_calls"]}
    return out


def _main(argv=None) -> None:
    import argparse
    from collections import defaultdict

    from ..export.draft_dir import load_draft
    from ..export.sources import load_source
    from ..prompts import Prompt
    from ..chat import chat_encoder
    from .data import DataEngine, DataOptions, target_identity

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("draft", type=Path)
    parser.add_argument("--questions", type=Path, required=True, help="SpecBench-style jsonl (category, turns)")
    parser.add_argument("--target", default=None)
    parser.add_argument("--cache", type=Path, required=True, help="where the target's greedy answers are cached")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--per-category", type=int, default=None, help="use only the first N questions of each category")
    parser.add_argument("--gamma", type=int, default=6)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    source = load_source(args.target)
    draft = load_draft(args.draft, source.model)
    rows = [json.loads(line) for line in args.questions.read_text().splitlines() if line.strip()]
    taken = defaultdict(int)
    prompts = []
    for r in rows:
        taken[r["category"]] += 1
        if args.per_category is None or taken[r["category"]] <= args.per_category:
            prompts.append(Prompt(r["category"], r["turns"][0]))  # the first turn of multi-turn questions
    tokenizer = source.tokenizer
    options = DataOptions(samples_per_prompt=0, max_new_tokens=args.max_new_tokens, self_written=0, batch_size=32)
    engine = DataEngine(args.cache, source.model, chat_encoder(tokenizer),
                        lambda ids: tokenizer.decode(ids, skip_special_tokens=True), {tokenizer.eos_token_id},
                        target_identity(source.model), options, evaluation_prompts=prompts)
    data = engine.run(progress=lambda new, total: print(f"\rtarget answers: {total} tokens", end="", flush=True))
    data = data.continuations
    print()
    by_category = defaultdict(list)
    for c in data:
        by_category[prompts[c.prompt_index].category].append(c)
    report = {cat: summarize(draft, items, args.gamma) for cat, items in sorted(by_category.items())}
    report["all"] = summarize(draft, data, args.gamma)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    _main()
