"""Target-only decode steps through the fused target (one session, ``runtime/fused.py``) and
through prefix + suffix (two sessions), side by side on one bundle, checked bit-exact.

    python docs/fused_vs_split.py bundles/smollm2-int4

Prints ms per one-token step for each way: ``repetitions`` alternating runs of 100 steps on a
128-token cache (the medians are the figures to quote; a shared host moves single runs).
"""
import sys
import time

import numpy as np

from mirror_ort.runtime.pipeline import Pipeline
from mirror_ort.runtime.stats import Stats

CACHE, STEPS = 128, 100


def main(path: str, repetitions: int = 6) -> None:
    ways = {"fused": Pipeline.from_bundle(path, load_draft=False, max_length=512),
            "split": Pipeline.from_bundle(path, load_draft=False, max_length=512, fuse=False)}
    if ways["fused"].fused is None:
        raise SystemExit(f"{path}: its prefix and suffix do not fuse (static graphs?): nothing to compare")
    ids = [int(i) for i in np.random.default_rng(0).integers(100, 5000, CACHE + STEPS)]
    targets = {name: pipe.target(Stats()) for name, pipe in ways.items()}
    logits = {}
    for name, target in targets.items():
        target.score(ids[:CACHE], greedy=False, prefill=True)
        logits[name] = np.stack([target.score([i], greedy=False)[-1].copy() for i in ids[CACHE:]])
    times = {name: [] for name in ways}
    for _ in range(repetitions):
        for name, target in targets.items():
            target.truncate(CACHE)
            start = time.perf_counter()
            for i in ids[CACHE:]:
                target.score([i], greedy=True)
            times[name].append((time.perf_counter() - start) / STEPS * 1000)
    print({name: round(float(np.median(t)), 2) for name, t in times.items()}, "ms per step (median);",
          {name: [round(x, 2) for x in t] for name, t in times.items()},
          "bit-exact:", np.array_equal(logits["fused"], logits["split"]))


if __name__ == "__main__":
    main(sys.argv[1])
