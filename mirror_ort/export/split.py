"""The three graphs of a bundle, as torch modules with flat inputs for ONNX export.

* ``Prefix``: embeddings + target layers [0, l_e) + the early-exit head. It emits the
  hidden state at l_e for the suffix and the Top-kappa early-exit message
  (``exit_ids``, ``exit_logprobs``); the full early-exit logits stay inside.
* ``Suffix``: target layers [l_e, N) + final norm + LM head: the logits that decide.
* ``Draft``: a small decoder with its own head, plus optional speculative-streaming
  heads that predict tokens t+2 .. t+1+S from the same forward pass.

Design choice the paper leaves open: the early-exit head applies the final
RMSNorm before the shared LM head (the hidden state at l_e is not normalised).
"""

import torch
from torch import nn

from .decoder import DecoderSpan, Head


def _pairs(flat):
    return list(zip(flat[0::2], flat[1::2]))


class Prefix(nn.Module):
    def __init__(self, hf_model, exit_layer: int, kappa: int, spec):
        super().__init__()
        self.embed = hf_model.model.embed_tokens
        self.span = DecoderSpan(hf_model, 0, exit_layer, spec)
        self.head = Head(hf_model)
        self.kappa = kappa

    def forward(self, input_ids, position_ids, attention_mask, *past):
        hidden, presents = self.span(self.embed(input_ids), position_ids, attention_mask, _pairs(past))
        logprobs = torch.log_softmax(self.head(hidden).float(), dim=-1)
        exit_logprobs, exit_ids = torch.topk(logprobs, self.kappa, dim=-1)
        return (hidden, exit_ids, exit_logprobs, *presents)


class Suffix(nn.Module):
    def __init__(self, hf_model, exit_layer: int, spec):
        super().__init__()
        self.span = DecoderSpan(hf_model, exit_layer, hf_model.config.num_hidden_layers, spec)
        self.head = Head(hf_model)

    def forward(self, hidden, position_ids, attention_mask, *past):
        hidden, presents = self.span(hidden, position_ids, attention_mask, _pairs(past))
        logits = self.head(hidden).float()
        return (logits, torch.argmax(logits, dim=-1), *presents)


class Draft(nn.Module):
    """A whole small decoder. ``stream_heads`` (optional) map the last hidden state to
    the hidden state that predicts token t+1+j, through the shared norm and LM head."""

    def __init__(self, hf_model, spec, num_layers: int | None = None, stream_heads: nn.Module | None = None):
        super().__init__()
        n = num_layers or hf_model.config.num_hidden_layers
        self.embed = hf_model.model.embed_tokens
        self.span = DecoderSpan(hf_model, 0, n, spec)
        self.head = Head(hf_model)
        self.stream_heads = stream_heads

    def forward(self, input_ids, position_ids, attention_mask, *past):
        hidden, presents = self.span(self.embed(input_ids), position_ids, attention_mask, _pairs(past))
        logits = self.head(hidden).float()
        outputs = [logits, torch.argmax(logits, dim=-1)]
        if self.stream_heads is not None:
            stream_logits = self.head(self.stream_heads(hidden)).float()  # [B, S, streams, V]
            outputs += [stream_logits, torch.argmax(stream_logits, dim=-1)]
        return (*outputs, *presents)
