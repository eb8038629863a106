"""The target run in large batches for the data engine: it writes continuations, then labels them.

HF's ``generate`` re-reads a growing cache through its generic attention and spends most of a
step in Python at the batch sizes that make a CPU efficient. This is the gpt-fast shape
instead: the K/V cache is allocated once for the whole batch ([layers, batch, kv_heads,
capacity, head_dim]), positions are explicit, each step appends one slot for every row and
attends over the filled slots only. Prompts are left-padded so that every row writes the same
slot; rotary attention depends only on relative positions, so a row's shifted positions give
it the same continuation. Finished rows are dropped from the batch (the cache is compacted) so
that long answers do not keep short ones' rows busy.

It runs the target's own weights (fused into one Q/K/V and one gate/up matrix per layer) in
``dtype``. Generation uses bfloat16 where the CPU has native bf16 matrix units (AMX,
AVX-512-BF16), about 3x fp32's speed there: the text only has to be the target's kind of text.
The labels the draft learns from (``label``) come from a float32 instance, teacher-forced over
whole continuations at once; a prompt shared by several continuations is run once, and its
cache is copied to each. Only the kept Top-k of each position's distribution leaves the head,
which is run in chunks, so no [batch, length, vocabulary] tensor is ever built.
"""


import torch
import torch.nn.functional as F

from ..export.architectures import arch_spec
from ..export.decoder import norm_eps, rotate_half

SAMPLE_CANDIDATES = 64  # sampled tokens come from the nucleus within these


def fast_dtype() -> torch.dtype:
    """bfloat16 where this CPU multiplies it natively (AMX / AVX-512-BF16) or on a GPU, else float32."""
    capability = torch.backends.cpu.get_cpu_capability()
    flags = _cpu_flags()
    if "amx_bf16" in flags or "avx512_bf16" in flags or capability == "AVX512_BF16":
        return torch.bfloat16
    return torch.float32


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


