"""``mirror-ort distill TARGET -o DRAFT_DIR``: make a fast draft with stream heads from a target.

Steps: load the target; generate (or reuse) the self-distillation data; pick the
reduced draft vocabulary; initialise the draft from the target; train within the
time box; measure on held-out prompts; write the draft directory.

DRAFT_DIR receives the draft (see ``draft_dir``) and ``distill.json`` (settings
and measured figures); the generated data and the training checkpoint live in
``DRAFT_DIR/work/`` so that ``--resume`` can continue an interrupted run. Ship
the directory without ``work/``.
"""

import json
import shutil
import time
from pathlib import Path

import click

from ..errors import MirrorError

WORK = "work"
REPORT = "distill.json"


@click.command("distill")
@click.argument("target", required=False)
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Draft directory to write (accepted by `mirror-ort export --draft`).")
@click.option("--minutes", default=30.0, show_default=True, type=float, help="Training time budget (data generation excluded).")
@click.option("--max-steps", type=click.IntRange(min=1), help="Stop after this many steps; the schedule follows steps (exactly repeatable).")
@click.option("--layers", default=2, show_default=True, type=click.IntRange(min=1), help="Draft decoder layers (the target's first K).")
@click.option("--streams", default=2, show_default=True, type=click.IntRange(min=0), help="Speculative-streaming heads (extra tokens per call).")
@click.option("--stream-width", type=click.IntRange(min=1), help="Hidden width of each stream head's MLP [default: the hidden size].")
@click.option("--draft-vocab", default=8192, show_default=True, type=click.IntRange(min=0),
              help="Target ids the draft's LM head scores (the most frequent in the data); 0 keeps the whole vocabulary.")
@click.option("--samples-per-prompt", default=1, show_default=True, type=click.IntRange(min=0), help="Sampled continuations per prompt, besides the greedy one.")
@click.option("--max-new-tokens", default=160, show_default=True, type=click.IntRange(min=1), help="Length of each generated continuation.")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1), help="Sequences per training step.")
@click.option("--lr", default=1e-3, show_default=True, type=float, help="Peak learning rate (AdamW, cosine over the budget).")
@click.option("--bf16/--fp32", default=True, show_default=True, help="Train with bfloat16 matmuls (autocast) or in float32.")
@click.option("--threads", type=click.IntRange(min=1), help="PyTorch threads [default: all cores].")
@click.option("--device", default="cpu", show_default=True,
              help="PyTorch device that generates the data and trains the draft: cpu, cuda, cuda:1, ...")
