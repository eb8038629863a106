"""The application-facing API: a bundle becomes sessions, sessions serve a decoding method.

    pipe = Pipeline.from_bundle("bundle/", draft_ep="qnn")
    result = pipe.generate("Why is the sky blue?", chat=True)
    for piece in pipe.stream("Tell me a story", chat=True): print(piece, end="")

A Pipeline owns one set of sessions and caches, so it runs one generation at a time: calls
from several threads wait their turn (a lock), and starting a second generation on the thread
that is still consuming a stream is refused.
"""

import threading
import time
from dataclasses import dataclass

import numpy as np

from ..bundle import Bundle
from ..errors import MirrorError
from ..generation import GenerationConfig
from ..providers import ProviderChoice, available_cores, create_session, parse_provider
from ..providers.spec import CPU_EP
from .ar import generate_ar
from .cost import CostCurve, cost_curve
from .draft import Drafter
from .fused import fuse as fuse_target
from .fused import halves_of
from .mirror import DraftWorker, TreeBudget, generate_mirror
from .sampling import Decoding, Randomness
from .sd import generate_sd
from .sequence import Sequence
from .session import GraphSession
from .stats import Stats
from .target import FILLER_ROWS, Target
from .tokenizer import Tokenizer
from .window import WindowPlanner

DEFAULT_MAX_LENGTH = 2048
TREE_CAPACITY = 1024  # draft cache positions reserved for the draft tree


@dataclass
class Result:
    text: str
    token_ids: list[int]
    stats: dict


