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
At fp32 the exporter then rewrites each of those nodes into grouped attention over a
positions-major cache (export/grouped_attention.py), on which a lone token computes the bits a
window would; a quantized target's query rows are padded by one inside the graph
(``PADDED_QUERY_ROWS``) for the same bits.
The draft keeps BSND and explicit masks: its tree levels need tree masks.

Sliding-window layers (Mistral, Phi-3, Qwen with ``use_sliding_window``, Gemma 3's local
layers) keep every position in the cache like the others; what they may see is cut by the
graph: GroupQueryAttention's ``local_window_size`` in the target, a band added to the
additive mask in the draft and the eager path (the key's cache index is its position).

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

from .architectures import ArchSpec, layer_windows

MASKED = -1e9  # the runtime's additive mask value (runtime/masks.py)
# GroupQueryAttention's CPU kernel takes a GEMV path for a single query row, whose last bits differ
# from the same row scored inside a window; every other op of the target computes a row alike
# whatever the row count. How a target's graphs keep a lone token exact, by precision (measured,
# docs/profile-fp32.md):
# * fp32: the attention rewritten as grouped products over a positions-major cache
#   (export/grouped_attention.py): a lone token is one row in every op. Against the filler row
#   it replaces, 5-7% less time per decode step (the graphs alone, after 128 and 700 positions).
# * int8, int4: GroupQueryAttention scores one zero query row more than it is given
#   (``PADDED_QUERY_ROWS``): its int8-activation MatMuls cost per row, so one row instead of two
#   everywhere else (6% less time per token than the filler row at int4). The grouped rewrite's
#   dozen small ops per layer cost int4's faster step 6-9% more than the padded row at 128
#   positions and 1-4% at 700 (docs/profile-int4.md).
# * otherwise (fp16; sliding-window layers at fp32): the runtime's filler row (runtime/target.py).
GROUPED_ATTENTION_PRECISIONS = ("fp32",)
PADDED_QUERY_ROWS = 1
PAD_QUERY_PRECISIONS = ("int8", "int4")


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def _exporting() -> bool:
    return torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export()


def norm_eps(norm: nn.Module) -> float:
    """An HF RMSNorm module's epsilon (Llama-style ``variance_epsilon`` or ``eps``)."""
    return getattr(norm, "variance_epsilon", None) or getattr(norm, "eps", 1e-6)


def norm_weight(norm: nn.Module, spec: ArchSpec):
    """The scale an HF RMSNorm module multiplies by: its weight, or 1 + weight for Gemma."""
    return norm.weight + spec.norm_weight_offset if spec.norm_weight_offset else norm.weight


def rms_norm(norm: nn.Module, x, fused: bool, spec: ArchSpec):
    """An HF RMSNorm module's math; one ONNX RMSNormalization node when exported fused."""
    if not (fused and _exporting()):
        return norm(x)
    return F.rms_norm(x, (x.shape[-1],), norm_weight(norm, spec), norm_eps(norm))


def window_mask(position_ids, total: int, window: int):
    """[B, 1, S, total] additive band: key j is hidden from the query at position p when p - j >= window."""
    far = position_ids[:, None, :, None] - torch.arange(total, device=position_ids.device) >= window
    return torch.where(far, MASKED, 0.0)


class DecoderSpan(nn.Module):
    """Layers [start, end) of an HF Llama-family model, run with explicit past K/V."""

    fused = True  # export with opset-23 RMSNormalization / RotaryEmbedding / Attention

    def __init__(self, hf_model, start: int, end: int, spec: ArchSpec, shared_cache: bool = False,
                 precision: str = "fp32"):
        super().__init__()
        cfg = hf_model.config
        self.start, self.end = start, end
        self.layers = nn.ModuleList(hf_model.model.layers[start:end])
        self.rotary = hf_model.model.rotary_emb
        self.local_rotary = getattr(hf_model.model, spec.local_rotary) if spec.local_rotary else None
        self.spec = spec
        self.windows = layer_windows(cfg)[start:end]
        self.num_heads = cfg.num_attention_heads
        self.num_kv_heads = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        # ONNX Runtime's GroupQueryAttention takes head sizes in multiples of 16; others keep BSND.
        self.shared_cache = shared_cache and self.head_dim % 16 == 0
        # a lone token exact by precision (see GROUPED_ATTENTION_PRECISIONS): the exporter rewrites the
        # GroupQueryAttention nodes where no layer slides, or the graph pads its query rows
        self.grouped_attention = (self.shared_cache and precision in GROUPED_ATTENTION_PRECISIONS
                                  and all(w is None for w in self.windows))
        self.padded_rows = PADDED_QUERY_ROWS if self.shared_cache and precision in PAD_QUERY_PRECISIONS else 0
        if self.shared_cache:
            self._prepare_gqa(cfg)

    def _local(self, i: int) -> bool:
        """Does layer i (within the span) read the sliding layers' own rotary table (Gemma 3)?"""
        return self.local_rotary is not None and self.windows[i] is not None

    def _rotary_tables(self, hidden, position_ids):
        """cos, sin [B, S, D] per rotary table in use: ``global`` and, for Gemma 3, ``local``."""
        tables = {"global": self.rotary(hidden, position_ids)}
        if any(self._local(i) for i in range(len(self.layers))):
            tables["local"] = self.local_rotary(hidden, position_ids)
        return tables

    def _layer_masks(self, attention_mask, position_ids):
        """The additive mask each layer attends with: the runtime's, banded on sliding layers."""
        total = attention_mask.shape[-1]
        bands = {w: attention_mask + window_mask(position_ids, total, w) for w in set(self.windows) if w is not None}
        return [attention_mask if w is None else bands[w] for w in self.windows]

    def _pre_mlp_norm(self, layer):
        return layer.pre_feedforward_layernorm if self.spec.sandwich_norms else layer.post_attention_layernorm

    def forward(self, hidden, position_ids, attention_mask, past):
        if self.shared_cache and _exporting():
            return self._forward_gqa(hidden, attention_mask, past)
        if self.fused and _exporting():
            return self._forward_fused(hidden, position_ids, attention_mask, past)
        tables = {kind: (cos.unsqueeze(2), sin.unsqueeze(2))  # broadcast over heads (BSND)
                  for kind, (cos, sin) in self._rotary_tables(hidden, position_ids).items()}
        masks = [m.unsqueeze(1) for m in self._layer_masks(attention_mask, position_ids)]  # [B, 1, 1, S, T]
        presents = []
        for i, (layer, (past_k, past_v)) in enumerate(zip(self.layers, past)):
            cos, sin = tables["local" if self._local(i) else "global"]
            attn_out, k, v = self._attention(layer, layer.input_layernorm(hidden), cos, sin, masks[i], past_k, past_v)
            if self.spec.sandwich_norms:
                attn_out = layer.post_attention_layernorm(attn_out)
            hidden = hidden + attn_out
            mlp_out = layer.mlp(self._pre_mlp_norm(layer)(hidden))
            if self.spec.sandwich_norms:
                mlp_out = layer.post_feedforward_layernorm(mlp_out)
            hidden = hidden + mlp_out
            presents += [k, v]
        return hidden, presents

    def _projections(self, attn, x):
        """Q, K, V as [B, S, heads * D], from three Linears or one packed one (Phi-3)."""
        if self.spec.packed_qkv is None:
            return attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)
        q_size, kv_size = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        return getattr(attn, self.spec.packed_qkv)(x).split([q_size, kv_size, kv_size], dim=-1)

    def _attention(self, layer, x, cos, sin, mask, past_k, past_v):
        attn = layer.self_attn
        b, s, _ = x.shape
        h, hk, d = self.num_heads, self.num_kv_heads, self.head_dim
        q, k, v = self._projections(attn, x)
        q, k, v = q.reshape(b, s, h, d), k.reshape(b, s, hk, d), v.reshape(b, s, hk, d)
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
        half = self.head_dim // 2  # cos, sin are cat(freqs, freqs): keep one half
        tables = {kind: (cos[..., :half], sin[..., :half])
                  for kind, (cos, sin) in self._rotary_tables(hidden, position_ids).items()}
        masks = self._layer_masks(attention_mask, position_ids)
        presents = []
        for i, (layer, (past_k, past_v)) in enumerate(zip(self.layers, past)):
            cos, sin = tables["local" if self._local(i) else "global"]
            x = rms_norm(layer.input_layernorm, hidden, True, self.spec)
            attn_out, k, v = self._attention_fused(layer, x, cos, sin, masks[i], past_k, past_v)
            if self.spec.sandwich_norms:
                attn_out = rms_norm(layer.post_attention_layernorm, attn_out, True, self.spec)
            hidden = hidden + attn_out
            mlp_out = layer.mlp(rms_norm(self._pre_mlp_norm(layer), hidden, True, self.spec))
            if self.spec.sandwich_norms:
                mlp_out = rms_norm(layer.post_feedforward_layernorm, mlp_out, True, self.spec)
            hidden = hidden + mlp_out
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
        v = v.reshape(b, s, hk, d)
        keys = torch.cat([past_k, k], dim=1).reshape(b, -1, hk * d)
        values = torch.cat([past_v, v], dim=1).reshape(b, -1, hk * d)
        out = onnx_ops.attention(q, keys, values, mask, q_num_heads=h, kv_num_heads=hk, scale=attn.scaling)[0]
        return attn.o_proj(out), k, v

    def _packed_qkv(self, attn, x):
        """Q, K, V as [B, S, heads * D]; Q and K normalised per head first where the family does (Qwen3, Gemma 3)."""
        b, s, _ = x.shape
        h, hk, d = self.num_heads, self.num_kv_heads, self.head_dim
        q, k, v = self._projections(attn, x)
        if self.spec.qk_norm:
            q = rms_norm(attn.q_norm, q.reshape(b, s, h, d), True, self.spec).reshape(b, s, h * d)
            k = rms_norm(attn.k_norm, k.reshape(b, s, hk, d), True, self.spec).reshape(b, s, hk * d)
        return q, k, v

    def _prepare_gqa(self, cfg):
        """Packed projections (one MatMul for Q/K/V, one for gate/up) and the rotary tables GQA reads."""
        spec = self.spec
        if not spec.qk_norm:  # Qwen3 and Gemma 3 normalise q and k apart: keep them apart
            self.qkv = nn.ModuleList(
                getattr(l.self_attn, spec.packed_qkv) if spec.packed_qkv
                else _packed_linear([l.self_attn.q_proj, l.self_attn.k_proj, l.self_attn.v_proj])
                for l in self.layers)
        self.gate_up = nn.ModuleList(getattr(l.mlp, spec.packed_gate_up) if spec.packed_gate_up
                                     else _packed_linear([l.mlp.gate_proj, l.mlp.up_proj]) for l in self.layers)
        half = self.head_dim // 2
        rotaries = {"global": self.rotary}
        if any(self._local(i) for i in range(len(self.layers))):
            rotaries["local"] = self.local_rotary
        with torch.no_grad():
            positions = torch.arange(cfg.max_position_embeddings)[None]
            for kind, rotary in rotaries.items():
                cos, sin = rotary(torch.zeros(1, dtype=torch.float32), positions)
                self.register_buffer(f"cos_{kind}", cos[0, :, :half].contiguous(), persistent=False)
                self.register_buffer(f"sin_{kind}", sin[0, :, :half].contiguous(), persistent=False)

    def _forward_gqa(self, hidden, attention_mask, past):
        """Per layer: GroupQueryAttention, then SkipSimplifiedLayerNormalization (residual add +
        the next RMSNorm in one op) around a packed gate/up MLP."""
        spec = self.spec
        b, s, _ = hidden.shape
        # Padded: one zero query row after the window (see PADDED_QUERY_ROWS); its K/V land one
        # past the window, where the runtime keeps room and the next call overwrites them.
        pad = self.padded_rows
        total = attention_mask.shape[-1] + pad
        seqlens_k = torch.full((b,), total - 1, dtype=torch.int32)  # per row: valid length - 1
        total_length = torch.full((), total, dtype=torch.int32)
        presents = []
        x = rms_norm(self.layers[0].input_layernorm, hidden, True, spec)
        for i, (layer, (past_k, past_v)) in enumerate(zip(self.layers, past)):
            attn = layer.self_attn
            qkv = self._packed_qkv(attn, x) if spec.qk_norm else (self.qkv[i](x), None, None)
            kind = "local" if self._local(i) else "global"
            attributes = {"num_heads": self.num_heads, "kv_num_heads": self.num_kv_heads,
                          "scale": float(attn.scaling), "do_rotary": 1, "rotary_interleaved": 0}
            if self.windows[i] is not None:
                attributes["local_window_size"] = self.windows[i]  # ONNX Runtime counts the query itself in it
            if pad:
                qkv = [None if t is None else F.pad(t, (0, 0, 0, pad)) for t in qkv]
            out, k, v = onnx_ops.symbolic_multi_out(
                "com.microsoft::GroupQueryAttention",
                [*qkv, past_k, past_v, seqlens_k, total_length, getattr(self, f"cos_{kind}"),
                 getattr(self, f"sin_{kind}")],
                attributes,
                dtypes=(hidden.dtype, past_k.dtype, past_v.dtype),
                shapes=((b, s + pad, self.num_heads * self.head_dim), past_k.shape, past_v.shape),
                version=1,
            )
            if pad:
                out = out[:, :s]
            presents += [k, v]
            attn_out = attn.o_proj(out)
            if spec.sandwich_norms:
                attn_out = rms_norm(layer.post_attention_layernorm, attn_out, True, spec)
            x, hidden = _skip_rms_norm(self._pre_mlp_norm(layer), attn_out, hidden, spec)
            gate, up = self.gate_up[i](x).chunk(2, dim=-1)
            mlp_out = layer.mlp.down_proj(getattr(layer.mlp, spec.activation)(gate) * up)
            if spec.sandwich_norms:
                mlp_out = rms_norm(layer.post_feedforward_layernorm, mlp_out, True, spec)
            if i + 1 < len(self.layers):
                x, hidden = _skip_rms_norm(self.layers[i + 1].input_layernorm, mlp_out, hidden, spec)
            else:
                hidden = hidden + mlp_out
        return hidden, presents


def _skip_rms_norm(norm: nn.Module, x, residual, spec: ArchSpec):
    """(RMSNorm(residual + x), residual + x) as one com.microsoft SkipSimplifiedLayerNormalization."""
    stats = (*x.shape[:-1], 1)
    normed, _, _, total = onnx_ops.symbolic_multi_out(
        "com.microsoft::SkipSimplifiedLayerNormalization", [x, residual, norm_weight(norm, spec)],
        {"epsilon": float(norm_eps(norm))},
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

    def __init__(self, hf_model, spec: ArchSpec):
        super().__init__()
        self.norm = hf_model.model.norm
        self.lm_head = hf_model.lm_head
        self.spec = spec

    def forward(self, hidden):
        return self.lm_head(rms_norm(self.norm, hidden, self.fused, self.spec))

    def target_ids(self, rows):
        """Row indices of the head's logits -> target ids (the same, for the whole head)."""
        return rows
