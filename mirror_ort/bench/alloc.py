"""Thread allocations: who gets which cores.

* ``shared``: every method gets all cores: each ONNX Runtime session, onnxruntime-genai
  session and PyTorch gets ``cores`` intra-op threads. In Mirror-SD with a fixed gamma the
  target and the draft then run at the same time on the same cores, so their sessions stop
  spin-waiting (``spin=False``); with gamma auto it builds no tree there (the draft has no
  idle cores), and like everything else keeps ONNX Runtime's default.
* ``split``: the target session gets 1 thread and the draft session 1 thread (two
  sessions on two cores for Mirror-SD). Methods with a single model (``ar``, the
  plain peers) get 1 thread here; ``ar`` with all cores is always measured too, as
  the shared row ``ar``, the baseline of every speedup.
"""

from dataclasses import dataclass

from ..errors import MirrorError
from ..providers import available_cores

MODES = ("shared", "split")


@dataclass(frozen=True)
class Allocation:
    mode: str
    target_threads: int
    draft_threads: int
    cores: int

    @property
    def suffix(self) -> str:
        """Row names: ``mirror`` in shared mode, ``mirror/split`` in split mode."""
        return "" if self.mode == "shared" else f"/{self.mode}"

    def spin(self, concurrent: bool) -> bool | None:
        """Spin-waiting for sessions that run at the same time: off when they oversubscribe the cores."""
        if concurrent and self.target_threads + self.draft_threads > self.cores:
            return False
        return None

    def as_dict(self) -> dict:
        return {"mode": self.mode, "target_threads": self.target_threads, "draft_threads": self.draft_threads,
                "cores": self.cores}


def parse_alloc(text: str) -> list[str]:
    if text == "both":
        return list(MODES)
    if text not in MODES:
        raise MirrorError(f"--alloc {text!r}: choose shared, split or both")
    return [text]


def allocation(mode: str, cores: int | None = None) -> Allocation:
    cores = cores or available_cores()
    if cores < 1:
        raise MirrorError(f"--threads {cores}: must be at least 1")
    if mode == "shared":
        return Allocation("shared", cores, cores, cores)
    return Allocation("split", 1, 1, cores)
