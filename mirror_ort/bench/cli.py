"""``mirror-ort bench BUNDLE --dataset question.jsonl``: the click command."""

import click

from ..click_types import INT_OR_AUTO
from ..generation import GenerationConfig
from .rows import PEER_WINDOW


@click.command()
@click.argument("bundles", nargs=-1, required=True, type=click.Path())
@click.option("--dataset", required=True, type=click.Path(),
              help="SpecBench-format JSONL (question_id, category, turns), e.g. spec_bench/question.jsonl.")
@click.option("--per-category", type=int, help="First N questions of each category (default: all).")
@click.option("--categories", help="Comma-separated categories to run (default: all in the dataset).")
@click.option("--turns", type=click.Choice(["first", "all"]), default="first", show_default=True,
              help="first: one prompt per question; all: every turn (multi-turn chats).")
@click.option("--no-chat", is_flag=True,
              help="Plain prompts without the chat template (for base models); first turns only.")
@click.option("--methods", default="ar,sd,mirror,ort-genai,hf", show_default=True,
              help="Comma-separated: ar, sd, mirror, ort-genai (+ its speculative mode), hf (+ assisted); "
                   "also ort-genai-sd or hf-assisted alone, and optimum (optimum-onnx's ORTModelForCausalLM on its own "
                   "fp32 export).")
@click.option("--alloc", type=click.Choice(["shared", "split", "both"]), default="shared", show_default=True,
              help="shared: every method all cores; split: target 1 thread + draft 1 thread.")
@click.option("--threads", type=int, help="Cores that 'all cores' means (default: all this process may use).")
@click.option("--warmup", type=int, default=1, show_default=True, help="Untimed generations per row before timing.")
@click.option("--max-new-tokens", type=int, default=128, show_default=True)
@click.option("--max-length", type=int, help="Cache capacity of mirror-ort's sessions (default: model limit, <= 2048).")
@click.option("--gamma", type=INT_OR_AUTO, default="auto", show_default=True,
              help="Draft window of mirror-ort's rows, or auto (chosen each step); the peers draft this many, "
                   f"{PEER_WINDOW} with auto.")
@click.option("--kappa", type=int, help="Early-exit candidates per position (default: the bundle's).")
@click.option("--max-branches", type=int, default=8, show_default=True, help="Cap on draft-tree branches.")
@click.option("--temperature", type=float, default=0.0, show_default=True, help="0 = greedy (lossless is measured).")
@click.option("--top-p", type=float, default=1.0, show_default=True)
@click.option("--top-k", type=int, default=0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--target-ep", default="cpu", show_default=True, help="Target provider name[:device].")
@click.option("--draft-ep", default="cpu", show_default=True, help="Draft provider name[:device].")
@click.option("--target-ep-option", multiple=True, help="Target provider option key=value (repeatable).")
@click.option("--draft-ep-option", multiple=True, help="Draft provider option key=value (repeatable).")
@click.option("--allow-cpu-fallback", is_flag=True, help="Let ONNX Runtime run unsupported nodes on the CPU.")
@click.option("--genai-precision", default="bundle", show_default=True,
              help="Precision of the onnxruntime-genai models: bundle (each bundle's target precision), "
                   "or fp32, int8, int4 for all.")
@click.option("--cache-dir", type=click.Path(), help="Where built peer models are kept (default ~/.cache/mirror-ort).")
@click.option("--json", "json_out", type=click.Path(), help="Write the full report as JSON here.")
@click.option("--plot", "plot_out", type=click.Path(), help="Draw speedup per category per method into this PNG.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def bench(bundles, dataset, per_category, categories, turns, no_chat, methods, alloc, threads, warmup, max_new_tokens,
          max_length, gamma, kappa, max_branches, temperature, top_p, top_k, seed, target_ep, draft_ep,
          target_ep_option, draft_ep_option, allow_cpu_fallback, genai_precision, cache_dir, json_out, plot_out,
          no_progress):
    """Time ar, sd, mirror and the peers on SpecBench prompts; print tables per category.

    Speedup is tokens/s over `ar` of the first BUNDLE with all cores. More bundles of the
    same model (say an int4 export beside the fp32 one) add rows named ar@int4, sd@int4, ...
    to the same interleaved run. Lossless is the share of prompts whose greedy token ids
    equal those of `ar` of the row's own bundle. Peers that are not installed are skipped
    with the command that installs them.
    """
    from .suite import BenchOptions, run_bench

    settings = GenerationConfig().updated(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                          top_k=top_k, seed=seed, gamma=gamma, kappa=kappa, max_branches=max_branches)
    options = BenchOptions(bundles=list(bundles), dataset=dataset, methods=methods, per_category=per_category,
                           categories=categories, turns=turns, chat=not no_chat, alloc=alloc, threads=threads, warmup=warmup,
                           settings=settings, target_ep=target_ep, draft_ep=draft_ep,
                           target_ep_option=tuple(target_ep_option), draft_ep_option=tuple(draft_ep_option),
                           max_length=max_length, allow_cpu_fallback=allow_cpu_fallback,
                           genai_precision=genai_precision, cache_dir=cache_dir, json_out=json_out,
                           plot_out=plot_out, progress=not no_progress)
    _, text = run_bench(options, log=lambda m: click.echo(m, err=True))
    click.echo(text)
