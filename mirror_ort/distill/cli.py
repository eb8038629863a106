"""``mirror-ort distill TARGET -o DRAFT_DIR``: the click command over ``distiller.distill_draft``."""

from pathlib import Path

import click

from .data import DataOptions
from .distiller import DistillOptions, distill_draft
from .train import TrainOptions

_DATA, _TRAIN, _DISTILL = DataOptions(), TrainOptions(), DistillOptions()


@click.command("distill")
@click.argument("target", required=False)
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="Draft directory to write (accepted by `mirror-ort export --draft`).")
@click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Data directory to fill or reuse across runs [default: OUTPUT/work/data].")
@click.option("--data-tokens", type=click.FloatRange(min=1), help="Labelled tokens to generate, e.g. 1e6 [default: every prompt].")
@click.option("--train-tokens", type=click.FloatRange(min=1),
              help="Train on the first this many labelled tokens (points of a learning curve) [default: all].")
@click.option("--data-precision", type=click.Choice(["fp32", "bf16"]), default=_DATA.precision, show_default=True,
              help="Matmuls of the target writing the data: fp32, or bf16 (faster where the CPU has bf16 units).")
@click.option("--exit-layer", type=click.IntRange(min=1),
              help="The exit layer whose hidden states the data keeps and the exit adapter reads [default: N/2].")
@click.option("--exit-minutes", default=_DISTILL.exit_minutes, show_default=True, type=float,
              help="Training budget of the exit adapter; 0 trains none.")
@click.option("--exit-rank", default=_DISTILL.exit_rank, show_default=True, type=click.IntRange(min=1),
              help="Rank of the exit adapter's MLP.")
@click.option("--minutes", default=_TRAIN.minutes, show_default=True, type=float, help="Training time budget (data generation excluded).")
@click.option("--max-steps", type=click.IntRange(min=1), help="Stop after this many steps; the schedule follows steps (exactly repeatable).")
@click.option("--layers", default=_DISTILL.layers, show_default=True, type=click.IntRange(min=1), help="Draft decoder layers (the target's first K).")
@click.option("--streams", default=_DISTILL.streams, show_default=True, type=click.IntRange(min=0), help="Speculative-streaming heads (extra tokens per call).")
@click.option("--stream-width", type=click.IntRange(min=1), help="Hidden width of each stream head's MLP [default: the hidden size].")
@click.option("--draft-vocab", default=_DISTILL.draft_vocab, show_default=True, type=click.IntRange(min=0),
              help="Target ids the draft's LM head scores (the most frequent in the data); 0 keeps the whole vocabulary.")
@click.option("--samples-per-prompt", default=_DATA.samples_per_prompt, show_default=True, type=click.IntRange(min=0),
              help="Sampled continuations per prompt, besides the greedy one.")
@click.option("--max-new-tokens", default=_DATA.max_new_tokens, show_default=True, type=click.IntRange(min=1), help="Length of each generated continuation.")
@click.option("--self-written", default=_DATA.self_written, show_default=True, type=click.IntRange(min=0),
              help="Prompts and passages the target writes itself before the data is generated.")
@click.option("--gen-batch-size", default=_DATA.batch_size, show_default=True, type=click.IntRange(min=1), help="Sequences per generation batch.")
@click.option("--batch-size", default=_TRAIN.batch_size, show_default=True, type=click.IntRange(min=1), help="Sequences per training step.")
@click.option("--lr", default=_TRAIN.lr, show_default=True, type=float, help="Peak learning rate (AdamW, cosine over the budget).")
@click.option("--bf16/--fp32", default=_TRAIN.bf16, show_default=True, help="Train with bfloat16 matmuls (autocast) or in float32.")
@click.option("--threads", type=click.IntRange(min=1), help="PyTorch threads [default: all cores].")
@click.option("--device", default=_DISTILL.device, show_default=True,
              help="PyTorch device that generates the data and trains the draft: cpu, cuda, cuda:1, ...")
@click.option("--seed", default=_DISTILL.seed, show_default=True, type=int, help="Seeds data sampling, stream-head init and batch order.")
@click.option("--dtype", default=_DISTILL.dtype, show_default=True, type=click.Choice(["float16", "float32"]), help="Storage type of the saved weights (loaded as float32).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run in OUTPUT from its data and checkpoint.")
@click.option("--force", is_flag=True, help="Replace OUTPUT if it holds an earlier distilled draft.")
@click.option("--trust-remote-code", is_flag=True, help="Allow the target's own Python code (off by default).")
def distill(target, output, data_dir, data_tokens, train_tokens, data_precision, exit_layer, exit_minutes, exit_rank, minutes, max_steps, layers, streams,
            stream_width, draft_vocab, samples_per_prompt, max_new_tokens, self_written, gen_batch_size, batch_size, lr,
            bf16, threads, device, seed, dtype, resume, force, trust_remote_code):
    """Distil a draft with speculative-streaming heads from TARGET (default: the embedded SmolLM2-135M)."""
    from tqdm import tqdm

    data = DataOptions(samples_per_prompt=samples_per_prompt, max_new_tokens=max_new_tokens, batch_size=gen_batch_size,
                       precision=data_precision, exit_layer=exit_layer, self_written=self_written)
    train = TrainOptions(minutes=minutes, max_steps=max_steps, lr=lr, batch_size=batch_size, bf16=bf16)
    options = DistillOptions(layers=layers, streams=streams, stream_width=stream_width, draft_vocab=draft_vocab,
                             data=data, data_dir=data_dir, data_tokens=int(data_tokens) if data_tokens else None,
                             train_tokens=int(train_tokens) if train_tokens else None,
                             train=train, exit_minutes=exit_minutes, exit_rank=exit_rank, threads=threads, device=device, seed=seed, dtype=dtype, resume=resume,
                             force=force, trust_remote_code=trust_remote_code)
    report = distill_draft(target, output, options, log=click.echo,
                           bar=lambda desc, unit, total: tqdm(desc=desc, unit=unit, total=total, unit_scale=True))
    after, before = report["held_out"]["trained"], report["held_out"]["untrained"]
    if after:
        streams_text = "/".join(f"{a:.0%}" for a in after["stream_accuracy"]) or "none"
        click.echo(f"held-out agreement {before['agreement']:.1%} -> {after['agreement']:.1%}, "
                   f"stream accuracy {streams_text}, sd gamma 6: "
                   f"{after['sd_gamma6']['committed_per_target_call']:.2f} tokens per target call")
    click.echo(f"draft written to {output} ({report['steps']} steps, {report['training_minutes']:.1f} min training); "
               f"export it with `mirror-ort export --draft {output}`")
