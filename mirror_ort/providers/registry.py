"""Execution providers: ``name[:device]`` + options -> an ONNX Runtime session.

(Only the CPU entry so far; the registry grows one declarative entry per provider.)
"""

from dataclasses import dataclass, field
from pathlib import Path

import onnxruntime as ort

from ..errors import MirrorError


@dataclass(frozen=True)
class ProviderChoice:
    name: str = "cpu"
    device: str | None = None
    options: dict = field(default_factory=dict)

    def __str__(self) -> str:
        return self.name + (f":{self.device}" if self.device else "")


def parse_provider(text: str, options: tuple[str, ...] = ()) -> ProviderChoice:
    name, _, device = text.partition(":")
    parsed = {}
    for item in options:
        key, sep, value = item.partition("=")
        if not sep:
            raise MirrorError(f"provider option {item!r} is not key=value")
        parsed[key] = value
    if name.lower() != "cpu":
        raise MirrorError(f"unknown execution provider {name!r} (known: cpu)")
    return ProviderChoice(name.lower(), device or None, parsed)


def create_session(path: Path, choice: ProviderChoice, threads: int | None = None,
                   allow_cpu_fallback: bool = False) -> ort.InferenceSession:
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
