"""The distilled draft: how it is initialised from a target, and its directory on disk.

A draft directory holds
  * ``config.json``: the draft's HF config (K layers; ``vocab_size`` = V', the LM head's rows),
  * ``draft.json``: what mirror-ort needs beyond HF (``DRAFT_FACTS``),
  * ``draft.safetensors``: decoder layers, final norm, LM head and stream heads
    (float16 by default: the committed draft must fit 32 MB; loaded as float32),
  * ``vocab_map.json`` with a reduced vocabulary: the V' target ids the head scores,
  * the target's tokenizer files.

The input embedding is the target's own, frozen while training and never stored:
a 49152 x 576 table alone is 57 MB in float16. Export takes it from the target and
refuses a target whose embedding differs (``target_embedding_sha256``).
"""

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import MirrorError
from .architectures import arch_spec
from .split import Draft
from .streams import StreamHeads

DRAFT_FACTS = "draft.json"
DRAFT_WEIGHTS = "draft.safetensors"
VOCAB_MAP = "vocab_map.json"
FORMAT = "mirror-ort-distilled-draft/1"
PACKAGED_DRAFTS = Path(__file__).resolve().parent.parent / "drafts"


@dataclass
class DraftShape:
    layers: int
    streams: int
    stream_intermediate: int  # hidden width of each stream head's MLP


def packaged_draft(description: dict) -> Path | None:
    """The draft shipped in ``mirror_ort/drafts/`` for an embedded default model, if any."""
    if description.get("kind") != "embedded-gguf":
        return None
    path = PACKAGED_DRAFTS / description["source"]
    return path if is_distilled_draft(path) else None


def is_distilled_draft(path) -> bool:
    return (Path(path) / DRAFT_FACTS).is_file()


def embedding_sha256(target) -> str:
    weight = target.model.embed_tokens.weight.detach().float().cpu().contiguous()
    return hashlib.sha256(weight.numpy().tobytes()).hexdigest()


def draft_from_target(target, shape: DraftShape, vocab_map: list[int] | None) -> Draft:
    """A draft made of the target's first ``shape.layers`` layers, its final norm, its LM head
    rows for ``vocab_map`` (all rows without one) and fresh stream heads, which start as
    copies of the main head. The embedding module is the target's own (shared, frozen)."""
    config = _draft_config(target.config, shape.layers, len(vocab_map) if vocab_map else target.config.vocab_size)
    hf = _empty_model(config, target.model.embed_tokens)
    hf.model.layers.load_state_dict(target.model.layers[: shape.layers].state_dict())
    hf.model.norm.load_state_dict(target.model.norm.state_dict())
    head = target.lm_head.weight.detach()
    hf.lm_head.weight.data.copy_(head[torch.tensor(vocab_map)] if vocab_map else head)
    heads = StreamHeads(config.hidden_size, shape.streams, shape.stream_intermediate) if shape.streams else None
    return _assemble(hf, heads, vocab_map).to(head.device)


def save_draft(draft: Draft, directory: Path, target, tokenizer, dtype: torch.dtype = torch.float16,
               provenance: dict | None = None) -> None:
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    draft.hf_config.to_json_file(directory / "config.json")
    weights = {name: t.detach().to("cpu", dtype).contiguous() for name, t in trainable_state(draft).items()}
    save_file(weights, str(directory / DRAFT_WEIGHTS))
    if draft.vocab_map is not None:
        (directory / VOCAB_MAP).write_text(json.dumps(draft.vocab_map.tolist()))
    heads = draft.stream_heads
    facts = {
        "format": FORMAT,
        "embeddings": "the target's input embedding, shared and not stored here",
        "target_embedding_sha256": embedding_sha256(target),
        "target_vocab_size": target.config.vocab_size,
        "vocab_map": VOCAB_MAP if draft.vocab_map is not None else None,
        "streams": heads.config if heads is not None else None,
        "dtype": str(dtype).removeprefix("torch."),
        **({"provenance": provenance} if provenance else {}),
    }
    (directory / DRAFT_FACTS).write_text(json.dumps(facts, indent=2) + "\n")
    tokenizer.save_pretrained(directory, legacy_format=False)  # fast files only: no 98 MB slow-tokenizer copy


def load_draft(directory: Path, target) -> Draft:
    """A saved draft in float32, wired to ``target``'s embedding (which must be the one it was trained with)."""
    from safetensors.torch import load_file
    from transformers import AutoConfig

    directory = Path(directory)
    try:
        facts = json.loads((directory / DRAFT_FACTS).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise MirrorError(f"{directory / DRAFT_FACTS} is unreadable ({e}): re-run `mirror-ort distill`") from None
    if facts.get("format") != FORMAT:
        raise MirrorError(f"{directory} holds draft format {facts.get('format')!r}; this mirror-ort reads {FORMAT!r}")
    if facts["target_embedding_sha256"] != embedding_sha256(target):
        raise MirrorError(f"the draft in {directory} was distilled from another target (its embedding differs): "
                          "export it with the target it was distilled from, or distill a new draft")
    config = AutoConfig.from_pretrained(directory)
    vocab_map = json.loads((directory / facts["vocab_map"]).read_text()) if facts["vocab_map"] else None
    streams = facts["streams"]
    heads = StreamHeads(**streams) if streams else None
    draft = _assemble(_empty_model(config, target.model.embed_tokens), heads, vocab_map)
    weights = {k: v.float() for k, v in load_file(str(directory / DRAFT_WEIGHTS)).items()}
    missing = set(trainable_state(draft)) - set(weights)
    if missing:
        raise MirrorError(f"{directory / DRAFT_WEIGHTS} lacks {sorted(missing)[0]}: the draft directory is damaged")
    draft.load_state_dict(weights, strict=False)
    return draft.eval()


def trainable_state(draft: Draft) -> dict[str, torch.Tensor]:
    """Every parameter except the shared embedding: what training updates and what is saved."""
    return {name: p for name, p in draft.named_parameters() if not name.startswith("embed.")}


def _draft_config(target_config, layers: int, vocab_size: int):
    config = copy.deepcopy(target_config)
    config.num_hidden_layers = layers
    config.vocab_size = vocab_size
    config.tie_word_embeddings = False  # the head covers V' rows; the embedding keeps all of the target's
    for key in ("layer_types", "max_window_layers"):  # per-layer lists follow the layer count
        if isinstance(getattr(config, key, None), list):
            setattr(config, key, getattr(config, key)[:layers])
    return config


def _empty_model(config, embedding):
    from transformers import AutoModelForCausalLM

    config.tie_word_embeddings = False
    hf = AutoModelForCausalLM.from_config(config)
    hf.model.embed_tokens = embedding
    embedding.weight.requires_grad_(False)
    return hf


def _assemble(hf, heads, vocab_map) -> Draft:
    draft = Draft(hf, arch_spec(hf.config), stream_heads=heads,
                  vocab_map=torch.tensor(vocab_map) if vocab_map else None)
    draft.hf_config = hf.config
    return draft
