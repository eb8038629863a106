"""Aggregates, the text tables and the JSON report.

For a set of prompts (one category, or all of them) a row's figures are:

* ``tokens_per_s``: generated tokens / generation seconds, both summed over the prompts
  (``tokens_per_s_mean`` / ``_median``: over per-prompt rates);
* ``speedup``: ``tokens_per_s`` / the baseline ``ar``'s ``tokens_per_s`` on the same prompts
  (``speedup_median``: the median of per-prompt ratios);
* ``mean_accepted``: generated tokens per target forward pass (the prompt's included);
* ``reuse_rate`` / ``fallback_rate``: Mirror-SD windows found in / missing from the draft tree;
* ``lossless_rate``: share of prompts whose token ids equal those of ``ar`` of the row's own
  bundle (greedy runs only);
* ``mean_gamma``: mirror-ort's speculative rows, the model draft's mean window length (what
  ``gamma=auto`` chose; 0 for the steps it decoded like ``ar``);
* ``ms_per_token``: mirror-ort's rows only, where a generation's time went, per generated token:
  prefill, prefix, suffix, draft (serial), draft_tree (on the draft's thread, overlapping the
  target), wait (the target waiting for the draft) and glue (Python on the target's thread).
"""

import statistics

from .rows import BASELINE
from .runner import BenchResult, Record


def _median(values):
    return statistics.median(values) if values else None


def _mean(values):
    return statistics.fmean(values) if values else None


def aggregate(records: list[Record], baseline: list[Record]) -> dict:
    tokens = sum(r.new_tokens for r in records)
    seconds = sum(r.generation.seconds for r in records)
    tps = tokens / seconds if seconds > 0 else 0.0
    base_tokens = sum(r.new_tokens for r in baseline)
    base_seconds = sum(r.generation.seconds for r in baseline)
    base_tps = base_tokens / base_seconds if base_seconds > 0 else 0.0
    rates = [r.new_tokens / r.generation.seconds for r in records if r.generation.seconds > 0]
    base_rate = {r.prompt: r.new_tokens / r.generation.seconds for r in baseline if r.generation.seconds > 0}
    ratios = [(r.new_tokens / r.generation.seconds) / base_rate[r.prompt] for r in records
              if r.generation.seconds > 0 and base_rate.get(r.prompt)]
    calls = sum(r.generation.target_calls for r in records)
    windows = [(r.generation.reused_windows, r.generation.fallback_windows) for r in records
               if r.generation.reused_windows is not None]
    reused = sum(w[0] for w in windows)
    fallback = sum(w[1] for w in windows)
    matches = [r.matches_baseline for r in records if r.matches_baseline is not None]
    gammas = [r.generation.mean_gamma for r in records if r.generation.mean_gamma is not None]
    parts = [r.generation.parts for r in records if r.generation.parts]
    per_token = {k: 1000 * sum(p[k] for p in parts) / tokens for k in parts[0]} if parts and tokens else None
    return {
        "prompts": len(records),
        "new_tokens": tokens,
        "seconds": seconds,
        "tokens_per_s": tps,
        "tokens_per_s_mean": _mean(rates),
        "tokens_per_s_median": _median(rates),
        "seconds_mean": _mean([r.generation.seconds for r in records]),
        "seconds_median": _median([r.generation.seconds for r in records]),
        "speedup": tps / base_tps if base_tps > 0 else None,
        "speedup_median": _median(ratios),
        "mean_accepted": tokens / calls if calls else None,
        "reuse_rate": reused / (reused + fallback) if windows and reused + fallback else None,
        "fallback_rate": fallback / (reused + fallback) if windows and reused + fallback else None,
        "lossless_rate": sum(matches) / len(matches) if matches else None,
        "mean_gamma": _mean(gammas) if gammas else None,
        "ms_per_token": per_token,
    }


def categories(result: BenchResult) -> list[str]:
    return list(dict.fromkeys(p.category for p in result.prompts))


def summarize(result: BenchResult) -> dict:
    """``{NAME: {..., "per_category": {CAT: {...}}, "per_prompt": [...]}}`` for every row that ran."""
    base = result.records_of(BASELINE)
    methods = {}
    for row in result.rows:
        records = result.records_of(row.name)
        entry = aggregate(records, base)
        entry["per_category"] = {c: aggregate([r for r in records if r.category == c],
                                              [r for r in base if r.category == c]) for c in categories(result)}
        entry.update(row.describe())
        entry["per_prompt"] = [r.as_dict() for r in records]
        methods[row.name] = entry
    return methods


def to_json(result: BenchResult, settings: dict) -> dict:
    return {"settings": settings, "methods": summarize(result), "skipped": result.skipped}


def _fmt(value, kind):
    if value is None:
        return "-"
    return {"tps": f"{value:.1f}", "x": f"{value:.2f}x", "f": f"{value:.2f}", "pct": f"{value:.0%}"}[kind]


COLUMNS = (("method", None, 18), ("tok/s", ("tokens_per_s", "tps"), 8), ("speedup", ("speedup", "x"), 8),
           ("accepted", ("mean_accepted", "f"), 9), ("gamma", ("mean_gamma", "f"), 6), ("reuse", ("reuse_rate", "pct"), 6),
           ("fallback", ("fallback_rate", "pct"), 9), ("lossless", ("lossless_rate", "pct"), 9))


def table(title: str, rows: dict[str, dict]) -> str:
    width = max([COLUMNS[0][2], *(len(n) + 1 for n in rows)])
    head = "method".ljust(width) + "".join(name.rjust(w) for name, _, w in COLUMNS[1:])
    lines = [title, head, "-" * len(head)]
    for name, figures in rows.items():
        lines.append(name.ljust(width) + "".join(_fmt(figures[key], kind).rjust(w)
                                                 for _, (key, kind), w in COLUMNS[1:]))
    return "\n".join(lines)


PARTS = ("prefill", "target", "prefix", "suffix", "draft", "draft_tree", "wait", "glue")


def time_table(rows: dict[str, dict]) -> str | None:
    """Milliseconds per generated token in each part of mirror-ort's rows."""
    rows = {name: figures["ms_per_token"] for name, figures in rows.items() if figures.get("ms_per_token")}
    if not rows:
        return None
    width = max([COLUMNS[0][2], *(len(n) + 1 for n in rows)])
    head = "method".ljust(width) + "".join(p.rjust(11) for p in PARTS)
    lines = ["where the time went (ms per generated token; draft_tree runs beside the target)", head, "-" * len(head)]
    for name, ms in rows.items():
        lines.append(name.ljust(width) + "".join(f"{ms.get(p, 0.0):.2f}".rjust(11) for p in PARTS))
    return "\n".join(lines)


def format_report(result: BenchResult, methods: dict | None = None) -> str:
    methods = methods if methods is not None else summarize(result)
    blocks = []
    for category in categories(result):
        n = sum(1 for p in result.prompts if p.category == category)
        blocks.append(table(f"{category} ({n} prompts)", {k: v["per_category"][category] for k, v in methods.items()}))
    blocks.append(table(f"overall ({len(result.prompts)} prompts)", methods))
    times = time_table(methods)
    if times:
        blocks.append(times)
    if result.skipped:
        blocks.append("skipped:\n" + "\n".join(f"  {name}: {why}" for name, why in result.skipped.items()))
    return "\n\n".join(blocks)
