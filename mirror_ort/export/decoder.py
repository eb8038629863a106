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

The target's spans (``shared_cache=True``) are exported the way ONNX Runtime decodes
fastest: one ``com.microsoft`` GroupQueryAttention per layer on packed Q/K/V, with rotary
inside and a shared BNSH cache (``past.{i}.key`` and ``present.{i}.key`` are the same
[batch, kv_heads, capacity, head_dim] buffer; the op writes the new positions in place
after the first ``total - seq``). The target only ever scores causal windows, so the
mask's width (``total``) is all the op needs from it; positions follow from the length.
The draft keeps BSND and explicit masks: its tree levels need tree masks.

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


def norm_eps(norm: nn.Module) -> float:
    """An HF RMSNorm module's epsilon (Llama-style ``variance_epsilon`` or ``eps``)."""
    return getattr(norm, "variance_epsilon", None) or getattr(norm, "eps", 1e-6)


def rms_norm(norm: nn.Module, x, fused: bool):
    """An HF RMSNorm module's math; one ONNX RMSNormalization node when exported fused."""
    if not (fused and _exporting()):
        return norm(x)
    return F.rms_norm(x, (x.shape[-1],), norm.weight, norm_eps(norm))


class DecoderSpan(nn.Module):
    """Layers [start, end) of an HF Llama-family model, run with explicit past K/V."""

    fused = True  # export with opset-23 RMSNormalization / RotaryEmbedding / Attention

    def __init__(self, hf_model, start: int, end: int, spec: ArchSpec, shared_cache: bool = False):
        super().__init__()
        cfg = hf_model.config
        self.start, self.end = start, end
        self.layers = nn.ModuleList(hf_model.model.layers[start:end])
        self.rotary = hf_model.model.rotary_emb
        self.spec = spec
        self.num_heads = cfg.num_attention_heads
        self.num_kv_heads = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        # ONNX Runtime's GroupQueryAttention takes head sizes in multiples of 16; others keep BSND.
        self.shared_cache = shared_cache and self.head_dim % 16 == 0
        if self.shared_cache:
            self._prepare_gqa(cfg)

    def forward(self, hidden, position_ids, attention_mask, past):
        if self.shared_cache and _exporting():
            return self._forward_gqa(hidden, attention_mask, past)
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
        q, k, v = self._packed_qkv(attn, x)
        q = onnx_ops.rotary_embedding(q, cos, sin, num_heads=h)
        k = onnx_ops.rotary_embedding(k, cos, sin, num_heads=hk).view(b, s, hk, d)
        v = v.view(b, s, hk, d)
        keys = torch.cat([past_k, k], dim=1).reshape(b, -1, hk * d)
        values = torch.cat([past_v, v], dim=1).reshape(b, -1, hk * d)
        out = onnx_ops.attention(q, keys, values, mask, q_num_heads=h, kv_num_heads=hk, scale=attn.scaling)[0]
        return attn.o_proj(out), k, v

    def _packed_qkv(self, attn, x):
        """Q, K, V as [B, S, heads * D]; Q and K normalised per head first where the family does (Qwen3)."""
        b, s, _ = x.shape
        h, hk, d = self.num_heads, self.num_kv_heads, self.head_dim
        q, k, v = attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)
        if self.spec.qk_norm:
            q = rms_norm(attn.q_norm, q.view(b, s, h, d), True).reshape(b, s, h * d)
            k = rms_norm(attn.k_norm, k.view(b, s, hk, d), True).reshape(b, s, hk * d)
        return q, k, v

    def _prepare_gqa(self, cfg):
        """Packed projections (one MatMul for Q/K/V, one for gate/up) and the rotary tables GQA reads."""
        if not self.spec.qk_norm:  # Qwen3 normalises q and k apart: keep them apart
            self.qkv = nn.ModuleList(_packed_linear([l.self_attn.q_proj, l.self_attn.k_proj, l.self_attn.v_proj])
                                     for l in self.layers)
        self.gate_up = nn.ModuleList(_packed_linear([l.mlp.gate_proj, l.mlp.up_proj]) for l in self.layers)
        with torch.no_grad():
            positions = torch.arange(cfg.max_position_embeddings)[None]
            cos, sin = self.rotary(torch.zeros(1, dtype=torch.float32), positions)
        half = self.head_dim // 2
        self.register_buffer("cos_cache", cos[0, :, :half].contiguous(), persistent=False)
        self.register_buffer("sin_cache", sin[0, :, :half].contiguous(), persistent=False)

    def _forward_gqa(self, hidden, attention_mask, past):
        """Per layer: GroupQueryAttention, then SkipSimplifiedLayerNormalization (residual add +
        the next RMSNorm in one op) around a packed gate/up MLP."""
        b, s, _ = hidden.shape
        total = attention_mask.shape[-1]
        seqlens_k = torch.full((b,), total - 1, dtype=torch.int32)  # per row: valid length - 1
        total_length = torch.full((), total, dtype=torch.int32)
        presents = []
        x = rms_norm(self.layers[0].input_layernorm, hidden, True)
        for i, (layer, (past_k, past_v)) in enumerate(zip(self.layers, past)):
            attn = layer.self_attn
            qkv = self._packed_qkv(attn, x) if self.spec.qk_norm else (self.qkv[i](x), None, None)
            out, k, v = onnx_ops.symbolic_multi_out(
                "com.microsoft::GroupQueryAttention",
                [*qkv, past_k, past_v, seqlens_k, total_length, self.cos_cache, self.sin_cache],
                {"num_heads": self.num_heads, "kv_num_heads": self.num_kv_heads, "scale": float(attn.scaling),
                 "do_rotary": 1, "rotary_interleaved": 0},
                dtypes=(hidden.dtype, past_k.dtype, past_v.dtype),
                shapes=((b, s, self.num_heads * self.head_dim), past_k.shape, past_v.shape),
                version=1,
            )
            presents += [k, v]
            x, hidden = _skip_rms_norm(layer.post_attention_layernorm, attn.o_proj(out), hidden)
            gate, up = self.gate_up[i](x).chunk(2, dim=-1)
            mlp_out = layer.mlp.down_proj(layer.mlp.act_fn(gate) * up)
            if i + 1 < len(self.layers):
                x, hidden = _skip_rms_norm(self.layers[i + 1].input_layernorm, mlp_out, hidden)
            else:
                hidden = hidden + mlp_out
        return hidden, presents


