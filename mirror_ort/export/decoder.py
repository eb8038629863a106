"""A span of decoder layers with explicit K/V, positions and mask: the unit every graph is built from.

HF attention modules own their cache objects, which do not export cleanly and
align the causal triangle wrongly for several new tokens on a non-empty cache.
So we run the HF layers' own weights through a small explicit forward:

* K/V layout is BSND: ``past.{i}.key`` is [batch, past_len, kv_heads, head_dim].
  With batch 1 a prefix of a preallocated [1, capacity, H, D] buffer is one
  contiguous block, so the runtime binds it without copying.
* ``present.{i}.key`` holds only the K/V of the new positions [batch, seq, H, D];
  the runtime binds it straight into the cache buffer after the past.
* ``attention_mask`` is additive float [batch, 1, seq, past_len + seq]; the runtime
  writes causal masks for windows and tree masks for the draft tree.
"""

import torch
from torch import nn

from .architectures import ArchSpec


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class DecoderSpan(nn.Module):
    """Layers [start, end) of an HF Llama-family model, run with explicit past K/V."""

    def __init__(self, hf_model, start: int, end: int, spec: ArchSpec):
        super().__init__()
        cfg = hf_model.config
        self.start, self.end = start, end
        self.layers = nn.ModuleList(hf_model.model.layers[start:end])
        self.rotary = hf_model.model.rotary_emb
        self.spec = spec
        self.num_heads = cfg.num_attention_heads
        self.num_kv_heads = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads

    def forward(self, hidden, position_ids, attention_mask, past):
        cos, sin = self.rotary(hidden, position_ids)  # [B, S, D]
        cos, sin = cos.unsqueeze(2), sin.unsqueeze(2)  # broadcast over heads (BSND)
        mask = attention_mask.unsqueeze(1)  # [B, 1, 1, S, T] over (kv_head, group)
        presents = []
        for layer, (past_k, past_v) in zip(self.layers, past):
            attn_out, k, v = self._attention(layer, layer.input_layernorm(hidden), cos, sin, mask, past_k, past_v)
            hidden = hidden + attn_out
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
            presents += [k, v]
        return hidden, presents

    def _attention(self, layer, x, cos, sin, mask, past_k, past_v):
        attn = layer.self_attn
        b, s, _ = x.shape
        h, hk, d = self.num_heads, self.num_kv_heads, self.head_dim
        q = attn.q_proj(x).view(b, s, h, d)
        k = attn.k_proj(x).view(b, s, hk, d)
        v = attn.v_proj(x).view(b, s, hk, d)
        if self.spec.qk_norm:
            q, k = attn.q_norm(q), attn.k_norm(k)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        keys = torch.cat([past_k, k], dim=1)  # [B, T, Hk, D]
        values = torch.cat([past_v, v], dim=1)
        # Grouped-query attention without repeating K/V: q as [B, Hk, G, S, D].
        q5 = q.view(b, s, hk, h // hk, d).permute(0, 2, 3, 1, 4)
        k5 = keys.permute(0, 2, 3, 1).unsqueeze(2)  # [B, Hk, 1, D, T]
        v5 = values.permute(0, 2, 1, 3).unsqueeze(2)  # [B, Hk, 1, T, D]
        scores = torch.matmul(q5, k5) * attn.scaling + mask
        probs = torch.softmax(scores.float(), dim=-1).to(v5.dtype)
        out = torch.matmul(probs, v5)  # [B, Hk, G, S, D]
        out = out.permute(0, 3, 1, 2, 4).reshape(b, s, h * d)
        return attn.o_proj(out), k, v


class Head(nn.Module):
    """Final RMSNorm + LM head: the target's own head, reused at the early exit."""

    def __init__(self, hf_model):
        super().__init__()
        self.norm = hf_model.model.norm
        self.lm_head = hf_model.lm_head

    def forward(self, hidden):
        return self.lm_head(self.norm(hidden))
