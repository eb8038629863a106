"""Per-architecture export facts, declared as data (in the spirit of optimum's export configs).

Every supported family is a Llama-style decoder: embeddings, N pre-norm blocks
(RMSNorm, rotary attention with grouped K/V heads, gated MLP), final RMSNorm and
an LM head. What differs between families is listed here and nowhere else.
"""

from dataclasses import dataclass

from ..errors import MirrorError


@dataclass(frozen=True)
class ArchSpec:
    family: str
    qk_norm: bool = False          # Qwen3: RMSNorm on each head of q and k before rotary
    sliding_window_key: str | None = None  # config attribute that may bound attention span


ARCHITECTURES: dict[str, ArchSpec] = {
    "llama": ArchSpec("llama"),  # Llama 2/3, SmolLM/SmolLM2, TinyLlama
    "mistral": ArchSpec("mistral", sliding_window_key="sliding_window"),
    "qwen2": ArchSpec("qwen2", sliding_window_key="sliding_window"),
    "qwen3": ArchSpec("qwen3", qk_norm=True, sliding_window_key="sliding_window"),
}


def arch_spec(config) -> ArchSpec:
    """The spec for an HF config, or a one-line error naming what is supported."""
    spec = ARCHITECTURES.get(config.model_type)
    if spec is None:
        raise MirrorError(
            f"unsupported architecture {config.model_type!r} "
            f"(supported: {', '.join(sorted(ARCHITECTURES))})"
        )
    return spec


def attention_span_limit(config, spec: ArchSpec) -> int | None:
    """The longest context the exported graphs reproduce exactly (sliding-window models)."""
    if spec.sliding_window_key is None:
        return None
    if config.model_type == "qwen2" and not getattr(config, "use_sliding_window", False):
        return None
    if config.model_type == "qwen3" and not getattr(config, "use_sliding_window", False):
        return None
    return getattr(config, spec.sliding_window_key, None)