def _skip_rms_norm(norm: nn.Module, x, residual):
    """(RMSNorm(residual + x), residual + x) as one com.microsoft SkipSimplifiedLayerNormalization."""
    stats = (*x.shape[:-1], 1)
    normed, _, _, total = onnx_ops.symbolic_multi_out(
        "com.microsoft::SkipSimplifiedLayerNormalization", [x, residual, norm.weight], {"epsilon": float(norm_eps(norm))},
        dtypes=(x.dtype, torch.float32, torch.float32, x.dtype), shapes=(x.shape, stats, stats, x.shape), version=1)
    return normed, total


def _packed_linear(linears: list[nn.Linear]) -> nn.Linear:
    """One Linear computing several side by side (their outputs concatenated)."""
    packed = nn.Linear(linears[0].in_features, sum(l.out_features for l in linears),
                       bias=linears[0].bias is not None)
    with torch.no_grad():
        packed.weight.copy_(torch.cat([l.weight for l in linears]))
        if packed.bias is not None:
            packed.bias.copy_(torch.cat([l.bias for l in linears]))
    return packed


class Head(nn.Module):
    """Final RMSNorm + LM head: the target's own head, reused at the early exit."""

    fused = True  # see DecoderSpan.fused

    def __init__(self, hf_model):
        super().__init__()
        self.norm = hf_model.model.norm
        self.lm_head = hf_model.lm_head

    def forward(self, hidden):
        return self.lm_head(rms_norm(self.norm, hidden, self.fused))
