"""The bundle manifest ``mirror_ort.json``: the one contract between export and runtime.

A bundle is untrusted input (people share them), so the manifest is read in one place, into
typed dataclasses: a missing key or a value of the wrong type is refused with its dotted name
(``graphs.prefix.layers``), every file it names must lie inside the bundle, and every file's
sha256 is checked when the bundle is loaded (``verify=False`` skips the hashing for a bundle
that was verified already). Nothing in a bundle runs as code; its chat template is rendered in
a sandbox (``chat.py``).

Sections:
* ``model``: the target's shape; ``early_exit``: l_e, kappa and what the exit head is;
* ``graphs``: ``prefix``, ``suffix``, ``draft``: file, the layers whose K/V each owns, K/V
  geometry and layout, precision, I/O (names, dtypes, symbolic shapes) with ``names``
  mapping the runtime's logical names to the graph's, static sizes for NPU graphs;
* ``files``: the sha256 of every file in the bundle; ``tokenizer``: file, special tokens,
  chat template; ``generation``: decoding defaults; ``provenance``: where it came from.
Validation writes its report to ``validation.json`` beside the manifest, never into it.
"""

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .errors import MirrorError
from .generation import GenerationConfig

MANIFEST = "mirror_ort.json"
VALIDATION = "validation.json"
SCHEMA_VERSION = 3
GRAPH_ROLES = ("prefix", "suffix", "draft")

KV_CACHE_LAYOUT = {
    "BSND": {
        "graphs": "the draft",
        "past": "past.{layer}.key|value: [batch, past, kv_heads, head_dim], positions 0..past-1",
        "present": "present.{layer}.key|value: [batch, seq, kv_heads, head_dim], the new positions only",
    },
    "BSND-shared": {
        "graphs": "the target's prefix and suffix",
        "past": "past.{layer}.key|value: [width, 1, kv_heads, head_dim], the first W >= total positions of the "
                "cache, valid positions 0..total-seq-1",
        "present": "present.{layer}.key|value: the same buffer as the past; the graph writes the new positions "
                   "at their position_ids in place",
    },
    "BNSH-shared": {
        "graphs": "the target's prefix and suffix that keep GroupQueryAttention (quantized, or with sliding layers)",
        "past": "past.{layer}.key|value: [batch, kv_heads, capacity, head_dim], valid positions 0..total-seq-1",
        "present": "present.{layer}.key|value: the same buffer as the past; the graph writes the new "
                   "positions total-seq..total-1 in place",
    },
    "attention_mask": "float32 [batch, 1, seq, total], additive: 0 attends, -1e9 masks (total = past + seq); "
                      "BNSH-shared graphs are causal and read only its width",
    "mask_value": -1e9,
}
KV_LAYOUTS = ("BSND", "BSND-shared", "BNSH-shared")
# Logical I/O names the runtime uses -> the graph's own names (genai_config's "inputs"/"outputs" idea).
# The first entry of each role is the graph's first input (token ids, or the prefix's hidden state).
GRAPH_NAMES = {
    "prefix": {"input_ids": "input_ids", "hidden": "hidden", "exit_ids": "exit_ids", "exit_logprobs": "exit_logprobs"},
    "suffix": {"hidden": "hidden", "logits": "logits", "next_ids": "next_ids"},
    "draft": {"input_ids": "input_ids", "logits": "logits", "next_ids": "next_ids", "stream_logits": "stream_logits",
              "stream_ids": "stream_ids"},
    # not in the manifest: the runtime joins prefix and suffix into it (runtime/fused.py)
    "target": {"input_ids": "input_ids", "logits": "logits", "next_ids": "next_ids"},
}
COMMON_NAMES = {"position_ids": "position_ids", "attention_mask": "attention_mask", "head_rows": "head_rows",
                "past_key": "past.{layer}.key", "past_value": "past.{layer}.value",
                "present_key": "present.{layer}.key", "present_value": "present.{layer}.value"}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _Reader:
    """Typed access to one JSON object, naming the dotted key of whatever is wrong."""

    def __init__(self, obj, where: str, source: str):
        if not isinstance(obj, dict):
            raise MirrorError(f"{source}: {where or 'the manifest'} must be an object: re-export the bundle")
        self.obj, self.where, self.source = obj, where, source

    def key(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def get(self, name: str, kind, default=..., check=None):
        if name not in self.obj:
            if default is ...:
                raise MirrorError(f"{self.source}: {self.key(name)} is missing: re-export the bundle")
            return default
        value = self.obj[name]
        if value is None and default is None:
            return None
        if not _is(value, kind):
            raise MirrorError(f"{self.source}: {self.key(name)} must be {_describe(kind)}, got {type(value).__name__} "
                              f"{_short(value)}: re-export the bundle")
        if check is not None and not check(value):
            raise MirrorError(f"{self.source}: {self.key(name)} = {_short(value)} is out of range: re-export the bundle")
        return value

    def reader(self, name: str) -> "_Reader":
        return _Reader(self.get(name, dict), self.key(name), self.source)


def _is(value, kind) -> bool:
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(kind, tuple) and kind[0] is list:
        return isinstance(value, list) and all(_is(v, kind[1]) for v in value)
    return isinstance(value, kind)


def _describe(kind) -> str:
    if isinstance(kind, tuple) and kind[0] is list:
        return f"a list of {_describe(kind[1])}"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "an object",
            list: "a list"}.get(kind, str(kind))


