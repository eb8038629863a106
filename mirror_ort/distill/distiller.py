"""``distill_draft``: a target becomes a fast draft with stream heads (the library under ``mirror-ort distill``).

Steps: load the target; generate (or reuse) the self-distillation data with the data
engine; pick the reduced draft vocabulary; initialise the draft from the target; train
within the time box; measure on held-out prompts; write the draft directory.

OUTPUT receives the draft (``export/draft_dir.py``) and ``distill.json`` (settings and
measured figures, written first as the directory's marker); the training checkpoint lives in
``OUTPUT/work/`` and the data, unless ``data_dir`` names a directory shared between runs, in
``OUTPUT/work/data/``, so that ``resume`` continues an interrupted run. Ship the directory
without ``work/``.
"""

import json
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ..errors import MirrorError
from ..output_dir import claim_output
from .data import DataOptions
from .train import TrainOptions

WORK = "work"
REPORT = "distill.json"


@dataclass
class DistillOptions:
    layers: int = 2  # draft decoder layers: the target's first K
    streams: int = 2  # speculative-streaming heads
    stream_width: int | None = None  # hidden width of each stream head's MLP (default: the hidden size)
    draft_vocab: int = 8192  # target ids the draft's head scores (0: the whole vocabulary)
    data: DataOptions = field(default_factory=DataOptions)
    data_dir: Path | None = None  # default OUTPUT/work/data
    data_tokens: int | None = None  # labelled tokens to generate (None: every prompt)
    train_tokens: int | None = None  # train on the first this many (a learning curve); None: all
    train: TrainOptions = field(default_factory=TrainOptions)
    exit_minutes: float = 10.0  # training budget of the exit adapter (0: no adapter)
    exit_rank: int = 256
    threads: int | None = None
    device: str = "cpu"
    seed: int = 0
    dtype: str = "float16"  # storage type of the saved weights
    resume: bool = False
    force: bool = False
    trust_remote_code: bool = False

    def check(self) -> None:
        if self.train.minutes <= 0:
            raise MirrorError(f"--minutes {self.train.minutes:g} leaves no time to train: give a positive budget "
                              "(e.g. --minutes 20)")
        if self.resume and self.force:
            raise MirrorError("--resume and --force contradict each other: pick one")
        if self.data.precision not in ("fp32", "bf16"):
            raise MirrorError(f"--data-precision {self.data.precision!r}: choose fp32 or bf16")


