"""``mirror-ort export``: a model source becomes a bundle (prefix, suffix, draft, manifest).

The bundle is written to a temporary directory beside the destination and renamed
only once every graph is written and validated, so a failure never leaves a
half-written bundle behind.
"""

import json
import platform
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.export import Dim

from .. import __version__
from ..bundle import KV_CACHE_LAYOUT, MANIFEST, SCHEMA_VERSION, Bundle, Manifest, sha256
from ..errors import MirrorError
from ..generation import GenerationConfig
from ..output_dir import claim_output
from . import grouped_attention
from .architectures import arch_spec
from .draft_source import draft_module, resolve_draft
from .onnx_graph import export_graph, graph_io
from .qdq import quantize_draft_qdq
from .quantize import DRAFT_PRECISIONS, PRECISIONS, quantize_graph
from .sources import Source, load_source
from .split import Prefix, Suffix
from .static import export_static_draft, static_sizes

DEFAULT_KAPPA = 8
DRAFT_VOCAB_MAP = "draft_vocab_map.json"  # V' target ids, in draft-vocabulary order


@dataclass
class ExportOptions:
    exit_layer: int | str | None = None  # default: the exit adapter's layer, else N // 2; "auto": exit_layer.py
    kappa: int = DEFAULT_KAPPA
    draft: str | None = "auto"  # "auto", "layers:K", a model source, or None for no draft
    force: bool = False
    validate: bool = True
    trust_remote_code: bool = False
    thresholds: dict | None = None
    static: dict | None = None  # {"seq": W, "capacity": C}: a static-shape draft for NPUs (export/static.py)
    precision: str = "fp32"  # target weights: fp32, fp16, int8, int4 (export/quantize.py)
    draft_precision: str | None = None  # default: the target's (fp32 for --static); qdq: export/qdq.py
    exit_adapter: bool = True  # use a distilled draft's trained exit adapter (export/exit_adapter.py)


