"""One bench run end to end, as a function: prompts, rows, measurement, report.

    from mirror_ort.bench.suite import BenchOptions, run_bench
    report, text = run_bench(BenchOptions(bundles=["bundle/"], dataset="question.jsonl", per_category=2))
"""

import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..bundle import Bundle
from ..generation import GenerationConfig
from ..providers import available_cores, parse_provider
from ..runtime.cost import processor_name
from .alloc import allocation, parse_alloc
from .context import Context, default_cache_dir
from .dataset import load_prompts, parse_categories
from .genai_build import PRECISIONS
from .methods import parse_methods
from .report import categories, format_report, summarize
from .rows import BASELINE
from .runner import build_rows, run


@dataclass
class BenchOptions:
    bundles: list[str]  # the first one's ar is the baseline; the others (same model) add tagged rows
    dataset: str
    methods: str = "ar,sd,mirror,ort-genai,hf"
    per_category: int | None = None
    categories: str | None = None
    turns: str = "first"
    chat: bool = True  # False: plain prompts without the chat template (base models)
    alloc: str = "shared"
    threads: int | None = None  # "all cores" (default: the cores this process may use)
    warmup: int = 1
    settings: GenerationConfig = field(default_factory=GenerationConfig)
    target_ep: str = "cpu"
    draft_ep: str = "cpu"
    target_ep_option: tuple = ()
    draft_ep_option: tuple = ()
    max_length: int | None = None
    allow_cpu_fallback: bool = False
    genai_precision: str = "bundle"  # or fp32, int8, int4 for every bundle
    cache_dir: str | None = None
    json_out: str | None = None
    plot_out: str | None = None
    progress: bool = True


def _check(options: BenchOptions):
    from ..errors import MirrorError

    if options.genai_precision not in ("bundle", *PRECISIONS):
        raise MirrorError(f"--genai-precision {options.genai_precision!r}: choose from bundle, {', '.join(PRECISIONS)}")
    if not options.bundles:
        raise MirrorError("no bundle to bench: name at least one")
    if not options.chat and options.turns != "first":
        raise MirrorError("--no-chat benches single prompts: drop --turns all (later turns need the chat template)")
    if options.warmup < 0:
        raise MirrorError(f"--warmup {options.warmup}: must be 0 or more")
    if options.settings.max_new_tokens < 1:
        raise MirrorError(f"--max-new-tokens {options.settings.max_new_tokens}: must be at least 1")
    if options.plot_out:
        from .plot import check_plot_available

        check_plot_available()