class Pipeline:
    def __init__(self, bundle: Bundle, prefix: GraphSession, suffix: GraphSession, draft: GraphSession | None,
                 tokenizer: Tokenizer, max_length: int, threads: tuple = (None, None, None),
                 fused: GraphSession | None = None):
        self.bundle, self.tokenizer, self.max_length = bundle, tokenizer, max_length
        self.prefix, self.suffix, self.draft = prefix, suffix, draft
        self.fused = fused  # the whole target in one session (runtime/fused.py), on the halves' caches
        self._cached: list[int] = []  # tokens whose K/V the target caches hold, in order
        self.last_stats: dict | None = None
        self.defaults = bundle.manifest.generation  # what a call leaves unset
        self._lock = threading.Lock()
        self._curve: CostCurve | None = None
        self.threads = threads
        self._owner: int | None = None  # the thread running a generation
        vocab_map = bundle.graph("draft").vocab_map if bundle.has_draft else None
        self.vocab_map = np.array(bundle.token_ids(vocab_map), dtype=np.int64) if vocab_map else None

    @classmethod
    def from_bundle(cls, path, target_ep: str | ProviderChoice = "cpu", draft_ep: str | ProviderChoice = "cpu",
                    target_threads: int | None = None, draft_threads: int | None = None,
                    max_length: int | None = None, allow_cpu_fallback: bool = False, load_draft: bool = True,
                    spin: bool | None = None, verify: bool = True, fuse: bool = True):
        """Sessions for every graph of the bundle on the chosen providers.

        ``spin`` sets ONNX Runtime's intra-op spin-waiting (None: its default); turn it
        off when the target and the draft share the same cores. ``verify=False`` skips the
        sha256 check of the bundle's files (for a bundle checked already). ``fuse`` adds the
        whole target as one session for the steps that send no early-exit message (faster; it
        holds a second copy of the target's weights in memory): ``runtime/fused.py``.
        """
        bundle = path if isinstance(path, Bundle) else Bundle.load(path, verify=verify)
        target_ep = parse_provider(target_ep) if isinstance(target_ep, str) else target_ep
        draft_ep = parse_provider(draft_ep) if isinstance(draft_ep, str) else draft_ep
        limit = bundle.max_length - FILLER_ROWS  # positions for the row a target call may write past its window
        max_length = max_length or min(limit, DEFAULT_MAX_LENGTH)
        if not 1 < max_length <= limit:
            raise MirrorError(f"--max-length {max_length} is outside 2..{limit} for this model")

        def session(spec, choice, threads, capacity, model=None, cache=None):
            session = create_session(model or spec.path, choice, threads, allow_cpu_fallback, spin=spin, role=spec.role)
            return GraphSession(spec, session, capacity, cache)

        halves = bundle.graph("prefix"), bundle.graph("suffix")
        fused = fuse_target(*halves) if fuse else None
        fused_session = None
        if fused is not None:
            fused_session = session(fused[1], target_ep, target_threads, max_length + FILLER_ROWS, model=fused[0])
            fused = None  # the serialized model: ONNX Runtime holds its own copy now
        caches = halves_of(fused_session.cache, halves[0]) if fused_session is not None else (None, None)
        prefix, suffix = (session(spec, target_ep, target_threads, max_length + FILLER_ROWS, cache=cache)
                          for spec, cache in zip(halves, caches))
        draft = None
        if load_draft and bundle.has_draft:
            static = bundle.graph("draft").static  # a static draft's capacity is fixed by its graph
            draft = session(bundle.graph("draft"), draft_ep, draft_threads,
                            static["capacity"] if static else max_length + TREE_CAPACITY)
        return cls(bundle, prefix, suffix, draft, Tokenizer(bundle), max_length, (target_threads, draft_threads, spin),
                   fused_session)

    def target(self, stats: Stats) -> Target:
        """The target over this pipeline's sessions, counting into ``stats``."""
        return Target(self.prefix, self.suffix, stats, self.fused)

    def forget(self) -> None:
        """Drop the prompt cache: the next generation prefills its whole prompt."""
        self._cached = []

    def encode(self, prompt: str | list[int] | None = None, messages: list[dict] | None = None,
               chat: bool = False) -> list[int]:
        if messages is not None:
            return self.tokenizer.chat(messages)
        if isinstance(prompt, str):
            return self.tokenizer.chat([{"role": "user", "content": prompt}]) if chat else self.tokenizer.encode(prompt)
        return list(prompt or [])

    def generate(self, prompt: str | list[int] | None = None, **kwargs) -> Result:
        ids, stats = [], None
        for new, stats in self._run(prompt, **kwargs):
            ids += new
        return Result(self.tokenizer.decode(ids), ids, stats.as_dict())

    def stream(self, prompt: str | list[int] | None = None, **kwargs):
        """Yield text pieces as tokens are committed; ``self.last_stats`` holds the stats after."""
        ids, text, stats = [], "", None
        try:
            for new, stats in self._run(prompt, **kwargs):
                ids += new
                decoded = self.tokenizer.decode(ids)
                if not decoded.endswith("\ufffd") and len(decoded) > len(text):  # wait for whole characters
                    yield decoded[len(text):]
                    text = decoded
        finally:  # once, at the end: with what the generation's end adds (speculation)
            if stats is not None:
                self.last_stats = stats.as_dict()

    def steps(self, prompt: str | list[int] | None = None, **kwargs):
        """Yield (new token ids, live Stats) once per committed step, for callers that need the ids as
        they come (a server's stop strings and token counts). Closing it stops the generation; the
        Stats are final once it is closed or exhausted (``stats.as_dict()``)."""
        yield from self._run(prompt, **kwargs)

    def settings(self, **changes) -> GenerationConfig:
        """The bundle's defaults with ``changes`` (None: keep the default), checked against this bundle."""
        config = self.defaults.updated(**changes)
        source = self.draft_source(config)
        if config.method != "ar" and source in ("model", "both") and self.draft is None:
            raise MirrorError(f"--draft {config.draft} needs the bundle's draft model but it has none: "
                              "use --draft lookup, --method ar, or export with --draft")
        if config.kappa is not None and config.kappa > self.bundle.kappa:
            raise MirrorError(f"--kappa {config.kappa} is outside 1..{self.bundle.kappa} (the bundle's exported kappa)")
        if config.max_gamma * (config.max_branches + 2) > TREE_CAPACITY:
            raise MirrorError(f"--gamma {config.gamma} with --max-branches {config.max_branches} is out of range "
                              f"(gamma * (max_branches + 2) <= {TREE_CAPACITY})")
        return config

    def draft_source(self, config: GenerationConfig) -> str:
        """What proposes windows: ``auto`` is the model draft and prompt lookup together, or lookup alone
        for a bundle without a draft."""
        if config.draft != "auto":
            return config.draft
        return "both" if self.draft is not None else "lookup"

    def cost_curve(self, refresh: bool = False) -> CostCurve:
        """What a step costs on these sessions (measured once, cached: ``runtime/cost.py``)."""
        if self._curve is None or refresh:
            self._curve = cost_curve(self, refresh=refresh)
        return self._curve

    def pin_cost_curve(self, curve: CostCurve | None) -> None:
        """Decide windows from ``curve`` (one measured on the deployment device, say) instead of
        measuring these sessions; None measures again at the next generation."""
        self._curve = curve

    def _run(self, prompt, messages=None, chat=False, **changes):
        config = self.settings(**changes)  # checked before anything runs
        if self._owner == threading.get_ident():
            raise MirrorError("this Pipeline is still streaming a generation on this thread: finish or close "
                              "that stream before starting another")
        with self._lock:
            self._owner = threading.get_ident()
            try:
                yield from self._generation(prompt, messages, chat, config)
            finally:
                self._owner = None

    def _generation(self, prompt, messages, chat, config: GenerationConfig):
        method, gamma, max_branches = config.method, config.max_gamma, config.max_branches
        kappa = config.kappa or self.bundle.kappa
        tokens = self.encode(prompt, messages, chat)
        if not tokens:
            raise MirrorError("the prompt is empty: pass --prompt, --prompt-file or text on stdin")
        if len(tokens) >= self.max_length:
            raise MirrorError(f"the prompt has {len(tokens)} tokens but the capacity is {self.max_length}: "
                              "shorten it or raise --max-length")
        max_length = self._usable_length(method, gamma, max_branches, len(tokens))
        curve = self.cost_curve() if config.auto_gamma and method != "ar" else None  # before the prompt cache is read
        decoding = Decoding(config.temperature, config.top_p, config.top_k, config.seed)
        rand = Randomness(config.seed, self.max_length + 1)
        seq = Sequence(tokens, config.max_new_tokens, self.bundle.eos_token_ids, max_length)
        stats = Stats(method=method, target_ep=self.prefix.provider, prompt_tokens=len(tokens),
                      draft_ep=self.draft.provider if self.draft and method != "ar" else None)
        target = self.target(stats)
        # Prompt cache: K/V of the previous sequence's common prefix stay (a chat's history).
        stats.cached_prompt_tokens = _common_prefix(self._cached, tokens[:-1])
        target.truncate(stats.cached_prompt_tokens)
        worker = planner = budget = None
        if method == "ar":
            steps = generate_ar(target, seq, decoding, rand, stats)
        else:
            source = self.draft_source(config)
            streams = self.draft.spec.streams if self.draft is not None else 0
            planner = WindowPlanner(source, None if config.auto_gamma else config.gamma, gamma, curve, 1 + streams,
                                    follow_timing=decoding.greedy, free_guess=target.min_rows > 1)
            drafter = None
            if self.draft is not None:
                self.draft.cache.length = 0
                drafter = Drafter(self.draft, decoding, rand, self.bundle.vocab_size, stats, self.vocab_map)
            if method == "sd" or drafter is None:
                steps = generate_sd(target, drafter, planner, seq, decoding, rand, stats, self.bundle.vocab_size)
            else:
                budget = TreeBudget(curve, self._draft_idle_share(), 1 / (1 + streams), max_branches)
                worker = DraftWorker(drafter)
                steps = generate_mirror(target, worker, planner, seq, decoding, rand, stats, kappa,
                                        self.bundle.vocab_size, budget)
        start = time.perf_counter()
        try:
            for new in steps:
                stats.new_tokens += len(new)
                stats.seconds["total"] = time.perf_counter() - start
                yield new, stats
        finally:
            if worker is not None:
                worker.close()
            stats.seconds["total"] = time.perf_counter() - start
            if planner is not None:
                stats.speculation = {**planner.summary(), **(budget.summary() if budget else {}),
                                     "cost_curve": curve.as_dict() if curve else None}
            self._cached = seq.tokens[:target.length]


    def _draft_idle_share(self) -> float:
        """The share of a target step the draft's device is idle: the suffix's, unless the draft
        runs on the CPU cores the target's threads already fill (then none)."""
        model = self.bundle.manifest.model
        if self.prefix.provider == self.draft.provider == CPU_EP:
            target_threads, draft_threads, _ = self.threads
            cores = available_cores()
            if (target_threads or cores) + (draft_threads or cores) > cores:
                return 0.0
        return (model.num_layers - self.bundle.exit_layer) / model.num_layers

    def _usable_length(self, method: str, gamma: int, max_branches: int, prompt_tokens: int) -> int:
        """The longest sequence this generation may reach. A static draft's cache is fixed at its
        exported capacity C, which must also hold the draft's window (sd) or tree (mirror:
        at most gamma * (max_branches + 2) positions) beyond the committed tokens."""
        if method == "ar" or self.draft is None or not self.draft.static:
            return self.max_length
        reserve = gamma * (max_branches + 2) if method == "mirror" else gamma
        usable = min(self.max_length, self.draft.capacity - reserve)
        if prompt_tokens >= usable:
            raise MirrorError(
                f"the prompt has {prompt_tokens} tokens but the static draft's capacity {self.draft.capacity} "
                f"leaves {max(usable, 0)} for the sequence ({reserve} positions are kept for the draft's "
                f"{'tree' if method == 'mirror' else 'window'}): shorten the prompt, lower --gamma/--max-branches, "
                "or re-export with a larger --static-capacity")
        return usable


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    diff = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(diff[0]) if diff.size else n
