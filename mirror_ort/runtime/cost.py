"""What a step costs on the device in use: the target scoring k new rows, the draft's calls.

Measured once per (bundle graphs, providers, threads, machine) in about a second, on a cache of
``CACHE_POSITIONS`` positions, and kept under ``~/.cache/mirror-ort/costs/`` (``mirror-ort
profile BUNDLE`` measures again). The window controller (``window.py``) reads the curve; ``run
--json`` and ``bench`` report the one they used.
"""

import json
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from hashlib import sha256
from pathlib import Path

import numpy as np

from .masks import causal_mask, positions

CACHE_POSITIONS = 128
ROWS = (1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 16)  # measured target windows; others are interpolated
BRANCHES = (1, 2, 4, 8, 16)  # draft-tree level widths measured
REPEATS = 5
FORMAT = 1


@dataclass
class CostCurve:
    target_rows: list[int]
    target_ms: list[float]  # the target (prefix + suffix) scoring that many new rows
    draft_ms: float | None  # one draft call proposing from one new row (a serial call)
    tree_branches: list[int]
    tree_ms: list[float]  # one draft-tree level over that many branch rows
    measured: dict  # what, where, when

    def target(self, rows: int) -> float:
        return float(np.interp(rows, self.target_rows, self.target_ms))

    def tree_level(self, branches: int) -> float:
        return float(np.interp(branches, self.tree_branches, self.tree_ms)) if self.tree_ms else 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def cost_curve(pipe, refresh: bool = False, cache_dir: Path | None = None) -> CostCurve:
    """The pipeline's curve, from the cache unless ``refresh`` (or absent)."""
    key = _key(pipe)
    file = (cache_dir or default_cache_dir()) / "costs" / f"{key}.json"
    if not refresh and file.is_file():
        try:
            data = json.loads(file.read_text())
            if data.get("measured", {}).get("format") == FORMAT:
                return CostCurve(**data)
        except (OSError, ValueError, TypeError):
            pass  # a damaged cache entry is measured again
    curve = measure(pipe)
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(".tmp")
    tmp.write_text(json.dumps(curve.as_dict(), indent=2))
    tmp.replace(file)
    return curve


def default_cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME")
    return (Path(root) if root else Path.home() / ".cache") / "mirror-ort"


def measure(pipe) -> CostCurve:
    """Time the pipeline's own sessions on random ids (their caches are scratch: the prompt cache is dropped)."""
    from .stats import Stats

    pipe.forget()
    rng = np.random.default_rng(0)
    ids = [int(i) for i in rng.integers(0, pipe.bundle.vocab_size, CACHE_POSITIONS + max(ROWS) + 1)]
    target = pipe.target(Stats())
    target.reset()
    target.score(ids[:CACHE_POSITIONS], greedy=True, prefill=True)
    target_ms = []
    for rows in ROWS:
        times = []
        for _ in range(REPEATS + 1):  # the first run of a new shape warms it up
            start = time.perf_counter()
            target.score(ids[CACHE_POSITIONS:CACHE_POSITIONS + rows], greedy=True, last_only=False)
            times.append((time.perf_counter() - start) * 1000)
            target.truncate(CACHE_POSITIONS)
        target_ms.append(statistics.median(times[1:]))
    target.reset()
    if target.min_rows > 1:  # a lone token is scored with a filler row (target.py): the same work as two
        target_ms[0] = target_ms[1] = (target_ms[0] + target_ms[1]) / 2
    target_ms = list(np.maximum.accumulate(target_ms))  # more rows never cost less: the rest is noise
    draft_ms, tree_ms = None, []
    if pipe.draft is not None:
        draft_ms, tree_ms = _measure_draft(pipe.draft, ids)
    return CostCurve(list(ROWS), target_ms, draft_ms, list(BRANCHES) if tree_ms else [], tree_ms,
                     {"format": FORMAT, "cache_positions": CACHE_POSITIONS, "target_ep": pipe.prefix.provider,
                      "draft_ep": pipe.draft.provider if pipe.draft else None, "processor": processor_name(),
                      "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})


def _measure_draft(session, ids: list[int]) -> tuple[float, list[float]]:
    """A serial draft call (one new row, its head) and a tree level (b new rows, each with its head)."""
    session.cache.length = 0
    n = min(CACHE_POSITIONS, session.capacity - 2 * max(BRANCHES))
    outputs = ("next_ids",)
    session.run(np.array([ids[:n]]), positions(0, n), causal_mask(0, n), np.array([n - 1]), outputs=outputs)

    def timed(rows: int) -> float:
        times = []
        for _ in range(REPEATS + 1):
            session.cache.length = n
            start = time.perf_counter()
            session.run(np.array([ids[n:n + rows]]), positions(n, rows), causal_mask(n, rows),
                        np.arange(rows, dtype=np.int64), outputs=outputs)
            times.append((time.perf_counter() - start) * 1000)
        return statistics.median(times[1:])
    serial = timed(1)
    tree = [timed(b) for b in BRANCHES]
    session.cache.length = 0
    return serial, tree


def _key(pipe) -> str:
    files = pipe.bundle.manifest.files
    parts = [files[pipe.bundle.graph(role).file] for role in ("prefix", "suffix")]
    if pipe.draft is not None:
        parts += [files[pipe.draft.spec.file], pipe.draft.provider]
    parts += [pipe.prefix.provider, str(pipe.threads), processor_name(), FORMAT, pipe.fused is not None]
    return sha256(json.dumps(parts).encode()).hexdigest()[:20]


def processor_name() -> str:
    """The CPU's model name (costs and bench reports are per processor)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