def _short(value) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _positive(v) -> bool:
    return v > 0


def _non_negative(v) -> bool:
    return v >= 0


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: list  # ints and symbolic names

    @classmethod
    def read(cls, r: _Reader) -> "TensorSpec":
        shape = r.get("shape", list)
        if not all(_is(d, int) or isinstance(d, str) for d in shape):
            raise MirrorError(f"{r.source}: {r.key('shape')} must list integers and names: re-export the bundle")
        return cls(r.get("name", str), r.get("dtype", str), shape)


@dataclass(frozen=True)
class GraphSpec:
    """One graph of the bundle as the manifest declares it."""

    role: str
    file: str
    path: Path  # the file, resolved inside the bundle
    layers: tuple[int, int]  # global layer indices [start, end) whose K/V this graph owns
    num_kv_heads: int
    head_dim: int
    kv_layout: str
    precision: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    names: dict  # logical name -> graph name (``GRAPH_NAMES`` / ``COMMON_NAMES``)
    static: dict | None = None  # {"batch", "seq", "capacity"} for static-shape graphs
    streams: int = 0  # the draft's speculative-streaming heads
    source: str | None = None  # the draft's source (layers:K, a distilled draft, a model)
    vocab_map: str | None = None  # the draft's reduced vocabulary: a file of target ids
    quantization: dict | None = None  # how a QDQ draft was calibrated
    # A lone row computes the bits it would inside a window (the graph pads attention itself,
    # export/decoder.py): the runtime adds no filler row. Older bundles say nothing: False.
    one_row_exact: bool = False
    extra: dict = field(default_factory=dict)  # facts another version added, kept as they are

    @property
    def input_names(self) -> list[str]:
        return [v.name for v in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [v.name for v in self.outputs]

    @property
    def first_input(self) -> str:
        """The logical name of the graph's first input: ``input_ids``, or ``hidden`` for the suffix."""
        return next(iter(GRAPH_NAMES[self.role]))

    def name(self, logical: str, layer: int | None = None) -> str:
        """The graph's name for a logical input or output (K/V names take their layer)."""
        name = self.names[logical]
        return name.format(layer=layer) if layer is not None else name

    @property
    def kv_slots(self) -> list[tuple[int, int, str, str]]:
        """(layer within the graph, kind: 0 key / 1 value, past name, present name) per K/V tensor."""
        return [(index, kind, self.name(f"past_{name}", layer), self.name(f"present_{name}", layer))
                for index, layer in enumerate(range(*self.layers)) for kind, name in enumerate(("key", "value"))]

    KNOWN = ("file", "layers", "num_kv_heads", "head_dim", "kv_layout", "precision", "inputs", "outputs", "names",
             "static", "streams", "source", "vocab_map", "quantization", "one_row_exact")

    @classmethod
    def read(cls, role: str, r: _Reader, bundle_dir: Path) -> "GraphSpec":
        file = r.get("file", str)
        layers = r.get("layers", (list, int))
        if len(layers) != 2 or not 0 <= layers[0] < layers[1]:
            raise MirrorError(f"{r.source}: {r.key('layers')} = {layers} must be [start, end) with 0 <= start < end: "
                              "re-export the bundle")
        static = r.get("static", dict, None)
        if static is not None:
            s = _Reader(static, r.key("static"), r.source)
            static = {k: s.get(k, int, check=_positive) for k in ("batch", "seq", "capacity")}
        names = {**COMMON_NAMES, **GRAPH_NAMES[role]}
        declared = r.get("names", dict, None) or {}
        for key, value in declared.items():
            if key not in names or not isinstance(value, str):
                raise MirrorError(f"{r.source}: {r.key('names')}.{key} is not a logical name of a {role} graph "
                                  f"(known: {', '.join(names)}): re-export the bundle")
        names.update(declared)
        return cls(
            role=role, file=file, path=inside(bundle_dir, file, r.key("file"), r.source), layers=tuple(layers),
            num_kv_heads=r.get("num_kv_heads", int, check=_positive), head_dim=r.get("head_dim", int, check=_positive),
            kv_layout=r.get("kv_layout", str, check=lambda v: v in KV_LAYOUTS),
            precision=r.get("precision", str, "fp32"),
            inputs=tuple(TensorSpec.read(_Reader(v, f"{r.key('inputs')}[{i}]", r.source))
                         for i, v in enumerate(r.get("inputs", list))),
            outputs=tuple(TensorSpec.read(_Reader(v, f"{r.key('outputs')}[{i}]", r.source))
                          for i, v in enumerate(r.get("outputs", list))),
            names=names, static=static, streams=r.get("streams", int, 0, check=_non_negative),
            source=r.get("source", str, None), vocab_map=r.get("vocab_map", str, None),
            quantization=r.get("quantization", dict, None), one_row_exact=r.get("one_row_exact", bool, False),
            extra={k: v for k, v in r.obj.items() if k not in cls.KNOWN})

    @classmethod
    def from_entry(cls, role: str, entry: dict, bundle_dir: Path) -> "GraphSpec":
        """The spec of a ``graphs.ROLE`` entry that export is still writing (its file in ``bundle_dir``)."""
        return cls.read(role, _Reader(entry, f"graphs.{role}", MANIFEST), bundle_dir)

    def to_json(self) -> dict:
        out = {"file": self.file, "layers": list(self.layers), "num_kv_heads": self.num_kv_heads,
               "head_dim": self.head_dim, "kv_layout": self.kv_layout, "precision": self.precision,
               "inputs": [asdict(t) for t in self.inputs], "outputs": [asdict(t) for t in self.outputs],
               "names": {k: v for k, v in self.names.items() if k in {**COMMON_NAMES, **GRAPH_NAMES[self.role]}},
               "static": self.static, "streams": self.streams, "one_row_exact": self.one_row_exact}
        for key in ("source", "vocab_map", "quantization"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return {**out, **self.extra}


@dataclass(frozen=True)
class ModelShape:
    architecture: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    max_position_embeddings: int
    attention_span_limit: int | None = None  # longest context the graphs reproduce exactly (None: any)
    tied_embeddings: bool = False
    dtype: str = "float32"

    @classmethod
    def read(cls, r: _Reader) -> "ModelShape":
        positive = {f.name: r.get(f.name, int, check=_positive) for f in fields(cls)
                    if f.name in ("num_layers", "hidden_size", "num_heads", "num_kv_heads", "head_dim", "vocab_size",
                                  "max_position_embeddings")}
        return cls(architecture=r.get("architecture", str), **positive,
                   attention_span_limit=r.get("attention_span_limit", int, None, check=_positive),
                   tied_embeddings=r.get("tied_embeddings", bool, False), dtype=r.get("dtype", str, "float32"))


@dataclass(frozen=True)
class EarlyExit:
    layer: int
    kappa: int
    head: str = "final RMSNorm + LM head, Top-kappa log-probs"
    adapter: dict | None = None  # a trained exit adapter inside prefix.onnx (what it is, how it was trained)
    selection: dict | None = None  # how --exit-layer auto chose the layer (export/exit_layer.py)
    vocab_map: str | None = None  # the head scores only these target ids (a file: the draft's); None: all

    @classmethod
    def read(cls, r: _Reader, num_layers: int, vocab_size: int) -> "EarlyExit":
        return cls(layer=r.get("layer", int, check=lambda v: 1 <= v < num_layers),
                   kappa=r.get("kappa", int, check=lambda v: 1 <= v <= vocab_size),
                   head=r.get("head", str, cls.head), adapter=r.get("adapter", dict, None),
                   selection=r.get("selection", dict, None), vocab_map=r.get("vocab_map", str, None))


@dataclass(frozen=True)
class TokenizerFacts:
    file: str
    eos_token_ids: list[int]
    bos_token_id: int | None = None  # prepended to plain-text prompts
    bos_token: str = ""  # the special tokens as the chat template writes them
    eos_token: str = ""
    chat_template: str | None = None

    @classmethod
    def read(cls, r: _Reader, vocab_size: int) -> "TokenizerFacts":
        in_vocab = lambda v: 0 <= v < vocab_size  # noqa: E731
        return cls(file=r.get("file", str), eos_token_ids=r.get("eos_token_ids", (list, int),
                                                                 check=lambda ids: all(map(in_vocab, ids))),
                   bos_token_id=r.get("bos_token_id", int, None, check=in_vocab), bos_token=r.get("bos_token", str, ""),
                   eos_token=r.get("eos_token", str, ""), chat_template=r.get("chat_template", str, None))


@dataclass(frozen=True)
class Manifest:
    model: ModelShape
    early_exit: EarlyExit
    graphs: dict  # role -> GraphSpec
    files: dict  # relative path -> sha256, for every file of the bundle
    tokenizer: TokenizerFacts
    generation: GenerationConfig = field(default_factory=GenerationConfig)  # the bundle's decoding defaults
    provenance: dict = field(default_factory=dict)
    kv_cache: dict = field(default_factory=lambda: KV_CACHE_LAYOUT)
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def from_json(cls, obj, bundle_dir: Path, source: str = MANIFEST) -> "Manifest":
        r = _Reader(obj, "", source)
        version = r.get("schema_version", int)
        if version != SCHEMA_VERSION:
            raise MirrorError(f"{source} has schema version {version}, this mirror-ort reads {SCHEMA_VERSION}: "
                              "re-export the bundle with this mirror-ort")
        model = ModelShape.read(r.reader("model"))
        graphs_r = r.reader("graphs")
        unknown = sorted(set(graphs_r.obj) - set(GRAPH_ROLES))
        if unknown:
            raise MirrorError(f"{source}: graphs.{unknown[0]} is not a graph role ({', '.join(GRAPH_ROLES)})")
        graphs = {role: GraphSpec.read(role, graphs_r.reader(role), bundle_dir)
                  for role in GRAPH_ROLES if role in graphs_r.obj or role != "draft"}
        files = r.get("files", dict)
        for name, digest in files.items():
            inside(bundle_dir, name, f"files.{name}", source)
            if not isinstance(digest, str) or len(digest) != 64:
                raise MirrorError(f"{source}: files.{name} must be a sha256 hex digest: re-export the bundle")
        early_exit = EarlyExit.read(r.reader("early_exit"), model.num_layers, model.vocab_size)
        named = [g.file for g in graphs.values()] + [g.vocab_map for g in graphs.values() if g.vocab_map]
        if early_exit.vocab_map:
            inside(bundle_dir, early_exit.vocab_map, "early_exit.vocab_map", source)
            named.append(early_exit.vocab_map)
        tokenizer = TokenizerFacts.read(r.reader("tokenizer"), model.vocab_size)
        for name in named + [tokenizer.file]:
            if name not in files:
                raise MirrorError(f"{source}: {name} is not listed in files (with its sha256): re-export the bundle")
        return cls(model=model, early_exit=early_exit,
                   graphs=graphs, files=files, tokenizer=tokenizer,
                   generation=GenerationConfig().updated(f"{source}: generation", **r.get("generation", dict, {})),
                   provenance=r.get("provenance", dict, {}), kv_cache=r.get("kv_cache", dict, KV_CACHE_LAYOUT))

    def to_json(self) -> dict:
        return {"schema_version": self.schema_version, "model": asdict(self.model),
                "early_exit": asdict(self.early_exit), "kv_cache": self.kv_cache,
                "graphs": {role: g.to_json() for role, g in self.graphs.items()}, "files": self.files,
                "tokenizer": asdict(self.tokenizer), "generation": asdict(self.generation),
                "provenance": self.provenance}


def inside(bundle_dir: Path, name: str, key: str, source: str) -> Path:
    """``bundle_dir / name``, refused unless it is a plain relative path that stays in the bundle."""
    path = Path(name)
    if not name or path.is_absolute() or ".." in path.parts or name != path.as_posix():
        raise MirrorError(f"{source}: {key} = {name!r} is not a file inside the bundle (absolute paths and '..' "
                          "are refused): re-export the bundle")
    resolved = (bundle_dir / path).resolve()
    root = bundle_dir.resolve()
    if resolved != root and root not in resolved.parents:
        raise MirrorError(f"{source}: {key} = {name!r} leads outside the bundle (through a link): "
                          "re-export the bundle")
    return bundle_dir / path


class Bundle:
    """A directory written by ``mirror-ort export``: its manifest, checked, and its files."""

    def __init__(self, path: Path, manifest: Manifest):
        self.path = Path(path)
        self.manifest = manifest

    @classmethod
    def load(cls, path, verify: bool = True) -> "Bundle":
        """Read and check the manifest; with ``verify`` every file's sha256 too (a changed file is
        refused by name)."""
        path = Path(path)
        file = path / MANIFEST
        if not file.is_file():
            raise MirrorError(f"{path} is not a mirror-ort bundle (no {MANIFEST}): create one with `mirror-ort export`")
        try:
            obj = json.loads(file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise MirrorError(f"{file} is not valid JSON ({e}): re-export the bundle") from None
        bundle = cls(path, Manifest.from_json(obj, path, str(file)))
        for name, digest in bundle.manifest.files.items():
            where = path / name
            if not where.is_file():
                raise MirrorError(f"{where} named in {MANIFEST} is missing: re-export the bundle")
            if verify and sha256(where) != digest:
                raise MirrorError(f"{where} does not match its sha256 in {MANIFEST} (the file was changed): "
                                  "re-export the bundle, or restore the file")
        return bundle

    def save(self) -> None:
        (self.path / MANIFEST).write_text(json.dumps(self.manifest.to_json(), indent=2) + "\n")

    def file(self, name: str) -> Path:
        """A file the manifest names, inside the bundle."""
        return inside(self.path, name, name, MANIFEST)

    def token_ids(self, name: str) -> list[int]:
        """A file of target ids the manifest names (a reduced vocabulary), checked against the vocabulary."""
        path = self.file(name)
        try:
            ids = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise MirrorError(f"{path} is not a list of token ids ({str(e)[:80]}): re-export the bundle") from None
        if (not isinstance(ids, list) or not ids
                or not all(isinstance(i, int) and 0 <= i < self.vocab_size for i in ids)):
            raise MirrorError(f"{path} is not a list of ids inside the target's vocabulary of {self.vocab_size}: "
                              "re-export the bundle")
        return ids

    def graph(self, role: str) -> GraphSpec:
        g = self.manifest.graphs.get(role)
        if g is None:
            raise MirrorError(f"bundle {self.path} has no {role} graph: re-export it with a draft (--draft)")
        return g

    def write_validation(self, report: dict) -> Path:
        out = self.path / VALIDATION
        out.write_text(json.dumps(report, indent=2) + "\n")
        return out

    @property
    def validation(self) -> dict | None:
        """The last report ``validate`` wrote beside the manifest, if any."""
        file = self.path / VALIDATION
        return json.loads(file.read_text()) if file.is_file() else None

    @property
    def has_draft(self) -> bool:
        return "draft" in self.manifest.graphs

    @property
    def exit_layer(self) -> int:
        return self.manifest.early_exit.layer

    @property
    def kappa(self) -> int:
        return self.manifest.early_exit.kappa

    @property
    def vocab_size(self) -> int:
        return self.manifest.model.vocab_size

    @property
    def precision(self) -> str:
        return self.graph("prefix").precision

    @property
    def source(self) -> str | None:
        """The model source the bundle was exported from (provenance)."""
        return self.manifest.provenance.get("source")

    @property
    def max_length(self) -> int:
        """The longest sequence the graphs reproduce exactly."""
        model = self.manifest.model
        return min(model.max_position_embeddings, model.attention_span_limit or 1 << 30)

    @property
    def eos_token_ids(self) -> list[int]:
        return self.manifest.tokenizer.eos_token_ids

    def describe(self) -> str:
        m = self.manifest.model
        lines = [f"bundle {self.path}: {m.architecture} target, {m.num_layers} layers, vocab {m.vocab_size}, {m.dtype}",
                 f"  early exit after layer {self.exit_layer} of {m.num_layers}, kappa {self.kappa}"]
        for role, g in self.manifest.graphs.items():
            static = f", static {g.static}" if g.static else ""
            lines.append(f"  {role}: {g.file} layers {list(g.layers)}, {g.precision}{static}")
        if self.has_draft:
            d = self.graph("draft")
            lines.append(f"  draft source {d.source}, {d.streams} stream heads")
        return "\n".join(lines)