def distill_draft(target: str | None, output: Path, options: DistillOptions, log=print, bar=None) -> dict:
    """Distil a draft from ``target`` into ``output``; returns the report written to ``distill.json``.
    ``bar(description, unit, total)`` makes a progress bar (a tqdm-like object), or None."""
    import torch

    from ..chat import chat_encoder
    from ..export.draft_dir import DraftShape, draft_from_target, save_draft
    from ..export.sources import load_source
    from .data import DataEngine, target_identity
    from .evaluate import summarize
    from .train import Trainer
    from .vocab import draft_index, reduced_vocabulary

    options.check()
    output = Path(output)
    device = torch_device(options.device)
    _claim(output, options)
    if options.threads:
        torch.set_num_threads(options.threads)
    started = time.perf_counter()
    source = load_source(target, options.trust_remote_code)
    model, tokenizer, config = source.model.to(device), source.tokenizer, source.model.config
    if options.layers > config.num_hidden_layers:
        raise MirrorError(f"--layers {options.layers} exceeds the target's {config.num_hidden_layers} layers")
    if options.draft_vocab > config.vocab_size:
        raise MirrorError(f"--draft-vocab {options.draft_vocab} exceeds the target's vocabulary of {config.vocab_size}")
    if tokenizer.eos_token_id is None:
        raise MirrorError("the target's tokenizer has no end-of-sequence token: cannot generate distillation data")
    work = output / WORK
    if options.exit_minutes > 0 and options.data.exit_layer is None:  # the adapter learns from the exit's hidden states
        options.data = replace(options.data, exit_layer=config.num_hidden_layers // 2)
    if options.data.exit_layer is not None and not 1 <= options.data.exit_layer < config.num_hidden_layers:
        raise MirrorError(f"--exit-layer {options.data.exit_layer} is outside 1..{config.num_hidden_layers - 1}")
    (output / REPORT).write_text(json.dumps({"status": "running", "settings": _settings(source, options)}, indent=2))

    engine = DataEngine(options.data_dir or work / "data", model, chat_encoder(tokenizer),
                        lambda ids: tokenizer.decode(ids, skip_special_tokens=True),
                        {tokenizer.eos_token_id}, target_identity(model), options.data,
                        options.seed, log=log)
    progress = bar("target continuations", "tok", options.data_tokens) if bar else None
    data = engine.run(options.data_tokens, progress=(lambda new, total: progress.update(new)) if progress else None)
    if progress:
        progress.close()
    data_seconds = time.perf_counter() - started
    train_data, held_out = data.split()
    if options.train_tokens is not None:  # the held-out set stays whole, so points of a curve compare
        train_data = _first_tokens(train_data, options.train_tokens)

    vocab_map = None
    if options.draft_vocab:
        vocab_map = reduced_vocabulary(train_data, options.draft_vocab, config.vocab_size, [tokenizer.eos_token_id])
    torch.manual_seed(options.seed)
    shape = DraftShape(options.layers, options.streams, options.stream_width or config.hidden_size)
    draft = draft_from_target(model, shape, vocab_map)
    before = summarize(draft.eval(), held_out) if held_out else None

    trainer = Trainer(draft, train_data, draft_index(vocab_map, config.vocab_size), options.train, options.seed, work)
    if options.resume and trainer.load_checkpoint():
        log(f"resuming at step {trainer.step} ({trainer.elapsed / 60:.1f} of {options.train.minutes:g} minutes spent)")
    steps = bar("distilling", "step", options.train.max_steps) if bar else None
    if steps is not None:
        steps.update(trainer.step)

    def measure(t):
        if held_out:
            log(f"step {t.step}: held-out agreement {summarize(draft.eval(), held_out)['agreement']:.1%} "
                f"after {t.elapsed / 60:.1f} min")
    trainer.run(steps, on_checkpoint=measure)
    if steps is not None:
        steps.close()
    draft.eval()
    after = summarize(draft, held_out) if held_out else None

    settings = _settings(source, options, torch.get_num_threads(), shape.stream_intermediate)
    save_draft(draft, output, model, tokenizer, getattr(torch, options.dtype), provenance=settings)
    exit_report = None
    if options.exit_minutes > 0:
        from ..export.draft_dir import embedding_sha256
        from .exit_training import train_exit_adapter

        adapter, exit_report = train_exit_adapter(model, train_data, held_out, options.data.exit_layer,
                                                  options.exit_rank, options.exit_minutes, seed=options.seed,
                                                  bf16=options.train.bf16, log=log)
        adapter.save(output, embedding_sha256(model), exit_report)
        if exit_report["held_out"]["adapted"]:
            log(f"exit adapter (layer {options.data.exit_layer}): held-out overlap "
                f"{exit_report['held_out']['plain']['overlap']:.1%} -> {exit_report['held_out']['adapted']['overlap']:.1%}")
    report = {"status": "done", "settings": settings, "steps": trainer.step, "training_minutes": trainer.elapsed / 60,
              "data_minutes": data_seconds / 60, "training_positions": sum(len(c.topk_ids) for c in train_data),
              "held_out": {"prompts": len(held_out), "untrained": before, "trained": after},
              "exit_adapter": exit_report}
    (output / REPORT).write_text(json.dumps(report, indent=2) + "\n")
    return report


def _first_tokens(continuations, tokens: int):
    kept, total = [], 0
    for c in continuations:
        if total >= tokens:
            break
        kept.append(c)
        total += len(c.topk_ids)
    return kept


def torch_device(name: str):
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


def _claim(output: Path, options: DistillOptions) -> None:
    """Refuse to mix two runs in one directory unless told how; never replace what mirror-ort did not write."""
    if options.resume:
        if not (output / WORK).is_dir():
            raise MirrorError(f"nothing to resume in {output} (no {WORK}/ folder): drop --resume")
        return
    from ..export.draft_dir import DRAFT_FACTS

    if claim_output(output, options.force, (REPORT, DRAFT_FACTS), "a distilled draft",
                    busy_hint="pass --resume to continue that run, --force to replace it"):
        shutil.rmtree(output)
    output.mkdir(parents=True, exist_ok=True)


def _settings(source, options: DistillOptions, threads: int | None = None, stream_width: int | None = None) -> dict:
    return {"target": source.description["source"], "layers": options.layers, "streams": options.streams,
            "stream_width": stream_width or options.stream_width, "draft_vocab": options.draft_vocab,
            "data": asdict(options.data), "data_dir": str(options.data_dir) if options.data_dir else None,
            "data_tokens": options.data_tokens, "train_tokens": options.train_tokens, "train": asdict(options.train), "exit_minutes": options.exit_minutes,
            "exit_rank": options.exit_rank, "seed": options.seed,
            "threads": threads, "device": options.device}
