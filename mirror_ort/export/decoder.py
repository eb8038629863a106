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

Exported (``fused``, the default) the span is written in ONNX opset-23 ops that ONNX
Runtime's CPU EP runs as single kernels: ``RMSNormalization``, ``RotaryEmbedding`` on
[B, S, H*D] and ``Attention`` (grouped K/V heads, the additive mask as is) on 3-D
BSND-packed Q/K/V, so there are no rotate_half or 5-D permutes left in the graph. The
I/O stays exactly as above. ``fused = False`` keeps the elementwise decomposition
(opset 20): the static NPU draft needs it (export/static.py), and eager PyTorch (training,
the validation reference) always runs it.
"""

import torch
import torch.nn.functional as F
from torch import nn
from torch.onnx import ops as onnx_ops

from .architectures import ArchSpec


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def _exporting() -> bool:
    return torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export()


def rms_norm(norm: nn.Module, x, fused: bool):
    """An HF RMSNorm module's math; one ONNX RMSNormalization node when exported fused."""
    if not (fused and _exporting()):
        return norm(x)
    eps = getattr(norm, "variance_epsilon", None) or getattr(norm, "eps", 1e-6)
    return F.rms_norm(x, (x.shape[-1],), norm.weight, eps)


class DecoderSpan(nn.Module):
    """Layers [start, end) of an HF Llama-family model, run with explicit past K/V."""

    fused = True  # export with opset-23 RMSNormalization / RotaryEmbedding / Attention

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
        if self.fused and _exporting():
            return self._forward_fused(hidden, position_ids, attention_mask, past)
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

    def _forward_fused(self, hidden, position_ids, attention_mask, past):
        cos, sin = self.rotary(hidden, position_ids)  # [B, S, D]: cat(freqs, freqs), so keep one half
        half = self.head_dim // 2
        cos, sin = cos[..., :half], sin[..., :half]
        presents = []
        for layer, (past_k, past_v) in zip(self.layers, past):
            x = rms_norm(layer.input_layernorm, hidden, True)
            attn_out, k, v = self._attention_fused(layer, x, cos, sin, attention_mask, past_k, past_v)
            hidden = hidden + attn_out
            hidden = hidden + layer.mlp(rms_norm(layer.post_attention_layernorm, hidden, True))
            presents += [k, v]
        return hidden, presents

    def _attention_fused(self, layer, x, cos, sin, mask, past_k, past_v):
        """Q/K/V stay [B, S, heads * D] (BSND packed); K/V are [B, past + S, Hk * D] after the concat."""
        attn = layer.self_attn
        b, s, _ = x.shape
        h, hk, d = self.num_heads, self.num_kv_heads, self.head_dim
        q, k, v = attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)
        if self.spec.qk_norm:
            q = rms_norm(attn.q_norm, q.view(b, s, h, d), True).reshape(b, s, h * d)
            k = rms_norm(attn.k_norm, k.view(b, s, hk, d), True).reshape(b, s, hk * d)
        q = onnx_ops.rotary_embedding(q, cos, sin, num_heads=h)
        k = onnx_ops.rotary_embedding(k, cos, sin, num_heads=hk).view(b, s, hk, d)
        v = v.view(b, s, hk, d)
        keys = torch.cat([past_k, k], dim=1).reshape(b, -1, hk * d)
        values = torch.cat([past_v, v], dim=1).reshape(b, -1, hk * d)
        out = onnx_ops.attention(q, keys, values, mask, q_num_heads=h, kv_num_heads=hk, scale=attn.scaling)[0]
        return attn.o_proj(out), k, v


class Head(nn.Module):
    """Final RMSNorm + LM head: the target's own head, reused at the early exit."""

    fused = True  # see DecoderSpan.fused

    def __init__(self, hf_model):
        super().__init__()
        self.norm = hf_model.model.norm
        self.lm_head = hf_model.lm_head

    def forward(self, hidden):
        return self.lm_head(rms_norm(self.norm, hidden, self.fused))
