"""What a generation measured: counts and where the time went."""

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field


@dataclass
class Stats:
    method: str = ""
    target_ep: str = ""
    draft_ep: str | None = None
    new_tokens: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0  # prompt positions whose K/V came from the previous generation
    target_calls: int = 0          # verification steps (prefix + suffix over one window)
    draft_calls: int = 0           # draft forward passes (serial proposals and tree levels)
    draft_tokens: int = 0          # draft tokens proposed by serial calls (streams included)
    serial_draft_calls: int = 0
    accepted_draft_tokens: int = 0
    reused_windows: int = 0        # Mirror-SD rendezvous: next window found in the draft tree
    fallback_windows: int = 0      # ... not found: drafted afresh
    tree_branches: int = 0
    draft_error: str | None = None
    speculation: dict | None = None  # the windows chosen (runtime/window.py), the tree's width, the cost curve
    # where the time went: "target" is a step of the fused target (prefix and suffix in one
    # session, runtime/fused.py), "prefix" and "suffix" the halves' steps
    seconds: dict = field(default_factory=lambda: {k: 0.0 for k in (
        "prefill", "target", "prefix", "suffix", "draft", "draft_tree", "wait", "total")})

    @contextmanager
    def timed(self, key: str):
        t = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[key] += time.perf_counter() - t

    def as_dict(self) -> dict:
        d = asdict(self)
        total = self.seconds["total"]
        decode = max(total - self.seconds["prefill"], 1e-9)
        windows = self.reused_windows + self.fallback_windows
        d.update(
            tokens_per_s=self.new_tokens / total if total else 0.0,
            decode_tokens_per_s=max(self.new_tokens - 1, 0) / decode,
            mean_accepted=self.new_tokens / self.target_calls if self.target_calls else 0.0,
            reuse_rate=self.reused_windows / windows if windows else 0.0,
            fallback_rate=self.fallback_windows / windows if windows else 0.0,
            draft_tokens_per_call=self.draft_tokens / self.serial_draft_calls if self.serial_draft_calls else 0.0,
            accepted_per_draft_call=(self.accepted_draft_tokens / self.serial_draft_calls
                                     if self.serial_draft_calls else 0.0),
        )
        # Time on the target's thread not spent in a graph or waiting: Python glue. In
        # Mirror-SD the draft runs on its own thread, so its time is not the target's.
        serial = ("prefill", "target", "prefix", "suffix", "wait") + (("draft",) if self.method == "sd" else ())
        glue = total - sum(self.seconds[k] for k in serial)
        d["seconds"] = {**self.seconds, "glue": max(glue, 0.0)}
        return d
