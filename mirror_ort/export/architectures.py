"""Per-architecture export facts, declared as data (in the spirit of optimum's export configs).

Every supported family is a Llama-style decoder: embeddings, N blocks (RMSNorm, rotary
attention with grouped K/V heads, gated MLP), final RMSNorm and an LM head. What differs
between families is listed here and nowhere else:

* where the projections live (Phi-3 packs q/k/v into ``qkv_proj`` and gate/up into
  ``gate_up_proj``) and what the MLP's activation is called;
* extra norms (Qwen3 and Gemma 3 normalise each head of q and k; Gemma 3 also normalises
  the attention and MLP outputs before the residual add, ``sandwich_norms``);
* Gemma's RMSNorm scales by ``1 + weight`` (``norm_weight_offset``);
* which layers attend through a sliding window (``layer_windows``) and which rotary
  table each layer reads (Gemma 3's sliding layers have their own base, ``local_rotary``).

Settings the graphs cannot reproduce exactly are refused by name (``check_settings``).
"""

from dataclasses import dataclass

from ..errors import MirrorError

# Rotary variants whose tables depend only on the position: the graphs reproduce them exactly.
# "dynamic" and "longrope" rescale with the sequence length, so one exported table cannot.
STATIC_ROPE_TYPES = ("default", "linear", "llama3", "yarn")


@dataclass(frozen=True)
class ArchSpec:
    family: str
    qk_norm: bool = False            # Qwen3, Gemma 3: RMSNorm on each head of q and k before rotary
    packed_qkv: str | None = None    # Phi-3: one Linear computing q, k and v side by side
    packed_gate_up: str | None = None  # Phi-3: one Linear computing gate and up side by side
    activation: str = "act_fn"       # the MLP's activation attribute
    sandwich_norms: bool = False     # Gemma 3: post-attention / pre- and post-feedforward norms
    norm_weight_offset: float = 0.0  # Gemma: RMSNorm multiplies by (offset + weight)
    local_rotary: str | None = None  # Gemma 3: the model attribute holding the sliding layers' rotary


ARCHITECTURES: dict[str, ArchSpec] = {
    "llama": ArchSpec("llama"),  # Llama 2/3/3.x (llama3 rope scaling), SmolLM/SmolLM2, TinyLlama
    "mistral": ArchSpec("mistral"),
    "qwen2": ArchSpec("qwen2"),
    "qwen3": ArchSpec("qwen3", qk_norm=True),
    "phi3": ArchSpec("phi3", packed_qkv="qkv_proj", packed_gate_up="gate_up_proj", activation="activation_fn"),
    "gemma3_text": ArchSpec("gemma3_text", qk_norm=True, sandwich_norms=True, norm_weight_offset=1.0,
                            local_rotary="rotary_emb_local"),
}


def arch_spec(config) -> ArchSpec:
    """The spec for an HF config, or a one-line error naming what is supported or the setting that is not."""
    spec = ARCHITECTURES.get(config.model_type)
    if spec is None:
        raise MirrorError(
            f"unsupported architecture {config.model_type!r} "
            f"(supported: {', '.join(sorted(ARCHITECTURES))})"
        )
    check_settings(config)
    return spec


def check_settings(config) -> None:
    """Refuse settings of a supported family that the exported graphs would not reproduce exactly."""
    family = config.model_type
    rope = getattr(config, "rope_scaling", None) or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in STATIC_ROPE_TYPES:
        raise MirrorError(f"{family}: unsupported setting rope_scaling type {rope_type!r} "
                          f"(supported: {', '.join(STATIC_ROPE_TYPES)}): its rotary table changes with the length")
    partial = getattr(config, "partial_rotary_factor", 1.0)
    if partial not in (None, 1.0):
        raise MirrorError(f"{family}: unsupported setting partial_rotary_factor {partial} (rotary on every head "
                          "dimension only)")
    for key in ("attn_logit_softcapping", "final_logit_softcapping"):
        if getattr(config, key, None) is not None:
            raise MirrorError(f"{family}: unsupported setting {key} {getattr(config, key)} (no soft-capping)")
    if getattr(config, "use_bidirectional_attention", False):
        raise MirrorError(f"{family}: unsupported setting use_bidirectional_attention (causal decoders only)")


def layer_windows(config) -> list[int | None]:
    """Per layer, how many keys (the query's own included) it attends to, or None for all.

    HF's rule (``masking_utils.sliding_window_overlay``): key j is visible to query i when
    i - window < j <= i. Families with ``layer_types`` (Qwen2/3, Gemma 3) slide only on their
    ``sliding_attention`` layers; Mistral and Phi-3 slide on every layer when ``sliding_window``
    is set."""
    window = getattr(config, "sliding_window", None)
    n = config.num_hidden_layers
    if not window:
        return [None] * n
    types = getattr(config, "layer_types", None)
    if types is None:
        return [window] * n
    return [window if t == "sliding_attention" else None for t in types]