@click.option("--seed", default=0, show_default=True, type=int, help="Seeds data sampling, stream-head init and batch order.")
@click.option("--dtype", default="float16", show_default=True, type=click.Choice(["float16", "float32"]), help="Storage type of the saved weights (loaded as float32).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run in OUTPUT from its data and checkpoint.")
@click.option("--force", is_flag=True, help="Replace whatever OUTPUT holds.")
@click.option("--trust-remote-code", is_flag=True, help="Allow the target's own Python code (off by default).")
def distill(target, output: Path, minutes, max_steps, layers, streams, stream_width, draft_vocab, samples_per_prompt,
            max_new_tokens, batch_size, lr, bf16, threads, device, seed, dtype, resume, force, trust_remote_code):
    """Distil a draft with speculative-streaming heads from TARGET (default: the embedded SmolLM2-135M)."""
    import torch
    from tqdm import tqdm

    from ..export.sources import load_source
    from .data import DataOptions, generate_data
    from .draft_dir import DraftShape, draft_from_target, save_draft
    from .evaluate import summarize
    from .prompts import built_in_prompts
    from .train import Trainer, TrainOptions
    from .vocab import draft_index, reduced_vocabulary

    if minutes <= 0:
        raise MirrorError(f"--minutes {minutes:g} leaves no time to train: give a positive budget (e.g. --minutes 20)")
    if resume and force:
        raise MirrorError("--resume and --force contradict each other: pick one")
    device = _device(device)
    _claim_output(output, resume, force)
    if threads:
        torch.set_num_threads(threads)
    started = time.perf_counter()
    source = load_source(target, trust_remote_code)
    model, tokenizer, config = source.model.to(device), source.tokenizer, source.model.config
    if layers > config.num_hidden_layers:
        raise MirrorError(f"--layers {layers} exceeds the target's {config.num_hidden_layers} layers")
    if draft_vocab > config.vocab_size:
        raise MirrorError(f"--draft-vocab {draft_vocab} exceeds the target's vocabulary of {config.vocab_size}")
    if tokenizer.eos_token_id is None:
        raise MirrorError("the target's tokenizer has no end-of-sequence token: cannot generate distillation data")
    work = output / WORK

    prompts = built_in_prompts()
    data_options = DataOptions(samples_per_prompt=samples_per_prompt, max_new_tokens=max_new_tokens)
    with tqdm(desc="target continuations", unit="batch") as bar:
        def step(done, total):
            bar.total = total
            bar.update(done - bar.n)
        data = generate_data(model, tokenizer, prompts, work, data_options, seed, progress=step)
    data_seconds = time.perf_counter() - started
    train_data = [c for c in data if not prompts[c.prompt_index].held_out]
    held_out = [c for c in data if prompts[c.prompt_index].held_out and c.greedy]

    vocab_map = None
    if draft_vocab:
        vocab_map = reduced_vocabulary(train_data, draft_vocab, config.vocab_size, [tokenizer.eos_token_id])
    torch.manual_seed(seed)
    shape = DraftShape(layers, streams, stream_width or config.hidden_size)
    draft = draft_from_target(model, shape, vocab_map)
    before = summarize(draft.eval(), held_out) if held_out else None

    options = TrainOptions(minutes=minutes, max_steps=max_steps, lr=lr, batch_size=batch_size, bf16=bf16)
    trainer = Trainer(draft, train_data, draft_index(vocab_map, config.vocab_size), options, seed, work)
    if resume and trainer.load_checkpoint():
        click.echo(f"resuming at step {trainer.step} ({trainer.elapsed / 60:.1f} of {minutes:g} minutes spent)")
    with tqdm(desc="distilling", unit="step", initial=trainer.step, total=max_steps) as bar:
        def measure(t):
            if held_out:
                agreement = summarize(draft.eval(), held_out)["agreement"]
                bar.write(f"step {t.step}: held-out agreement {agreement:.1%} after {t.elapsed / 60:.1f} min")
        trainer.run(bar, on_checkpoint=measure)
    draft.eval()
    after = summarize(draft, held_out) if held_out else None

    settings = {"target": source.description["source"], "layers": layers, "streams": streams,
                "stream_width": shape.stream_intermediate, "draft_vocab": draft_vocab or config.vocab_size,
                "samples_per_prompt": samples_per_prompt, "max_new_tokens": max_new_tokens, "batch_size": batch_size,
                "lr": lr, "bf16": bf16, "minutes": minutes, "max_steps": max_steps, "seed": seed,
                "threads": torch.get_num_threads(), "device": str(device)}
    save_draft(draft, output, model, tokenizer, getattr(torch, dtype), provenance=settings)
    report = {"settings": settings, "steps": trainer.step, "training_minutes": trainer.elapsed / 60,
              "data_minutes": data_seconds / 60, "training_positions": sum(len(c.topk_ids) for c in train_data),
              "held_out": {"prompts": len(held_out), "untrained": before, "trained": after}}
    (output / REPORT).write_text(json.dumps(report, indent=2) + "\n")
    if after:
        streams_text = "/".join(f"{a:.0%}" for a in after["stream_accuracy"]) or "none"
        click.echo(f"held-out agreement {before['agreement']:.1%} -> {after['agreement']:.1%}, "
                   f"stream accuracy {streams_text}, sd gamma 6: "
                   f"{after['sd_gamma6']['committed_per_target_call']:.2f} tokens per target call")
    click.echo(f"draft written to {output} ({trainer.step} steps, {trainer.elapsed / 60:.1f} min training); "
               f"export it with `mirror-ort export --draft {output}`")


def _device(name: str):
    """A torch device this machine has, or a one-line error (never a silent fall back to the CPU)."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise MirrorError(f"--device {name!r} is not a PyTorch device: use cpu, cuda, cuda:N or mps") from None
    available = {"cpu": lambda: True, "cuda": torch.cuda.is_available,
                 "mps": lambda: getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()}
    if not available.get(device.type, lambda: False)():
        raise MirrorError(f"--device {name}: this PyTorch ({torch.__version__}) sees no {device.type} device here: "
                          "use --device cpu, or install a PyTorch build for that device")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise MirrorError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
    return device


def _claim_output(output: Path, resume: bool, force: bool) -> None:
    """Refuse to mix two runs in one directory unless told how."""
    in_use = output.exists() and (not output.is_dir() or any(output.iterdir()))
    if resume:
        if not (output / WORK).is_dir():
            raise MirrorError(f"nothing to resume in {output} (no {WORK}/ folder): drop --resume")
        return
    if in_use and not force:
        raise MirrorError(f"{output} is in use: pass --resume to continue that run, --force to replace it, or another -o")
    if in_use:
        if not output.is_dir():
            output.unlink()
        else:
            shutil.rmtree(output)
    output.mkdir(parents=True, exist_ok=True)