def run_bench(options: BenchOptions, log=print):
    """Run the bench; return (the JSON-ready report, the text tables)."""
    import json

    _check(options)
    methods = parse_methods(options.methods)
    modes = parse_alloc(options.alloc)
    prompts = load_prompts(options.dataset, options.per_category, parse_categories(options.categories), options.turns)
    contexts = _contexts(options, log)
    ctx, bundle = contexts[0], contexts[0].bundle
    cores = options.threads or available_cores()
    rows, skipped = [], {}
    for c in contexts:
        more_rows, more_skipped = build_rows(c, methods, modes, cores, log=log)
        rows += more_rows
        skipped.update(more_skipped)
    settings = _settings(options, contexts, methods, modes, cores, prompts,
                         time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    load_before = _load_average()

    def write_report(result, complete: bool) -> dict:
        """The report so far; with --json it is rewritten after every prompt, so a long run
        that dies keeps what it measured (``"complete": false``)."""
        # other processes on the same cores distort every figure, multi-threaded rows the most
        settings["machine"]["load_average_1min"] = {"start": load_before, "end": _load_average()}
        report = {"settings": settings, "complete": complete, "prompts_done": len({r.prompt for r in result.records}),
                  "methods": summarize(result), "skipped": result.skipped,
                  "cost_curves": {k: v for c in contexts for k, v in c.cost_curves().items()}}
        if options.json_out:
            out = Path(options.json_out)
            out.parent.mkdir(parents=True, exist_ok=True)
            partial = out.with_name(out.name + ".partial")
            partial.write_text(json.dumps(report, indent=2, default=str) + "\n")
            partial.replace(out)
        return report

    checkpoint = (lambda partial: write_report(partial, complete=False)) if options.json_out else None
    result = run(ctx, rows, skipped, prompts, options.settings, warmup=options.warmup, progress=options.progress,
                 log=log, after_prompt=checkpoint, chat=options.chat)
    report = write_report(result, complete=True)
    summary = report["methods"]
    text = format_report(result, summary)
    for label, curve in report["cost_curves"].items():
        text += (f"\ncost curve used by gamma=auto ({label}): target ms for k rows "
                 + " ".join(f"{k}:{ms:.1f}" for k, ms in zip(curve["target_rows"], curve["target_ms"]))
                 + (f"; draft {curve['draft_ms']:.2f} ms per call" if curve["draft_ms"] is not None else ""))
    if options.plot_out:
        from .plot import plot_speedups

        plot_speedups(summary, categories(result), options.plot_out,
                      title=f"{bundle.source or bundle.path}: speedup over ar "
                            f"({', '.join(modes)})")
    return report, text


def _contexts(options: BenchOptions, log) -> list[Context]:
    """One context per bundle, tagged by the target's precision (or the directory, if taken)."""
    from ..errors import MirrorError

    target_ep = parse_provider(options.target_ep, options.target_ep_option)
    draft_ep = parse_provider(options.draft_ep, options.draft_ep_option)
    cache_dir = Path(options.cache_dir) if options.cache_dir else default_cache_dir()
    contexts, peer_cache = [], {}
    for index, path in enumerate(options.bundles):
        bundle = Bundle.load(path)
        ctx = Context(bundle, target_ep, draft_ep, max_length=options.max_length,
                      allow_cpu_fallback=options.allow_cpu_fallback, cache_dir=cache_dir, log=log,
                      peer_cache=peer_cache, settings=options.settings)
        ctx.genai_precision = ctx.precision if options.genai_precision == "bundle" else options.genai_precision
        if index:
            first = contexts[0].bundle
            if any(bundle.path.resolve() == c.bundle.path.resolve() for c in contexts):
                raise MirrorError(f"{bundle.path} is named twice: bench each bundle once")
            if _tokenizer_of(bundle) != _tokenizer_of(first):
                raise MirrorError(f"{bundle.path} has another tokenizer or chat template than {first.path}: "
                                  "bench bundles of one model together, others in separate runs")
            taken = {c.tag for c in contexts} | {"@" + contexts[0].precision}
            ctx.tag = "@" + ctx.precision if "@" + ctx.precision not in taken else "@" + bundle.path.name
            if ctx.tag in taken:
                raise MirrorError(f"two bundles would both be called {ctx.tag[1:]}: rename one directory")
        contexts.append(ctx)
    return contexts


def _tokenizer_of(bundle: Bundle) -> tuple:
    tokenizer = bundle.manifest.tokenizer
    return (tokenizer.chat_template, tuple(tokenizer.eos_token_ids), bundle.manifest.files[tokenizer.file])


def _settings(options, contexts, methods, modes, cores, prompts, started) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    bundle = contexts[0].bundle
    versions = {}
    for package in ("mirror-ort", "onnxruntime", "onnxruntime-genai", "torch", "transformers"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return {
        "bundle": str(bundle.path),
        "bundles": [{"path": str(c.bundle.path), "tag": c.tag, "precision": c.precision,
                     "genai_precision": c.genai_precision} for c in contexts],
        "source": bundle.source,
        "draft": bundle.graph("draft").source if bundle.has_draft else None,
        "exit_layer": bundle.exit_layer,
        "dataset": str(options.dataset),
        "per_category": options.per_category,
        "categories": list(dict.fromkeys(p.category for p in prompts)),
        "turns": options.turns,
        "prompt_format": "chat template" if options.chat else "plain text, no chat template",
        "prompts": len(prompts),
        "methods": methods,
        "alloc": modes,
        "allocations": {m: allocation(m, cores).as_dict() for m in ("shared", *modes)},
        "cores": cores,
        "warmup": options.warmup,
        "order": "interleaved: every row on prompt 1, then every row on prompt 2, ...",
        "baseline": BASELINE,
        "lossless_reference": "ar of the row's own bundle" if options.settings.greedy else None,
        **{k: v for k, v in asdict(options.settings).items()},
        "target_ep": options.target_ep, "target_ep_options": list(options.target_ep_option),
        "draft_ep": options.draft_ep, "draft_ep_options": list(options.draft_ep_option),
        "genai_precision": options.genai_precision,
        "speedup_baseline": f"{BASELINE} of the first bundle ({contexts[0].precision})",
        "machine": {"platform": platform.platform(), "processor": processor_name(), "python": platform.python_version()},
        "versions": versions,
        "started": started,
    }


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None
