"""Peer ``optimum``: optimum-onnx's ``ORTModelForCausalLM`` on its own ONNX export of the bundle's
source model (fp32, ``text-generation-with-past``), decoding with transformers' ``generate``.

The export is built once into ``CACHE/optimum/<key>/`` by optimum's exporter in a child process
(the key hashes the bundle's target checksums and the optimum-onnx version), from the same
PyTorch weights the bundle was exported from (``peer_models``). Prompts go in as the bundle's
token ids; ONNX Runtime gets the row's threads through its session options.
"""

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

from ..generation import GenerationConfig
from .alloc import Allocation
from .peer_cache import build_once, last_line
from .peer_models import save_hf_dir
from .requirements import require
from .rows import Generation, Row, Skipped

EXPORT = ("from optimum.exporters.onnx import main_export; import sys; "
          "main_export(sys.argv[1], output=sys.argv[2], task='text-generation-with-past', device='cpu')")


def _version() -> str:
    from importlib.metadata import version

    return version("optimum-onnx")


def build(ctx) -> Path:
    """optimum's ONNX export of the bundle's source model, built once."""
    files, graphs = ctx.bundle.manifest.files, ctx.bundle.manifest.graphs
    key = hashlib.sha256(json.dumps(["optimum", files[graphs["prefix"].file], files[graphs["suffix"].file],
                                     _version()]).encode()).hexdigest()[:16]
    cache = Path(ctx.cache_dir) / "optimum" / key

    def export(work: Path) -> Path:
        model, tokenizer = ctx.peers.target()
        ctx.log(f"exporting the optimum-onnx model into {cache} ...")
        hf_dir = save_hf_dir(model, tokenizer, work / "hf")
        out = work / "model"
        proc = subprocess.run([sys.executable, "-c", EXPORT, str(hf_dir), str(out)], capture_output=True, text=True)
        if proc.returncode != 0 or not (out / "config.json").is_file():
            raise Skipped(f"optimum-onnx's exporter failed: {last_line(proc)}")
        return out
    return build_once(cache, "config.json", export)


class OptimumRow(Row):
    def __init__(self, name, alloc: Allocation, directory: Path, eos: list[int], notes: list[str]):
        import onnxruntime as ort
        from optimum.onnxruntime import ORTModelForCausalLM

        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = alloc.target_threads, 1
        super().__init__(name, "optimum", alloc, {"target": alloc.target_threads},
                         f"optimum-onnx {_version()} on onnxruntime {ort.__version__} cpu, fp32", notes)
        self.model = ORTModelForCausalLM.from_pretrained(directory, session_options=options,
                                                         provider="CPUExecutionProvider")
        self.eos = eos

    def generate(self, ids, s: GenerationConfig) -> Generation:
        import torch
        from transformers import GenerationConfig as HFGenerationConfig

        kw = dict(max_new_tokens=s.max_new_tokens, eos_token_id=self.eos, pad_token_id=self.eos[0], num_beams=1)
        if s.greedy:
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kw.update(do_sample=True, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k or None)
        torch.manual_seed(s.seed)
        input_ids = torch.tensor([list(ids)], dtype=torch.long)
        start = time.perf_counter()
        out = self.model.generate(input_ids, attention_mask=torch.ones_like(input_ids),
                                  generation_config=HFGenerationConfig(**kw))
        seconds = time.perf_counter() - start
        new = out[0, len(ids):].tolist()
        return Generation(new, seconds, len(new))


def _make(ctx, alloc: Allocation) -> Row:
    require("optimum.onnxruntime", "torch", "transformers", purpose="the optimum peer")
    directory = build(ctx)
    eos = list(ctx.bundle.eos_token_ids)
    if not eos:
        raise Skipped("the bundle names no eos token")
    notes = [f"optimum-onnx's own ONNX export of {ctx.peers.source_spec} (fp32, text-generation-with-past)"]
    return OptimumRow("optimum" + alloc.suffix, alloc, directory, eos, notes)


def optimum_row():
    return _make
