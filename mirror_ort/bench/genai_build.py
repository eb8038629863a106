"""onnxruntime-genai models of the bundle's target and draft, built once and cached.

Each model is the bundle's own PyTorch source (``peer_models``) saved as an HF
directory and converted by onnxruntime-genai's model builder at the chosen precision
(``fp32`` by default, like the bundle), for the CPU. The cache lives under
``CACHE/genai/<target key>/`` with the draft in ``drafts/<draft key>/`` inside it
(onnxruntime-genai resolves a draft's file relative to the target's config). The keys
hash the bundle's graph checksums, the precision and the onnxruntime-genai version:
re-exporting a bundle or changing the precision builds afresh. A directory is renamed
into place only once its build succeeded.
"""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

from .peer_cache import build_once, last_line
from .peer_models import save_hf_dir
from .rows import Skipped

PRECISIONS = ("fp32", "int8", "int4")  # what the builder offers for its CPU target
UNUSED_FILES = ("tokenizer.model",)  # a sentencepiece copy (98 MB for SmolLM2), besides tokenizer.json
BUILD_FORMAT = 1  # bump when the way models are built here changes


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _version() -> str:
    from importlib.metadata import version

    return version("onnxruntime-genai")


def target_key(bundle, precision: str) -> str:
    files = bundle.manifest.files
    return _key("target", files[bundle.graph("prefix").file], files[bundle.graph("suffix").file], precision,
                _version(), BUILD_FORMAT)


def draft_key(bundle, precision: str) -> str:
    draft = bundle.graph("draft")
    return _key("draft", bundle.manifest.files[draft.file], draft.source, precision, _version(), BUILD_FORMAT)


def run_builder(hf_dir: Path, out: Path, precision: str, work: Path) -> None:
    cmd = [sys.executable, "-m", "mirror_ort.bench.genai_builder_launch", "-i", str(hf_dir), "-o", str(out),
           "-p", precision, "-e", "cpu", "-c", str(work / "builder_cache")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not (out / "genai_config.json").is_file():
        raise Skipped(f"onnxruntime-genai's model builder failed on {hf_dir.name}: {last_line(proc)}")


def _build(cache: Path, what: str, save, precision: str, log) -> Path:
    """Build into ``cache`` (if not there yet) via a temporary sibling directory."""
    def build(work: Path) -> Path:
        log(f"building the onnxruntime-genai {what} ({precision}) into {cache} ...")
        out = work / "model"
        run_builder(save(work / "hf"), out, precision, work)
        for unused in UNUSED_FILES:  # prompts go in as token ids: onnxruntime-genai's tokenizer is never used
            (out / unused).unlink(missing_ok=True)
        return out
    return build_once(cache, "genai_config.json", build)


def build_target(ctx) -> Path:
    """The target's onnxruntime-genai directory."""
    precision = ctx.genai_precision
    model, tokenizer = ctx.peers.target()
    cache = Path(ctx.cache_dir) / "genai" / target_key(ctx.bundle, precision)
    return _build(cache, "target", lambda d: save_hf_dir(model, tokenizer, d), precision, ctx.log)


def build_draft(ctx, target_dir: Path) -> str:
    """The draft's model directory inside the target's, returned relative to it."""
    if ctx.peers.draft_has_reduced_vocab:
        raise Skipped("the bundle's draft scores a reduced vocabulary; onnxruntime-genai needs a draft with the "
                      "target's full vocabulary (export with --draft layers:K to compare)")
    precision = ctx.genai_precision
    model, _ = ctx.peers.draft()
    _, tokenizer = ctx.peers.target()
    relative = Path("drafts") / draft_key(ctx.bundle, precision)
    _build(target_dir / relative, "draft", lambda d: save_hf_dir(model, tokenizer, d), precision, ctx.log)
    return relative.as_posix()
