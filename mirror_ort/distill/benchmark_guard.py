"""Keeps benchmark prompts out of the distillation data.

SpecBench measures every speculative method here; a draft that saw its prompts would
flatter every figure measured with it. The guard holds a hash of every run of
``SHINGLE`` consecutive words of every SpecBench turn (lower-cased, punctuation
stripped): a prompt that shares any such run with the benchmark is refused, whoever wrote it
(the templates, the target itself). Prompts shorter than the run length are compared
whole. Only 64-bit hashes are shipped (``spec_bench_shingles.bin``), never the benchmark's text.

    python -m mirror_ort.distill.benchmark_guard question.jsonl   # rebuild the packaged hashes
"""

import hashlib
import json
import re
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np

SHINGLE = 13
PACKAGED = Path(__file__).with_name("spec_bench_shingles.bin")
_WORD = re.compile(r"[a-z0-9]+")


def _hash(words: list[str]) -> int:
    return int.from_bytes(hashlib.blake2b(" ".join(words).encode(), digest_size=8).digest(), "little")


def shingles(text: str) -> set[int]:
    """Hashes of every run of ``SHINGLE`` words of ``text`` (the whole text when shorter)."""
    words = _WORD.findall(text.lower())
    if len(words) < SHINGLE:
        return {_hash(words)} if words else set()
    return {_hash(words[i:i + SHINGLE]) for i in range(len(words) - SHINGLE + 1)}


class BenchmarkGuard:
    def __init__(self, hashes: np.ndarray):
        self.hashes = np.unique(hashes.astype(np.uint64))

    @classmethod
    def from_texts(cls, texts) -> "BenchmarkGuard":
        return cls(np.array(sorted(set().union(*(shingles(t) for t in texts))), dtype=np.uint64))

    @classmethod
    def from_jsonl(cls, path) -> "BenchmarkGuard":
        """Every turn of a SpecBench-format question file."""
        turns = [t for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()
                 for t in json.loads(line)["turns"]]
        return cls.from_texts(turns)

    def contaminated(self, text: str) -> bool:
        """Whether ``text`` shares a run of ``SHINGLE`` words with the benchmark (or is a short benchmark turn)."""
        mine = np.fromiter(shingles(text), dtype=np.uint64)
        if not len(mine) or not len(self.hashes):
            return False
        where = np.searchsorted(self.hashes, mine).clip(max=len(self.hashes) - 1)
        return bool((self.hashes[where] == mine).any())

    def save(self, path: Path) -> None:
        Path(path).write_bytes(self.hashes.astype("<u8").tobytes())


@lru_cache(maxsize=1)
def spec_bench_guard() -> BenchmarkGuard:
    """The guard for SpecBench, from the hashes packaged with mirror-ort."""
    return BenchmarkGuard(np.frombuffer(PACKAGED.read_bytes(), dtype="<u8"))


if __name__ == "__main__":
    guard = BenchmarkGuard.from_jsonl(sys.argv[1])
    guard.save(PACKAGED)
    print(f"{len(guard.hashes)} shingle hashes written to {PACKAGED}")