class BatchedTarget:
    """The target's own weights over many sequences at once: ``generate`` and ``label``."""

    def __init__(self, model, dtype: torch.dtype | None = None, device=None):
        cfg = model.config
        self.spec = arch_spec(cfg)
        self.dtype = dtype or fast_dtype()
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.num_heads, self.num_kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.rotary = model.model.rotary_emb
        cast = dict(dtype=self.dtype, device=self.device)
        self.embed = model.model.embed_tokens.weight.detach().to(**cast)
        self.head = model.lm_head.weight.detach().to(**cast)
        self.final_norm = (model.model.norm.weight.detach().to(**cast), norm_eps(model.model.norm))
        self.layers = []
        for layer in model.model.layers:
            attn, mlp = layer.self_attn, layer.mlp
            projections = (attn.q_proj, attn.k_proj, attn.v_proj)
            bias = (torch.cat([p.bias.detach() for p in projections]).to(**cast)
                    if attn.q_proj.bias is not None else None)
            self.layers.append({
                "qkv": torch.cat([p.weight.detach() for p in projections]).to(**cast), "qkv_bias": bias,
                "o": attn.o_proj.weight.detach().to(**cast),
                "gate_up": torch.cat([mlp.gate_proj.weight.detach(), mlp.up_proj.weight.detach()]).to(**cast),
                "down": mlp.down_proj.weight.detach().to(**cast),
                "norm1": (layer.input_layernorm.weight.detach().to(**cast), norm_eps(layer.input_layernorm)),
                "norm2": (layer.post_attention_layernorm.weight.detach().to(**cast),
                          norm_eps(layer.post_attention_layernorm)),
                "q_norm": (attn.q_norm.weight.detach().to(**cast), norm_eps(attn.q_norm)) if self.spec.qk_norm else None,
                "k_norm": (attn.k_norm.weight.detach().to(**cast), norm_eps(attn.k_norm)) if self.spec.qk_norm else None,
            })
        self.scale = getattr(model.model.layers[0].self_attn, "scaling", self.head_dim ** -0.5)

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], temperatures: list[float], max_new_tokens: int, eos: set[int],
                 top_k: int, top_p: float = 0.95, exit_layer: int | None = None,
                 generator: torch.Generator | None = None) -> list[dict[str, torch.Tensor]]:
        """Continue every prompt (up to an eos token or ``max_new_tokens``), greedily where its
        temperature is 0, else sampling from the nucleus ``top_p``, and keep what the
        target said at each new position: ``tokens`` [n], the Top-``top_k`` ``ids`` and ``logprobs``
        [n, k] of the distribution each token was chosen from and, with ``exit_layer``, the hidden
        state after that many layers where it was predicted (``exit_hidden`` [n, hidden], float16).
        A prompt listed several times is run once; its copies then sample their own tokens."""
        unique, copy_of = _unique(prompts)
        width = max(len(p) for p in unique)
        capacity = width + max_new_tokens
        keys, values, valid = self._cache(unique, capacity)
        hidden, exits = self._forward(_left_padded(unique, width), 0, valid[:, :width], keys, values, exit_layer)
        rows = torch.tensor(copy_of)
        keys, values, valid, hidden = keys[:, rows], values[:, rows], valid[rows], hidden[rows, -1]
        exits = exits[rows, -1] if exit_layer is not None else None
        rows = torch.arange(len(prompts))  # batch row -> prompt index (rows leave when they finish)
        temperature = torch.tensor(temperatures, dtype=torch.float32)
        alive = torch.ones(len(prompts), dtype=torch.bool)  # per batch row: still generating
        steps: list[list[tuple]] = [[] for _ in prompts]
        eos_ids = torch.tensor(sorted(eos), dtype=torch.long)
        for slot in range(width, capacity):
            logits = self._logits(hidden)
            top, ids = logits.topk(max(top_k, SAMPLE_CANDIDATES), dim=-1)  # one sort serves labels and sampling
            top = (top - torch.logsumexp(logits, dim=-1, keepdim=True)).cpu()  # log-probs
            ids = ids.cpu()
            token = _pick(top, ids, temperature[rows], top_p, generator)
            top_lp, top_ids = top[:, :top_k], ids[:, :top_k]
            exit_rows = exits.to("cpu", torch.float16) if exits is not None else None
            for j in alive.nonzero().flatten().tolist():
                steps[int(rows[j])].append((token[j], top_ids[j], top_lp[j], exit_rows[j] if exit_rows is not None else None))
            alive &= ~torch.isin(token, eos_ids)
            if slot + 1 == capacity or not bool(alive.any()):
                break
            valid[:, slot] = True
            if (~alive).float().mean() >= 0.25:  # compact: drop the finished rows and their cache
                keep = alive.nonzero().flatten()
                keys, values = keys[:, keep.to(self.device)], values[:, keep.to(self.device)]
                rows, token, valid, alive = rows[keep], token[keep], valid[keep], alive[keep]
            hidden, exits = self._forward(token[:, None], slot, valid[:, :slot + 1], keys, values, exit_layer)
            hidden, exits = hidden[:, -1], (exits[:, -1] if exits is not None else None)
        return [_stack(s) for s in steps]

    @torch.no_grad()
    def label(self, prompts: list[list[int]], continuations: list[list[int]], top_k: int,
              exit_layer: int | None = None) -> list[dict[str, torch.Tensor]]:
        """Teacher-forced labels for ``continuations[i]`` after ``prompts[i]``: per continuation token
        the Top-``top_k`` ids and log-probs of the target's next-token distribution that predicted it
        (``ids``, ``logprobs``: [len, k]) and, with ``exit_layer``, the hidden state after that many
        layers at the same positions (``exit_hidden``: [len, hidden], the prefix's output there)."""
        unique, copy_of = _unique(prompts)
        width = max(len(p) for p in unique)
        span = max(len(c) for c in continuations)
        keys, values, valid = self._cache(unique, width + span)
        last, exits = self._forward(_left_padded(unique, width), 0, valid[:, :width], keys, values, exit_layer)
        rows = torch.tensor(copy_of)
        keys, values, valid = keys[:, rows], values[:, rows], valid[rows]
        # Continuation j is predicted from position width - 1 + j: the prompt's last one, then its own.
        feed = torch.zeros(len(continuations), max(span - 1, 1), dtype=torch.long)
        for r, c in enumerate(continuations):
            feed[r, :len(c) - 1] = torch.tensor(c[:-1])
            valid[r, width:width + len(c) - 1] = True
        hidden, feed_exits = self._forward(feed, width, valid[:, :width + feed.shape[1]], keys,
                                           values, exit_layer)
        hidden = torch.cat([last[rows, -1:], hidden], dim=1)
        if exit_layer is not None:
            exits = torch.cat([exits[rows, -1:], feed_exits], dim=1)
        out = []
        for r, c in enumerate(continuations):
            logprobs = torch.log_softmax(self._logits(hidden[r, :len(c)]), dim=-1)
            top_lp, top_ids = logprobs.topk(top_k, dim=-1)
            item = {"ids": top_ids.cpu(), "logprobs": top_lp.cpu()}
            if exit_layer is not None:
                item["exit_hidden"] = exits[r, :len(c)].cpu()
            out.append(item)
        return out

    def _cache(self, prompts: list[list[int]], capacity: int):
        """Zeroed K/V buffers for ``capacity`` slots and the key mask with the left-padded prompts' slots."""
        width = max(len(p) for p in prompts)
        keys = (len(self.layers), len(prompts), self.num_kv_heads, self.head_dim, capacity)  # transposed
        values = (len(self.layers), len(prompts), self.num_kv_heads, capacity, self.head_dim)
        valid = torch.zeros(len(prompts), capacity, dtype=torch.bool, device=self.device)
        for r, p in enumerate(prompts):
            valid[r, width - len(p):width] = True
        return (torch.zeros(keys, dtype=torch.float32, device=self.device),
                torch.zeros(values, dtype=torch.float32, device=self.device), valid)

    def _logits(self, hidden) -> torch.Tensor:
        """Float32 next-token logits of final hidden states (the final norm, then the head)."""
        return F.linear(_rms(hidden, self.final_norm), self.head).float()

    def _attention(self, q, keys_t, values, mask):
        """Grouped-query attention as two batched matmuls: the query heads of one K/V head are
        stacked as rows, and the keys are cached transposed ([.., head_dim, slots]), so neither
        matmul copies the cache (a decode step is bound by reading it)."""
        batch, h, seq, d = q.shape
        hk = self.num_kv_heads
        rows = q.reshape(batch, hk, (h // hk) * seq, d).float()
        scores = torch.baddbmm(mask.expand(batch, hk, -1, -1).reshape(batch * hk, rows.shape[2], -1),
                               rows.reshape(batch * hk, -1, d), keys_t.reshape(batch * hk, d, -1), alpha=self.scale)
        out = torch.bmm(scores.softmax(-1), values.reshape(batch * hk, -1, d))  # [B*hk, g*S, D]
        return out.view(batch, hk, h // hk, seq, d).permute(0, 3, 1, 2, 4).reshape(batch, seq, h * d).to(self.dtype)

    def _forward(self, ids, start: int, valid, keys, values, exit_layer: int | None = None):
        """New positions ``start ..`` of every row on top of the cached ones: the hidden states
        after the last layer and (with ``exit_layer``) after that many layers."""
        batch, seq = ids.shape
        total = start + seq
        x = F.embedding(ids.to(self.device), self.embed)
        positions = torch.arange(start, total, device=self.device)[None]
        cos, sin = self.rotary(x, positions)
        cos, sin = cos[:, None].to(self.dtype), sin[:, None].to(self.dtype)  # [1, 1, S, D]
        causal = torch.ones(seq, total, dtype=torch.bool, device=self.device).tril(start)
        allowed = valid[:, None, None, :] & causal[None, None]
        allowed |= ~allowed.any(-1, keepdim=True)  # a padding query sees everything (its output is unused)
        mask = torch.zeros(allowed.shape, dtype=torch.float32, device=self.device).masked_fill_(~allowed, -1e9)
        mask = mask[:, :, None].expand(batch, 1, self.num_heads // self.num_kv_heads, seq, total).reshape(batch, 1, -1, total)
        h, hk, d = self.num_heads, self.num_kv_heads, self.head_dim
        exit_hidden = None
        for i, w in enumerate(self.layers):
            if i == exit_layer:
                exit_hidden = x
            y = _rms(x, w["norm1"])
            qkv = F.linear(y, w["qkv"], w["qkv_bias"])
            q, k, v = qkv.split([h * d, hk * d, hk * d], dim=-1)
            q, k = q.view(batch, seq, h, d), k.view(batch, seq, hk, d)
            if w["q_norm"] is not None:
                q, k = _rms(q, w["q_norm"]), _rms(k, w["k_norm"])
            q, k = q.transpose(1, 2), k.transpose(1, 2)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            keys[i, :, :, :, start:total] = k.transpose(2, 3)
            values[i, :, :, start:total] = v.view(batch, seq, hk, d).transpose(1, 2)
            o = self._attention(q, keys[i, :, :, :, :total], values[i, :, :, :total], mask)
            x = x + F.linear(o, w["o"])
            gate, up = F.linear(_rms(x, w["norm2"]), w["gate_up"]).chunk(2, dim=-1)
            x = x + F.linear(F.silu(gate) * up, w["down"])
        return x, exit_hidden


def _stack(steps: list[tuple]) -> dict[str, torch.Tensor]:
    tokens, ids, logprobs, exits = zip(*steps)
    out = {"tokens": torch.stack(tokens), "ids": torch.stack(ids), "logprobs": torch.stack(logprobs)}
    if exits[0] is not None:
        out["exit_hidden"] = torch.stack(exits)
    return out


def _unique(prompts: list[list[int]]) -> tuple[list[list[int]], list[int]]:
    """The distinct prompts, and for each prompt the index of its distinct copy."""
    index: dict[tuple, int] = {}
    copy_of = [index.setdefault(tuple(p), len(index)) for p in prompts]
    return [list(p) for p in index], copy_of


def _left_padded(prompts: list[list[int]], width: int) -> torch.Tensor:
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    for r, p in enumerate(prompts):
        ids[r, width - len(p):] = torch.tensor(p)
    return ids


def _rms(x, weight_eps):
    weight, eps = weight_eps
    return F.rms_norm(x, (x.shape[-1],), weight, eps)


def _pick(top: torch.Tensor, ids: torch.Tensor, temperature: torch.Tensor, top_p: float, generator) -> torch.Tensor:
    """Per row: the argmax where the temperature is 0, else a draw from the nucleus ``top_p``
    within the ``SAMPLE_CANDIDATES`` most likely tokens (``top``: their log-probs, best first;
    a full-vocabulary sort per step would cost more than the model)."""
    top, ids = top[:, :SAMPLE_CANDIDATES], ids[:, :SAMPLE_CANDIDATES]
    probs = torch.softmax(top / temperature.clamp_min(1e-6)[:, None], dim=-1)
    probs = probs.masked_fill(probs.cumsum(-1) - probs >= top_p, 0.0)
    choice = torch.multinomial(probs, 1, generator=generator).flatten()
    return torch.where(temperature > 0, ids.gather(1, choice[:, None]).flatten(), ids[:, 0])
