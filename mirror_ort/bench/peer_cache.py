"""Peer models built once into the bench cache (onnxruntime-genai's builder, optimum's exporter)."""

import shutil
import tempfile
from pathlib import Path


def build_once(cache: Path, marker: str, build) -> Path:
    """``cache``, made once: ``build(work)`` returns a finished directory inside the temporary
    sibling ``work``, which replaces ``cache`` only when complete (``marker`` says it is)."""
    if (cache / marker).is_file():
        return cache
    cache.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{cache.name}.", dir=cache.parent))
    try:
        out = build(work)
        if cache.exists():
            shutil.rmtree(cache)
        out.rename(cache)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return cache


def last_line(proc) -> str:
    """What a failed child process said last, for a one-line reason."""
    lines = [line for line in (proc.stderr or proc.stdout).strip().splitlines() if line.strip()]
    return lines[-1] if lines else f"exit code {proc.returncode}"
