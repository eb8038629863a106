"""The bundle manifest ``mirror_ort.json``: the one contract between export and runtime.

The runtime reads this file and the graphs it names, nothing else. Keys:

* ``model``: the target's shape (layers, heads, KV heads, head dim, vocab, dtype).
* ``early_exit``: ``layer`` (l_e) and ``kappa``.
* ``kv_cache``: layout of past/present tensors and of the attention mask (see below).
* ``graphs``: ``prefix``, ``suffix`` and ``draft``, each with its file, sha256, the
  layers whose K/V it owns, K/V geometry, I/O names/dtypes/shapes, and ``static``
  sizes when exported for a static-shape provider. The draft also records its
  speculative-streaming ``streams`` count.
* ``tokenizer``: files, eos ids, chat template.
* ``provenance`` and ``validation``: where it came from and how it checked out.
"""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from .errors import MirrorError

MANIFEST = "mirror_ort.json"
SCHEMA_VERSION = 2
GRAPH_ROLES = ("prefix", "suffix", "draft")

KV_CACHE_LAYOUT = {
    "BSND": {
        "graphs": "the draft",
        "past": "past.{layer}.key|value: [batch, past, kv_heads, head_dim], positions 0..past-1",
        "present": "present.{layer}.key|value: [batch, seq, kv_heads, head_dim], the new positions only",
    },
    "BNSH-shared": {
        "graphs": "the target's prefix and suffix",
        "past": "past.{layer}.key|value: [batch, kv_heads, capacity, head_dim], valid positions 0..total-seq-1",
        "present": "present.{layer}.key|value: the same buffer as the past; the graph writes the new "
                   "positions total-seq..total-1 in place",
    },
    "attention_mask": "float32 [batch, 1, seq, total], additive: 0 attends, -1e9 masks (total = past + seq); "
                      "BNSH-shared graphs are causal and read only its width",
    "mask_value": -1e9,
}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class GraphSpec:
    """One graph of the bundle as the manifest declares it."""

    role: str
    path: Path
    layers: tuple[int, int]  # global layer indices [start, end) whose K/V this graph owns
    num_kv_heads: int
    head_dim: int
    inputs: list
    outputs: list
    static: dict | None = None  # {"batch", "seq", "capacity"} for static-shape graphs
    streams: int = 0
    kv_layout: str = "BSND"  # or "BNSH-shared" (see KV_CACHE_LAYOUT)

    @property
    def input_names(self) -> list[str]:
        return [v["name"] for v in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [v["name"] for v in self.outputs]

    @classmethod
    def from_entry(cls, role: str, path: Path, g: dict) -> "GraphSpec":
        """The spec of a manifest's ``graphs.ROLE`` entry, for the graph file at ``path``."""
        return cls(role, path, tuple(g["layers"]), g["num_kv_heads"], g["head_dim"], g["inputs"], g["outputs"],
                   g.get("static"), g.get("streams", 0), g.get("kv_layout", "BSND"))

    @property
    def kv_slots(self) -> list[tuple[int, int, str, str]]:
        """(layer within the graph, kind: 0 key / 1 value, past name, present name) per K/V tensor."""
        return [(index, kind, f"past.{layer}.{name}", f"present.{layer}.{name}")
                for index, layer in enumerate(range(*self.layers)) for kind, name in enumerate(("key", "value"))]


class Bundle:
    """A directory written by ``mirror-ort export``."""

    def __init__(self, path: Path, manifest: dict):
        self.path = Path(path)
        self.manifest = manifest

    @classmethod
    def load(cls, path) -> "Bundle":
        path = Path(path)
        file = path / MANIFEST
        if not file.is_file():
            raise MirrorError(f"{path} is not a mirror-ort bundle (no {MANIFEST}): create one with `mirror-ort export`")
        try:
            manifest = json.loads(file.read_text())
        except json.JSONDecodeError as e:
            raise MirrorError(f"{file} is not valid JSON ({e}): re-export the bundle") from None
        version = manifest.get("schema_version")
        if version != SCHEMA_VERSION:
            raise MirrorError(f"{file} has schema version {version}, this mirror-ort reads {SCHEMA_VERSION}: re-export the bundle")
        bundle = cls(path, manifest)
        for role in GRAPH_ROLES:
            if role in manifest["graphs"] and not bundle.graph(role).path.is_file():
                raise MirrorError(f"{bundle.graph(role).path} named in {MANIFEST} is missing: re-export the bundle")
        return bundle

    def save(self) -> None:
        (self.path / MANIFEST).write_text(json.dumps(self.manifest, indent=2) + "\n")

    def graph(self, role: str) -> GraphSpec:
        g = self.manifest["graphs"].get(role)
        if g is None:
            raise MirrorError(f"bundle {self.path} has no {role} graph: re-export it with a draft (--draft)")
        return GraphSpec.from_entry(role, self.path / g["file"], g)

    @property
    def has_draft(self) -> bool:
        return "draft" in self.manifest["graphs"]

    @property
    def exit_layer(self) -> int:
        return self.manifest["early_exit"]["layer"]

    @property
    def kappa(self) -> int:
        return self.manifest["early_exit"]["kappa"]

    @property
    def vocab_size(self) -> int:
        return self.manifest["model"]["vocab_size"]

    @property
    def max_length(self) -> int:
        """The longest sequence the graphs reproduce exactly."""
        model = self.manifest["model"]
        limits = [model["max_position_embeddings"], model.get("attention_span_limit") or 1 << 30]
        return min(limits)

    @property
    def eos_token_ids(self) -> list[int]:
        return self.manifest["tokenizer"]["eos_token_ids"]

    def describe(self) -> str:
        m, g = self.manifest["model"], self.manifest["graphs"]
        draft = g.get("draft")
        lines = [
            f"bundle {self.path}: {m['architecture']} target, {m['num_layers']} layers, vocab {m['vocab_size']}, {m['dtype']}",
            f"  early exit after layer {self.exit_layer} of {m['num_layers']}, kappa {self.kappa}",
        ]
        for role in GRAPH_ROLES:
            if role in g:
                static = f", static {g[role]['static']}" if g[role].get("static") else ""
                lines.append(f"  {role}: {g[role]['file']} layers {g[role]['layers']}{static}")
        if draft:
            lines.append(f"  draft source {draft.get('source')}, {draft.get('streams', 0)} stream heads")
        return "\n".join(lines)
