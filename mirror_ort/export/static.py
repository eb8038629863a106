"""Static-shape draft graphs for NPUs (``mirror-ort export --static``).

QNN's HTP backend (and NPUs generally) compile a graph for one set of shapes. The static
draft keeps the dynamic graph's I/O names, so the runtime has one code path, with every
dimension fixed:

* ``input_ids``, ``position_ids``: [1, W], W new positions per call (the window);
* ``attention_mask``: [1, 1, W, C + W], columns [0, C) are the K/V cache, C + r is new token r;
* ``head_rows``: [W], the rows the heads run on (the runtime pads what it asks for to W);
* ``past.{i}.key|value``: [1, C, H, D], always the whole cache buffer (unused rows masked);
* ``present.{i}.key|value``: [1, W, H, D]; ``logits`` [1, W, V] and the other head outputs
  likewise (one per head row).

The runtime (``GraphSession``) pads shorter calls to W, splits longer ones (the prompt) into
chunks of W, and remaps the mask. The manifest records ``static = {"batch": 1, "seq": W,
"capacity": C}``. Batch is 1: the draft tree is laid out along the sequence axis (tree
masks), so the tree width is part of W, not of the batch.
"""

import copy
from pathlib import Path

import torch
from torch import nn

from ..errors import MirrorError
from .decoder import DecoderSpan, Head, norm_eps
from .onnx_graph import export_graph, graph_io

DEFAULT_SEQ = 16  # one draft-tree level at the default gamma 6, max_branches 8 (<= 6 + 8 nodes)
DEFAULT_CAPACITY = 512


def static_sizes(static: dict | None, max_positions: int | None = None) -> dict | None:
    """``{"seq": W, "capacity": C}`` (either may be missing) -> the manifest's checked sizes."""
    if static is None:
        return None
    unknown = sorted(set(static) - {"batch", "seq", "capacity"})
    if unknown:
        raise MirrorError(f"unknown static size {unknown[0]!r}: use seq and capacity")
    seq = int(DEFAULT_SEQ if static.get("seq") is None else static["seq"])
    capacity = int(DEFAULT_CAPACITY if static.get("capacity") is None else static["capacity"])
    if int(static.get("batch", 1)) != 1:
        raise MirrorError("--static exports batch 1 only (the draft tree lies along the sequence axis)")
    if seq < 1:
        raise MirrorError(f"--static-seq {seq} must be at least 1")
    if capacity < 2:
        raise MirrorError(f"--static-capacity {capacity} must be at least 2")
    if max_positions is not None and capacity > max_positions:
        raise MirrorError(f"--static-capacity {capacity} exceeds the model's {max_positions} positions: "
                          f"pass --static-capacity {max_positions} or less")
    return {"batch": 1, "seq": seq, "capacity": capacity}


class NpuDraft(nn.Module):
    """The draft rewritten into ops that QNN's HTP backend builds in fp32 (same I/O, same math).

    Found on the HTP emulator (graph finalisation fails with QNN_COMMON_ERROR_MEM_ALLOC,
    "could not create op"): a float Gather (the embedding lookup) inside a larger graph, and
    RMSNorm written as ``x * rsqrt(mean(x^2) + eps)``. So the lookup becomes a one-hot MatMul
    over int32 ids (W x vocab x hidden MACs per call), the ``head_rows`` selection a one-hot
    [R, W] MatMul, and RMSNorm ``x / sqrt(mean(x * x) + eps)``. It keeps the decomposed
    attention and rotary (``fused = False``, opset 20): QNN does not take the opset-23
    RMSNormalization / RotaryEmbedding / Attention ops. The module is a deep copy: the
    draft that was passed in is not changed. A reduced-vocabulary draft's id map is a plain
    Gather on the head's argmax (QNN takes no GatherND).
    """

    def __init__(self, draft: nn.Module):
        super().__init__()
        self.draft = copy.deepcopy(draft)
        self.draft.embed = OneHotEmbedding(self.draft.embed.weight)
        for module in self.draft.modules():
            if isinstance(module, (DecoderSpan, Head)):
                module.fused = False
        for parent in list(self.draft.modules()):
            for name, child in parent.named_children():
                if type(child).__name__.endswith("RMSNorm"):
                    setattr(parent, name, DivRMSNorm(child))
        self.span = self.draft.span

    def forward(self, input_ids, position_ids, attention_mask, head_rows, *past):
        d = self.draft
        hidden, presents = d.span(d.embed(input_ids.to(torch.int32)), position_ids, attention_mask,
                                  list(zip(past[0::2], past[1::2])))
        window = torch.arange(hidden.shape[1], dtype=torch.int32)
        hidden = torch.matmul((head_rows.to(torch.int32).unsqueeze(-1) == window).to(hidden.dtype), hidden)
        logits, stream_logits = d.logits(hidden)
        outputs = [logits, d.target_ids(torch.argmax(logits, dim=-1))]
        if stream_logits is not None:
            outputs += [stream_logits, d.target_ids(torch.argmax(stream_logits, dim=-1))]
        return (*outputs, *presents)


class OneHotEmbedding(nn.Module):
    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = weight
        self.register_buffer("ids", torch.arange(weight.shape[0], dtype=torch.int32), persistent=False)

    def forward(self, input_ids):
        return torch.matmul((input_ids.unsqueeze(-1) == self.ids).to(self.weight.dtype), self.weight)


class DivRMSNorm(nn.Module):
    def __init__(self, norm: nn.Module):
        super().__init__()
        self.weight = norm.weight
        self.eps = norm_eps(norm)

    def forward(self, x):
        return self.weight * (x / torch.sqrt(torch.mean(x * x, dim=-1, keepdim=True) + self.eps))


def export_static_draft(module, layers: tuple[int, int], directory: Path, static: dict, facts: dict) -> dict:
    """Export the draft with every shape fixed; returns its manifest entry."""
    w, c = static["seq"], static["capacity"]
    heads, head_dim = module.span.num_kv_heads, module.span.head_dim
    first = torch.randint(0, 100, (1, w))
    positions = torch.arange(w)[None]
    mask = torch.zeros(1, 1, w, c + w)
    head_rows = torch.arange(w)  # R = W head rows; the runtime pads the rows it wants to W
    past = tuple(torch.zeros(1, c, heads, head_dim) for _ in range(2 * (layers[1] - layers[0])))
    kv = [f"past.{i}.{t}" for i in range(*layers) for t in ("key", "value")]
    presents = [n.replace("past.", "present.") for n in kv]
    outputs = ["logits", "next_ids"] + (["stream_logits", "stream_ids"] if facts.get("streams") else [])
    path = directory / "draft.onnx"
    export_graph(NpuDraft(module), (first, positions, mask, head_rows, *past),
                 ["input_ids", "position_ids", "attention_mask", "head_rows", *kv], outputs + presents, None, path,
                 opset=20)
    return {"file": path.name, "layers": list(layers), "num_kv_heads": heads, "head_dim": head_dim,
            "kv_layout": "BSND", **graph_io(path), **facts, "static": dict(static)}
