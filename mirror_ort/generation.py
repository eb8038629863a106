"""Decoding settings: their defaults and their ranges, in one place.

The CLIs (``run``, ``bench``), the Python API and a bundle's shipped defaults all go through
``GenerationConfig.checked``, so a value out of range is refused the same way everywhere,
with the flag that sets it.
"""

from dataclasses import dataclass, fields, replace

from .errors import MirrorError

METHODS = ("mirror", "sd", "ar")
DRAFT_SOURCES = ("auto", "model", "lookup", "both")  # auto: both where the bundle has a draft, else lookup
AUTO_GAMMA_LIMIT = 8  # the longest window gamma="auto" chooses


@dataclass(frozen=True)
class GenerationConfig:
    method: str = "mirror"
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k cut
    seed: int = 0
    gamma: int | str = "auto"  # draft window length, or "auto": chosen each step (runtime/window.py)
    kappa: int | None = None  # early-exit candidates used per position (None: the bundle's)
    max_branches: int = 8  # cap on the draft tree's branches
    draft: str = "auto"  # what proposes windows: the model draft, prompt lookup, or both (runtime/lookup.py)

    RULES = {
        "method": (lambda v: v in METHODS, f"choose from {', '.join(METHODS)}"),
        "max_new_tokens": (lambda v: v >= 1, "must be at least 1"),
        "temperature": (lambda v: v >= 0, "must be 0 (greedy) or more"),
        "top_p": (lambda v: 0 < v <= 1, "must be in (0, 1]"),
        "top_k": (lambda v: v >= 0, "must be 0 (off) or more"),
        "seed": (lambda v: v >= 0, "must be 0 or more"),
        "gamma": (lambda v: v == "auto" or (isinstance(v, int) and v >= 1), "must be auto or at least 1"),
        "kappa": (lambda v: v is None or v >= 1, "must be at least 1"),
        "max_branches": (lambda v: v >= 1, "must be at least 1"),
        "draft": (lambda v: v in DRAFT_SOURCES, f"choose from {', '.join(DRAFT_SOURCES)}"),
    }
    TYPES = {"method": str, "temperature": float, "top_p": float, "kappa": (int, type(None)), "gamma": (int, str),
             "draft": str}

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    @property
    def auto_gamma(self) -> bool:
        return self.gamma == "auto"

    @property
    def max_gamma(self) -> int:
        """The longest window this generation may verify."""
        return AUTO_GAMMA_LIMIT if self.auto_gamma else self.gamma

    def checked(self, where: str = "") -> "GenerationConfig":
        """Self, or a MirrorError naming the first setting of the wrong type or out of range."""
        for f in fields(self):
            value = getattr(self, f.name)
            kind = self.TYPES.get(f.name, int)
            numeric = kind is float and isinstance(value, (int, float))
            if isinstance(value, bool) or not (numeric or isinstance(value, kind)):
                raise MirrorError(f"{_flag(f.name, where)} {value!r}: expected {_kind(kind)}")
            ok, rule = self.RULES[f.name]
            if not ok(value):
                raise MirrorError(f"{_flag(f.name, where)} {value!r}: {rule}")
        return self

    def updated(self, where: str = "", **changes) -> "GenerationConfig":
        """A copy with the given settings (None leaves a setting as it is), checked; ``where``
        names their origin in errors (a manifest block) instead of the CLI flags."""
        unknown = sorted(set(changes) - {f.name for f in fields(self)})
        if unknown:
            raise MirrorError(f"unknown generation setting {_flag(unknown[0], where)}: "
                              f"use {', '.join(f.name for f in fields(self))}")
        return replace(self, **{k: v for k, v in changes.items() if v is not None}).checked(where)


def _flag(name: str, where: str) -> str:
    return f"{where}.{name}" if where else "--" + name.replace("_", "-")


def _kind(kind) -> str:
    names = {int: "an integer", float: "a number", str: "a string", (int, str): "an integer or auto"}
    return names.get(kind, "an integer or nothing")
