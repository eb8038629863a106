"""The three graphs of a bundle, as torch modules with flat inputs for ONNX export.

* ``Prefix``: embeddings + target layers [0, l_e) + the early-exit head. It emits the
  hidden state at l_e for the suffix and the Top-kappa early-exit message
  (``exit_ids``, ``exit_logprobs``); the full early-exit logits stay inside.
* ``Suffix``: target layers [l_e, N) + final norm + LM head: the logits that decide.
* ``Draft``: a small decoder with its own head, plus optional speculative-streaming
  heads that predict tokens t+2 .. t+1+S from the same forward pass.

Every graph applies its head only to ``head_rows`` (indices into the new positions):
the LM head is a small model's largest matrix, and most positions need no head:
a prompt needs one row, a target-only step no early exit, a draft-tree level
only each branch's last token.

Design choices the paper leaves open: the early-exit head applies the final
RMSNorm before the shared LM head (the hidden state at l_e is not normalised); with a
reduced-vocabulary draft it scores only the draft's ids (``exit_vocab``): the message's
candidates seed the draft tree, and a row of the head per id is what a tree step costs the
target beyond a plain step (49,152 rows of SmolLM2's head against the draft's 8,192).
"""

import torch
from torch import nn

from .decoder import DecoderSpan, Head


def _pairs(flat):
    return list(zip(flat[0::2], flat[1::2]))


class Prefix(nn.Module):
    """``adapter`` (optional, ``exit_adapter.py``) maps the exit hidden state before the shared head;
    ``exit_vocab`` (optional: target ids) restricts the early-exit head to those ids, whose
    log-probs are then renormalised over them."""

    def __init__(self, hf_model, exit_layer: int, kappa: int, spec, adapter: nn.Module | None = None,
                 precision: str = "fp32", exit_vocab: torch.Tensor | None = None):
        super().__init__()
        self.embed = hf_model.model.embed_tokens
        self.span = DecoderSpan(hf_model, 0, exit_layer, spec, shared_cache=True, precision=precision)
        self.head = Head(hf_model, spec) if exit_vocab is None else ExitHead(hf_model, spec, exit_vocab)
        self.kappa = kappa
        self.adapter = adapter

    def forward(self, input_ids, position_ids, attention_mask, head_rows, *past):
        hidden, presents = self.span(self.embed(input_ids), position_ids, attention_mask, _pairs(past))
        exit_hidden = hidden.index_select(1, head_rows)
        if self.adapter is not None:
            exit_hidden = self.adapter(exit_hidden)
        logprobs = torch.log_softmax(self.head(exit_hidden).float(), dim=-1)
        exit_logprobs, exit_ids = torch.topk(logprobs, self.kappa, dim=-1)
        return (hidden, self.head.target_ids(exit_ids), exit_logprobs, *presents)


class ExitHead(Head):
    """The target's final norm and the rows of its LM head for ``ids`` (a matrix of its own in
    the graph, not a Gather of the full one each call); ``target_ids`` maps row indices back."""

    def __init__(self, hf_model, spec, ids: torch.Tensor):
        super().__init__(hf_model, spec)
        weight = hf_model.lm_head.weight.detach()[ids.long()].clone()
        self.lm_head = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        self.lm_head.weight = nn.Parameter(weight, requires_grad=False)
        self.register_buffer("ids", ids.long().clone(), persistent=False)

    def target_ids(self, rows):
        return torch.index_select(self.ids, 0, rows.reshape(-1)).reshape(rows.shape)


class Suffix(nn.Module):
    def __init__(self, hf_model, exit_layer: int, spec, precision: str = "fp32"):
        super().__init__()
        self.span = DecoderSpan(hf_model, exit_layer, hf_model.config.num_hidden_layers, spec, shared_cache=True,
                                precision=precision)
        self.head = Head(hf_model, spec)

    def forward(self, hidden, position_ids, attention_mask, head_rows, *past):
        hidden, presents = self.span(hidden, position_ids, attention_mask, _pairs(past))
        logits = self.head(hidden.index_select(1, head_rows)).float()
        return (logits, torch.argmax(logits, dim=-1), *presents)


class Draft(nn.Module):
    """A whole small decoder. ``stream_heads`` (optional) map the last hidden state to
    the hidden state that predicts token t+1+j, through the shared norm and LM head.

    A reduced-vocabulary draft (``vocab_map``: draft index -> target id) keeps the full
    input embedding, but its LM head scores only V' target ids: ``logits`` and
    ``stream_logits`` are over those V', while ``next_ids`` and ``stream_ids`` are
    mapped back to target ids inside the graph (a Gather), so verification compares
    target ids. Main and stream hidden states share one head MatMul: a memory-bound
    decode step then reads the head's weights once, not once per stream.
    """

    def __init__(self, hf_model, spec, num_layers: int | None = None, stream_heads: nn.Module | None = None,
                 vocab_map: torch.Tensor | None = None):
        super().__init__()
        n = num_layers or hf_model.config.num_hidden_layers
        self.embed = hf_model.model.embed_tokens
        self.span = DecoderSpan(hf_model, 0, n, spec)
        self.head = Head(hf_model, spec)
        self.stream_heads = stream_heads
        self.register_buffer("vocab_map", None if vocab_map is None else vocab_map.long(), persistent=False)

    def forward(self, input_ids, position_ids, attention_mask, head_rows, *past):
        hidden, presents = self.span(self.embed(input_ids), position_ids, attention_mask, _pairs(past))
        logits, stream_logits = self.logits(hidden.index_select(1, head_rows))
        outputs = [logits, self.target_ids(torch.argmax(logits, dim=-1))]
        if stream_logits is not None:
            outputs += [stream_logits, self.target_ids(torch.argmax(stream_logits, dim=-1))]
        return (*outputs, *presents)

    def logits(self, hidden):
        """Main logits [..., V'] and, with stream heads, stream logits [..., streams, V'] (else None)."""
        if self.stream_heads is None:
            return self.head(hidden).float(), None
        all_logits = self.head(torch.cat([hidden.unsqueeze(-2), self.stream_heads(hidden)], dim=-2)).float()
        return all_logits[..., 0, :], all_logits[..., 1:, :]

    def target_ids(self, draft_ids):
        """Draft indices -> target ids, as a plain Gather (QNN takes no GatherND)."""
        if self.vocab_map is None:
            return draft_ids
        return torch.index_select(self.vocab_map, 0, draft_ids.reshape(-1)).reshape(draft_ids.shape)
