"""Fair measurement: build the rows, warm each up, then run every row on every prompt,
interleaved prompt by prompt (A B C, A B C, ...) so that drift of a shared, noisy machine
falls on all rows alike.

Prompts are token ids made once with the bundle's tokenizer and chat template and
given to every row. Further bundles of the same model (other precisions) add their rows,
named ``ar@int4`` and so on, to the same interleaved run; a row is lossless when its ids
equal those of ``ar`` of its own bundle. A later turn (``--turns all``) carries the
conversation so far, whose assistant answers are those of the baseline row ``ar``: every
row gets the same ids, and the baseline runs first on each prompt to provide them.

A peer that raises while generating is dropped from the rest of the run and listed
among the skipped rows with the error; mirror-ort's own rows raise as usual.
"""

from dataclasses import dataclass, field

from ..errors import MirrorError
from ..generation import GenerationConfig
from .alloc import Allocation, allocation
from .context import Context
from .dataset import Prompt
from .methods import METHODS, PER_MODEL, make_row, variant
from .rows import BASELINE, Generation, Row, Skipped

WARMUP_TOKENS = 32  # warm-up generations stop here


@dataclass
class Record:
    """One row on one prompt."""

    row: str
    prompt: int  # index into the prompts
    question_id: object
    category: str
    turn: int
    prompt_tokens: int
    generation: Generation
    matches_baseline: bool | None = None

    @property
    def new_tokens(self) -> int:
        return len(self.generation.token_ids)

    def as_dict(self) -> dict:
        g = self.generation
        return {"question_id": self.question_id, "category": self.category, "turn": self.turn,
                "prompt_tokens": self.prompt_tokens, "cached_prompt_tokens": g.cached_prompt_tokens,
                "new_tokens": self.new_tokens, "seconds": g.seconds,
                "tokens_per_s": self.new_tokens / g.seconds if g.seconds > 0 else 0.0,
                "target_calls": g.target_calls, "reused_windows": g.reused_windows,
                "fallback_windows": g.fallback_windows, "mean_gamma": g.mean_gamma, "lossless": self.matches_baseline}


@dataclass
class BenchResult:
    rows: list[Row]
    skipped: dict[str, str]
    prompts: list[Prompt]
    records: list[Record] = field(default_factory=list)

    def records_of(self, row: str) -> list[Record]:
        return [r for r in self.records if r.row == row]


def build_rows(ctx: Context, methods: list[str], modes: list[str], cores: int | None = None,
               log=print) -> tuple[list[Row], dict[str, str]]:
    """The bundle's ``ar`` (shared) first, then every method under every allocation; a further
    bundle's rows carry its tag (``ar@int4``) and leave out those that measure only the source model."""
    allocations = {mode: allocation(mode, cores) for mode in ("shared", *modes)}
    plan: list[tuple[str, Allocation]] = [(BASELINE, allocations["shared"])]
    for mode in modes:
        plan += [(m, allocations[mode]) for m in methods
                 if (m, mode) != (BASELINE, "shared") and not (ctx.tag and m in PER_MODEL)]
    rows, skipped = [], {}
    for method, alloc in plan:
        name = method + alloc.suffix + ctx.tag
        if variant(method)[0] not in METHODS:
            raise MirrorError(f"unknown method {method!r}")
        try:
            row = make_row(method, ctx, alloc)
        except Skipped as e:
            skipped[name] = str(e)
            log(f"skipping {name}: {e}")
            continue
        row.name, row.reference = name, BASELINE + ctx.tag
        rows.append(row)
    return rows, skipped


def prompt_ids(ctx: Context, prompt: Prompt, answers: dict) -> list[int]:
    messages = []
    for t, text in enumerate(prompt.turns):
        messages.append({"role": "user", "content": text})
        if t < prompt.turn:
            messages.append({"role": "assistant", "content": answers[(prompt.question_id, t)]})
    return ctx.any_pipeline().encode(messages=messages)


def run(ctx: Context, rows: list[Row], skipped: dict, prompts: list[Prompt], settings: GenerationConfig,
        warmup: int = 1, progress: bool = True, log=print, after_prompt=None) -> BenchResult:
    """Every row on every prompt, interleaved; ``after_prompt(result)`` after each prompt."""
    from tqdm import tqdm

    if not prompts:
        raise MirrorError("no prompts to run: check --categories and --per-category")
    if not rows or rows[0].name != BASELINE:
        raise MirrorError("the baseline row ar could not be built")
    result = BenchResult(list(rows), dict(skipped), prompts)
    tokenizer = ctx.any_pipeline().tokenizer
    answers: dict = {}  # later turns carry the baseline's answers
    first = prompt_ids(ctx, prompts[0], answers)
    warm = settings.updated(max_new_tokens=min(settings.max_new_tokens, WARMUP_TOKENS))
    for row in list(result.rows):
        for _ in range(warmup):
            if row in result.rows:
                _guarded(result, row, lambda: row.generate(first, warm), log)
    bar = tqdm(total=len(prompts) * len(result.rows), desc="bench", unit="gen", disable=not progress, leave=False)
    try:
        for index, prompt in enumerate(prompts):
            ids = prompt_ids(ctx, prompt, answers)
            references: dict[str, list[int]] = {}  # each bundle's ar ids on this prompt
            for row in list(result.rows):
                bar.set_postfix_str(f"{prompt.category} {row.name}", refresh=False)
                generation = _guarded(result, row, lambda: row.generate(ids, settings), log)
                bar.update(1)
                if generation is None:
                    continue
                if row.name == row.reference:
                    references[row.name] = generation.token_ids
                if row.name == BASELINE:
                    answers[(prompt.question_id, prompt.turn)] = tokenizer.decode(generation.token_ids)
                reference = references.get(row.reference)
                same = generation.token_ids == reference if settings.greedy and reference is not None else None
                result.records.append(Record(row.name, index, prompt.question_id, prompt.category, prompt.turn,
                                             len(ids), generation, same))
            if after_prompt is not None:
                after_prompt(result)
    finally:
        bar.close()
        for row in result.rows:
            row.close()
    return result


def _guarded(result: BenchResult, row: Row, call, log):
    """Run a row; a peer that fails is dropped (its records too) and reported as skipped."""
    try:
        return call()
    except MirrorError:
        raise
    except Exception as e:  # a peer's own error: report it, keep benchmarking the others
        if row.method in ("ar", "sd", "mirror"):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        reason = f"failed while generating: {type(e).__name__}: {first}"
        log(f"dropping {row.name}: {reason}")
        result.skipped[row.name] = reason
        result.rows.remove(row)
        result.records = [r for r in result.records if r.row != row.name]
        row.close()
        return None
