"""The bundle's target and draft as transformers models, for the peers.

The target comes from the bundle's provenance (``load_source``: the same weights the
bundle was exported from, in float32). The draft is rebuilt from the manifest's
draft source so that the peers speculate with the same draft as ``sd`` and ``mirror``:

* ``layers:K``: the target's first K layers with its final norm and LM head. The HF
  model shares the target's modules (no copy of the weights).
* a distilled draft directory (``mirror-ort distill``): its layers, norm and head on
  the target's embedding. A reduced-vocabulary head (``vocab_map``) is scattered into
  a full-vocabulary head whose other rows score -1e4 (a bias), so the peer's draft
  proposes exactly the tokens the bundle's draft proposes. Speculative-streaming heads
  are not used: the peers draft one token per call.
* any other model source: loaded as is (export checked that its vocabulary matches).
"""

import copy
import json
from pathlib import Path

from ..errors import MirrorError
from .rows import Skipped

MASKED_LOGIT = -1e4


class PeerModels:
    def __init__(self, bundle, log=print):
        self.bundle, self.log = bundle, log
        self.source_spec = bundle.source
        self.draft_spec = bundle.graph("draft").source if bundle.has_draft else None
        self._target = self._draft = None
        self._draft_note = ""

    def target(self):
        """(model, tokenizer) of the target in float32, eval mode."""
        if self._target is None:
            if not self.source_spec:
                raise Skipped("the bundle's manifest names no provenance.source to load the target from")
            from ..export.sources import load_source

            try:
                source = load_source(self.source_spec)
            except MirrorError as e:
                raise Skipped(f"cannot load the bundle's source model {self.source_spec!r}: {e}") from None
            self._target = (source.model.eval(), source.tokenizer)
        return self._target

    def draft(self):
        """(model, note): the bundle's draft as a transformers causal LM over the full vocabulary."""
        if self._draft is None:
            if self.draft_spec is None:
                raise Skipped("the bundle has no draft to assist with: export it with --draft")
            from ..export.draft_source import resolve_draft

            target, _ = self.target()
            try:
                choice = resolve_draft(str(self.draft_spec), {}, target.config.num_hidden_layers)
            except MirrorError as e:
                raise Skipped(f"the bundle's draft {self.draft_spec!r} cannot be rebuilt here: {e}") from None
            if choice.kind == "layers":
                self._draft = truncated(target, choice.layers)
                self._draft_note = f"draft = the target's first {choice.layers} layers ({choice.spec})"
            elif choice.kind == "distilled":
                self._draft, self._draft_note = distilled(choice.path, target)
            else:
                from ..export.sources import load_source

                try:
                    self._draft = load_source(choice.spec).model.eval()
                except MirrorError as e:
                    raise Skipped(f"cannot load the bundle's draft {choice.spec!r}: {e}") from None
                self._draft_note = f"draft = {choice.spec}"
        return self._draft, self._draft_note

    @property
    def draft_has_reduced_vocab(self) -> bool:
        return self.bundle.has_draft and self.bundle.graph("draft").vocab_map is not None


def truncated(target, k: int):
    """The target's first ``k`` layers + final norm + LM head, sharing the target's modules."""
    from torch import nn

    n = target.config.num_hidden_layers
    if not 1 <= k <= n:
        raise Skipped(f"draft layers:{k} does not fit the {n}-layer target")
    layers = target.model.layers
    target.model.layers = nn.ModuleList()  # deep-copy everything but the layers...
    try:
        draft = copy.deepcopy(target)
    finally:
        target.model.layers = layers
    draft.model.layers = nn.ModuleList(layers[:k])  # ...which are shared, not copied
    draft.model.embed_tokens, draft.model.norm = target.model.embed_tokens, target.model.norm
    draft.lm_head = target.lm_head
    draft.config.num_hidden_layers = k
    for key in ("layer_types", "max_window_layers"):
        if isinstance(getattr(draft.config, key, None), list):
            setattr(draft.config, key, getattr(draft.config, key)[:k])
    return draft.eval()


def distilled(path: Path, target):
    """A distilled draft directory as an HF causal LM (see the module docstring)."""
    import torch
    from torch import nn
    from transformers import AutoModelForCausalLM

    from ..export.draft_dir import load_draft

    try:
        module = load_draft(path, target)
    except MirrorError as e:
        raise Skipped(f"cannot load the distilled draft {path}: {e}") from None
    config = copy.deepcopy(module.hf_config)
    vocab = target.config.vocab_size
    config.vocab_size, config.tie_word_embeddings = vocab, False
    hf = AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32)
    hf.model.embed_tokens = module.embed
    hf.model.layers = module.span.layers
    hf.model.rotary_emb = module.span.rotary
    hf.model.norm = module.head.norm
    head = module.head.lm_head
    note = f"draft = distilled {path} ({len(module.span.layers)} layers)"
    if module.vocab_map is None:
        hf.lm_head = head
    else:
        full = nn.Linear(head.in_features, vocab, bias=True)
        with torch.no_grad():
            full.weight.zero_()
            full.bias.fill_(MASKED_LOGIT)
            full.weight[module.vocab_map] = head.weight
            full.bias[module.vocab_map] = 0.0
        hf.lm_head = full
        note += f", its {len(module.vocab_map)}-token head scattered into the full vocabulary"
    if module.stream_heads is not None:
        note += "; its speculative-streaming heads are unused (one token per draft call)"
    return hf.eval(), note


def save_hf_dir(model, tokenizer, directory: Path) -> Path:
    """Save a transformers model for onnxruntime-genai's builder.

    The builder (written for transformers 5) reads RoPE settings from ``rope_parameters``
    and iterates ``rope_scaling`` unconditionally; transformers 4.57 writes
    ``rope_scaling: null`` for plain RoPE, so write the equivalent ``{"rope_type": "default"}``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    config_file = directory / "config.json"
    config = json.loads(config_file.read_text())
    if config.get("rope_scaling") is None:
        config["rope_scaling"] = {"rope_type": "default"}
    config_file.write_text(json.dumps(config, indent=2) + "\n")
    return directory
