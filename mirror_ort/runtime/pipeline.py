"""The application-facing API: a bundle becomes sessions, sessions serve a decoding method.

    pipe = Pipeline.from_bundle("bundle/", draft_ep="qnn")
    result = pipe.generate("Why is the sky blue?", chat=True)
    for piece in pipe.stream("Tell me a story", chat=True): print(piece, end="")
"""

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..bundle import Bundle
from ..errors import MirrorError
from ..providers import ProviderChoice, create_session, parse_provider
from .ar import generate_ar
from .draft import Drafter
from .mirror import DraftWorker, generate_mirror
from .sampling import Decoding, Randomness
from .sd import generate_sd
from .sequence import Sequence
from .session import GraphSession
from .stats import Stats
from .target import FILLER_ROWS, Target
from .tokenizer import Tokenizer

METHODS = ("mirror", "sd", "ar")
DEFAULT_MAX_LENGTH = 2048
TREE_CAPACITY = 1024  # draft cache positions reserved for the draft tree
DEFAULT_GAMMA = 6
DEFAULT_MAX_BRANCHES = 8


@dataclass
class Result:
    text: str
    token_ids: list[int]
    stats: dict


class Pipeline:
    def __init__(self, bundle: Bundle, prefix: GraphSession, suffix: GraphSession, draft: GraphSession | None,
                 tokenizer: Tokenizer, max_length: int):
        self.bundle, self.tokenizer, self.max_length = bundle, tokenizer, max_length
        self.prefix, self.suffix, self.draft = prefix, suffix, draft
        self._cached: list[int] = []  # tokens whose K/V the target caches hold, in order
        self.last_stats: dict | None = None
        vocab_map = bundle.manifest["graphs"].get("draft", {}).get("vocab_map")
        self.vocab_map = np.array(_read_json(bundle.path / vocab_map), dtype=np.int64) if vocab_map else None

    @classmethod
    def from_bundle(cls, path, target_ep: str | ProviderChoice = "cpu", draft_ep: str | ProviderChoice = "cpu",
                    target_threads: int | None = None, draft_threads: int | None = None,
                    max_length: int | None = None, allow_cpu_fallback: bool = False, load_draft: bool = True,
                    spin: bool | None = None):
        """Sessions for every graph of the bundle on the chosen providers.

        ``spin`` sets ONNX Runtime's intra-op spin-waiting (None: its default); turn it
        off when the target and the draft share the same cores.
        """
        bundle = Bundle.load(path)
        target_ep = parse_provider(target_ep) if isinstance(target_ep, str) else target_ep
        draft_ep = parse_provider(draft_ep) if isinstance(draft_ep, str) else draft_ep
        limit = bundle.max_length - FILLER_ROWS  # positions for the filler row of a one-token target call
        max_length = max_length or min(limit, DEFAULT_MAX_LENGTH)
        if not 1 < max_length <= limit:
            raise MirrorError(f"--max-length {max_length} is outside 2..{limit} for this model")

        def session(role, choice, threads, capacity):
            spec = bundle.graph(role)
            session = create_session(spec.path, choice, threads, allow_cpu_fallback, spin=spin, role=role)
            return GraphSession(spec, session, capacity)

        prefix = session("prefix", target_ep, target_threads, max_length + FILLER_ROWS)
        suffix = session("suffix", target_ep, target_threads, max_length + FILLER_ROWS)
        draft = None
        if load_draft and bundle.has_draft:
            static = bundle.graph("draft").static  # a static draft's capacity is fixed by its graph
            draft = session("draft", draft_ep, draft_threads,
                            static["capacity"] if static else max_length + TREE_CAPACITY)
        return cls(bundle, prefix, suffix, draft, Tokenizer(bundle), max_length)

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
        ids, text = [], ""
        for new, stats in self._run(prompt, **kwargs):
            ids += new
            decoded = self.tokenizer.decode(ids)
            if not decoded.endswith("\ufffd") and len(decoded) > len(text):  # wait for whole characters
                yield decoded[len(text):]
                text = decoded
            self.last_stats = stats.as_dict()

    def steps(self, prompt: str | list[int] | None = None, **kwargs):
        """Yield (new token ids, live Stats) once per committed step, for callers that need the ids as
        they come (a server's stop strings and token counts). Closing it stops the generation; the
        Stats are final once it is closed or exhausted (``stats.as_dict()``)."""
        yield from self._run(prompt, **kwargs)

    def _run(self, prompt, messages=None, chat=False, method="mirror", max_new_tokens=128, temperature=0.0,
             top_p=1.0, top_k=0, seed=0, gamma=DEFAULT_GAMMA, kappa=None, max_branches=DEFAULT_MAX_BRANCHES):
        if method not in METHODS:
            raise MirrorError(f"unknown method {method!r} (choose from {', '.join(METHODS)})")
        if method != "ar" and self.draft is None:
            raise MirrorError(f"method {method} needs a draft but the bundle has none: use --method ar or export with --draft")
        kappa = kappa or self.bundle.kappa
        if not 1 <= kappa <= self.bundle.kappa:
            raise MirrorError(f"--kappa {kappa} is outside 1..{self.bundle.kappa} (the bundle's exported kappa)")
        if gamma < 1 or gamma * (max_branches + 1) + gamma > TREE_CAPACITY or max_branches < 1:
            raise MirrorError(f"--gamma {gamma} with --max-branches {max_branches} is out of range "
                              f"(gamma >= 1, max_branches >= 1, gamma * (max_branches + 2) <= {TREE_CAPACITY})")
        tokens = self.encode(prompt, messages, chat)
        if not tokens:
            raise MirrorError("the prompt is empty: pass --prompt, --prompt-file or text on stdin")
        if len(tokens) >= self.max_length:
            raise MirrorError(f"the prompt has {len(tokens)} tokens but the capacity is {self.max_length}: "
                              "shorten it or raise --max-length")
        max_length = self._usable_length(method, gamma, max_branches, len(tokens))
        decoding = Decoding(temperature, top_p, top_k, seed)
        rand = Randomness(seed, self.max_length + 1)
        seq = Sequence(tokens, max_new_tokens, self.bundle.eos_token_ids, max_length)
        stats = Stats(method=method, target_ep=self.prefix.provider, prompt_tokens=len(tokens),
                      draft_ep=self.draft.provider if self.draft and method != "ar" else None)
        target = Target(self.prefix, self.suffix, stats)
        # Prompt cache: K/V of the previous sequence's common prefix stay (a chat's history).
        stats.cached_prompt_tokens = _common_prefix(self._cached, tokens[:-1])
        target.truncate(stats.cached_prompt_tokens)
        worker = None
        if method == "ar":
            steps = generate_ar(target, seq, decoding, rand, stats)
        else:
            self.draft.cache.length = 0
            drafter = Drafter(self.draft, decoding, rand, self.bundle.vocab_size, stats, self.vocab_map)
            if method == "sd":
                steps = generate_sd(target, drafter, seq, decoding, rand, stats, gamma)
            else:
                worker = DraftWorker(drafter, gamma, max_branches)
                steps = generate_mirror(target, worker, seq, decoding, rand, stats, gamma, kappa)
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
            self._cached = seq.tokens[:target.length]


    def _usable_length(self, method: str, gamma: int, max_branches: int, prompt_tokens: int) -> int:
        """The longest sequence this generation may reach. A static draft's cache is fixed at its
        exported capacity C, which must also hold the draft's window (sd) or tree (mirror:
        at most gamma * (max_branches + 2) positions) beyond the committed tokens."""
        if method == "ar" or not self.draft.static:
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


def _read_json(path: Path):
    import json

    return json.loads(Path(path).read_text())