def export_bundle(model: str | None, output, options: ExportOptions = ExportOptions(), log=print) -> Bundle:
    output = Path(output)
    claim_output(output, options.force, (MANIFEST,), "a mirror-ort bundle")
    t0 = time.perf_counter()
    source = load_source(model, options.trust_remote_code)
    config = source.model.config
    spec = arch_spec(config)
    n = config.num_hidden_layers
    draft, draft_facts = _draft(source, options)
    adapter, adapter_source = _exit_adapter(source, options)
    exit_layer, selection = options.exit_layer, None
    if exit_layer == "auto":
        exit_layer, selection = _auto_exit_layer(source, options, draft, draft_facts, adapter, log)
    elif exit_layer is None:
        exit_layer = adapter.exit_layer if adapter else n // 2
    if adapter is not None and adapter.exit_layer != exit_layer:
        raise MirrorError(f"the exit adapter in {adapter_source} was trained for exit layer {adapter.exit_layer}, "
                          f"not {exit_layer}: pass --exit-layer {adapter.exit_layer}, or --no-exit-adapter")
    if not 1 <= exit_layer <= n - 1:
        raise MirrorError(f"--exit-layer {exit_layer} is outside 1..{n - 1} for this {n}-layer model")
    if not 1 <= options.kappa <= config.vocab_size:
        raise MirrorError(f"--kappa {options.kappa} is outside 1..{config.vocab_size} (the vocabulary size)")
    exit_vocab = getattr(draft, "vocab_map", None)  # the early exit scores the draft's ids (split.py)
    if exit_vocab is not None and options.kappa > len(exit_vocab):
        raise MirrorError(f"--kappa {options.kappa} exceeds the draft's vocabulary of {len(exit_vocab)} ids, "
                          "which the early exit scores: pass a smaller --kappa")
    if options.precision not in PRECISIONS:
        raise MirrorError(f"unknown precision {options.precision!r} (choose from {', '.join(PRECISIONS)})")
    if options.draft_precision is not None and options.draft_precision not in DRAFT_PRECISIONS:
        raise MirrorError(f"unknown draft precision {options.draft_precision!r} "
                          f"(choose from {', '.join(DRAFT_PRECISIONS)})")
    static = static_sizes(options.static, config.max_position_embeddings)
    draft_precision = options.draft_precision or ("fp32" if static else options.precision)
    if static and draft_precision not in ("fp32", "qdq"):
        raise MirrorError("--static drafts are for NPU providers, which cannot run MatMulNBits or fp16 weights: "
                          "pass --draft-precision fp32 or qdq")
    if draft_precision == "qdq" and not static:
        raise MirrorError("--draft-precision qdq quantizes a static draft for NPUs: add --static "
                          "(for a CPU or CUDA draft use int8 or int4)")
    if static and draft is None:
        raise MirrorError("--static shapes the draft graph but this export has none: drop --draft none")
    log(f"loaded {source.description['source']} ({config.model_type}, {n} layers) in {time.perf_counter() - t0:.1f}s")

    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        graphs = {}
        # the target's graphs keep a lone token exact as suits the precision (export/decoder.py)
        prefix = Prefix(source.model, exit_layer, options.kappa, spec, adapter, precision=options.precision,
                        exit_vocab=exit_vocab)
        for role, module, layers in (("prefix", prefix, (0, exit_layer)),
                                     ("suffix", Suffix(source.model, exit_layer, spec, precision=options.precision),
                                      (exit_layer, n)),
                                     ("draft", draft, None)):
            if module is None:
                continue
            t = time.perf_counter()
            facts = draft_facts if role == "draft" else {}
            layers = layers or (0, len(module.span.layers))
            if role == "draft" and static:
                graphs[role] = export_static_draft(module, layers, tmp, static, facts)
            else:
                graphs[role] = _export_role(role, module, layers, tmp, config.hidden_size, facts)
            precision = options.precision if role != "draft" else draft_precision
            if precision == "qdq":
                graphs[role]["quantization"] = quantize_draft_qdq(tmp / graphs[role]["file"], graphs[role], source, log)
            else:
                quantize_graph(tmp / graphs[role]["file"], precision)
            graphs[role]["precision"] = precision
            log(f"exported {role}.onnx (layers {layers[0]}..{layers[1] - 1}, {precision}) "
                f"in {time.perf_counter() - t:.1f}s")
        source.tokenizer.save_pretrained(tmp, legacy_format=False)  # tokenizer.json only: no slow-tokenizer files
        if draft_facts.get("vocab_map"):
            (tmp / draft_facts["vocab_map"]).write_text(json.dumps(draft.vocab_map.tolist()))
        # Read back through the typed contract: what export writes is what the runtime accepts.
        head = (f"final RMSNorm + the LM head's rows of the draft's {len(exit_vocab)} ids, Top-kappa log-probs over them"
                if exit_vocab is not None else "final RMSNorm + LM head, Top-kappa log-probs")
        early_exit = {"layer": exit_layer, "kappa": options.kappa, "head": ("exit adapter, then " if adapter else "") + head,
                      "vocab_map": DRAFT_VOCAB_MAP if exit_vocab is not None else None,
                      "adapter": adapter.describe(adapter_source) if adapter else None, "selection": selection}
        manifest = Manifest.from_json(_manifest(source, spec, early_exit, graphs, tmp), tmp, MANIFEST)
        bundle = Bundle(tmp, manifest)
        bundle.save()
        if options.validate:
            from .validate import validate_bundle

            report = validate_bundle(bundle, source, thresholds=options.thresholds, log=log)
            if not report["passed"]:
                failed = [f"{c['name']}/{c['graph']}" for c in report["checks"] if not c["passed"]]
                raise MirrorError(f"export failed validation ({', '.join(failed)}): see the report above; "
                                  "use --no-validate to keep the bundle anyway")
        if output.exists():  # claim_output let only an empty directory or an earlier bundle through
            shutil.rmtree(output)
        tmp.rename(output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    bundle = Bundle.load(output)
    log(f"bundle written to {output} in {time.perf_counter() - t0:.1f}s")
    return bundle


def _draft(source: Source, options: ExportOptions):
    """The draft module and its manifest facts (None, {} without a draft)."""
    if options.draft is None or options.draft == "none":
        return None, {}
    choice = resolve_draft(options.draft, source.description, source.model.config.num_hidden_layers)
    module, facts = draft_module(choice, source, options.trust_remote_code)
    if getattr(module, "vocab_map", None) is not None:
        facts["vocab_map"] = DRAFT_VOCAB_MAP
    return module, facts


def _auto_exit_layer(source: Source, options: ExportOptions, draft, draft_facts: dict, adapter, log):
    """``--exit-layer auto``: the adapter's layer when the draft brings one, else the shortest expected step."""
    from .exit_layer import choose_exit_layer, measure_overlaps

    if adapter is not None:
        log(f"exit layer auto: {adapter.exit_layer}, the layer the draft's exit adapter was trained for")
        return adapter.exit_layer, {"by": "the exit adapter's layer"}
    model = source.model
    embedding = model.model.embed_tokens.weight.numel()
    target_weights = sum(p.numel() for p in model.parameters()) - embedding * (not model.config.tie_word_embeddings)
    draft_share = 0.1
    if draft is not None:
        draft_share = (sum(p.numel() for p in draft.parameters()) - draft.embed.weight.numel()) / target_weights
    overlaps = measure_overlaps(model, source.tokenizer, options.kappa)
    layer, steps = choose_exit_layer(overlaps, model.config.num_hidden_layers, draft_share,
                                     streams=draft_facts.get("streams", 0))
    half = model.config.num_hidden_layers // 2
    log(f"exit layer auto: {layer}: overlap {overlaps[layer]:.0%} with kappa {options.kappa} (at N/2 = {half}: "
        f"{overlaps[half]:.0%}); with a draft reading {draft_share:.0%} of the target's weights a Mirror-SD step "
        f"is expected to take {steps[layer]:.2f} target steps there ({steps[half]:.2f} at N/2)")
    return layer, {"by": "shortest expected Mirror-SD step", "draft_share": draft_share,
                   "overlaps": {str(k): v for k, v in overlaps.items()},
                   "expected_step": {str(k): v for k, v in steps.items()}}


def _exit_adapter(source: Source, options: ExportOptions):
    """The distilled draft's trained exit adapter (and where it came from), if it has one and it is wanted."""
    from .exit_adapter import has_exit_adapter, load_exit_adapter

    if not options.exit_adapter or options.draft in (None, "none"):
        return None, None
    choice = resolve_draft(options.draft, source.description, source.model.config.num_hidden_layers)
    if choice.kind != "distilled" or not has_exit_adapter(choice.path):
        return None, None
    return load_exit_adapter(choice.path, source.model), choice.spec


def _export_role(role, module, layers, directory: Path, hidden_size: int, facts: dict) -> dict:
    """Export one graph with dynamic batch, window, past and total lengths."""
    cfg_heads, head_dim = module.span.num_kv_heads, module.span.head_dim
    num_layers = layers[1] - layers[0]
    b, s, p = 2, 3, 4  # example sizes; all four dims are dynamic
    first = torch.randn(b, s, hidden_size) if role == "suffix" else torch.randint(0, 100, (b, s))
    positions = torch.arange(p, p + s).expand(b, s).contiguous()
    mask = torch.zeros(b, 1, s, p + s)
    head_rows = torch.tensor([0, s - 1])
    batch, seq, past_len, total, rows = Dim("batch"), Dim("seq"), Dim("past"), Dim("total"), Dim("rows")
    shared = module.span.shared_cache  # the target's BNSH cache buffers, see DecoderSpan
    if shared:
        past = tuple(torch.zeros(b, cfg_heads, p + s + 2, head_dim) for _ in range(2 * num_layers))
        past_dims = {0: batch, 2: Dim("capacity")}
    else:
        past = tuple(torch.zeros(b, p, cfg_heads, head_dim) for _ in range(2 * num_layers))
        past_dims = {0: batch, 1: past_len}
    dynamic = ({0: batch, 1: seq}, {0: batch, 1: seq}, {0: batch, 2: seq, 3: total}, {0: rows},
               tuple(past_dims for _ in past))
    kv = [f"{io}.{i}.{t}" for i in range(*layers) for t in ("key", "value") for io in ("past",)]
    presents = [n.replace("past.", "present.") for n in kv]
    first_name = "hidden" if role == "suffix" else "input_ids"
    outputs = {"prefix": ["hidden", "exit_ids", "exit_logprobs"], "suffix": ["logits", "next_ids"],
               "draft": ["logits", "next_ids"] + (["stream_logits", "stream_ids"] if facts.get("streams") else [])}[role]
    path = directory / f"{role}.onnx"
    export_graph(module, (first, positions, mask, head_rows, *past),
                 [first_name, "position_ids", "attention_mask", "head_rows", *kv],
                 outputs + presents, dynamic, path)
    grouped = module.span.grouped_attention and _grouped_attention(path, head_dim)
    layout = "BSND-shared" if grouped else "BNSH-shared" if shared else "BSND"
    return {"file": path.name, "layers": list(layers), "num_kv_heads": cfg_heads, "head_dim": head_dim,
            "kv_layout": layout, "one_row_exact": grouped or bool(module.span.padded_rows), **graph_io(path),
            "static": None, **facts}


def _grouped_attention(path: Path, head_dim: int) -> bool:
    """Rewrite the graph's GroupQueryAttention nodes (export/grouped_attention.py); weights in an
    external file stay where they are."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    if not grouped_attention.rewrite(model, head_dim, "position_ids", "attention_mask"):
        return False
    onnx.save(model, str(path))
    return True


def _manifest(source: Source, spec, early_exit: dict, graphs: dict, directory: Path) -> dict:
    import onnx
    import onnxruntime
    import transformers

    config, tokenizer = source.model.config, source.tokenizer
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    gen_eos = getattr(source.model.generation_config, "eos_token_id", None)
    for e in gen_eos if isinstance(gen_eos, list) else [gen_eos]:
        if e is not None and e not in eos and not source.description["kind"].endswith("gguf"):
            eos.append(e)
    eos = source.eos_token_ids or eos  # a source's own facts first (Gemma's <end_of_turn>)
    adds_bos = getattr(tokenizer, "add_bos_token", True) and tokenizer.bos_token_id is not None
    files = {p.name: sha256(p) for p in sorted(directory.iterdir()) if p.is_file() and p.name != MANIFEST}
    return {
        "schema_version": SCHEMA_VERSION,
        "model": {
            "architecture": spec.family,
            "num_layers": config.num_hidden_layers,
            "hidden_size": config.hidden_size,
            "num_heads": config.num_attention_heads,
            "num_kv_heads": config.num_key_value_heads,
            "head_dim": getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads,
            "vocab_size": config.vocab_size,
            "max_position_embeddings": config.max_position_embeddings,
            "attention_span_limit": None,  # sliding windows are in the graphs: exact at every length
            "tied_embeddings": bool(getattr(config, "tie_word_embeddings", False)),
            "dtype": "float32",
        },
        "early_exit": early_exit,
        "kv_cache": KV_CACHE_LAYOUT,
        "graphs": graphs,
        "files": files,
        "tokenizer": {
            "file": "tokenizer.json",
            "eos_token_ids": eos,
            "bos_token_id": tokenizer.bos_token_id if adds_bos else None,
            "bos_token": tokenizer.bos_token or "",
            "eos_token": tokenizer.eos_token or "",
            "chat_template": tokenizer.chat_template,
        },
        "generation": {k: v for k, v in asdict(GenerationConfig()).items() if k not in ("seed", "kappa")},
        "provenance": {
            **source.description,
            "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "versions": {"mirror_ort": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
                         "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
                         "python": platform.python_version()},
        },
    }
