"""One ONNX Runtime session per graph, with I/O binding into preallocated buffers."""

import numpy as np
import onnxruntime as ort

from ..bundle import GraphSpec
from ..errors import MirrorError
from .kv_cache import KVCache
from .masks import MASKED

# A BSND-shared graph attends over the W positions bound (the positions past the sequence masked):
# W grows in steps of this many, so that a decoding step rarely rebinds and rarely reads far past
# the sequence; it shrinks again when a sequence restarts shorter.
WIDTH_STEP = 32
STAGED_SIZE = 64  # per-call inputs up to this many elements are staged (GraphSession._staged)
_NUMPY = {"float32": np.float32, "float16": np.float16, "int64": np.int64, "int32": np.int32}


class GraphSession:
    """Runs one bundle graph over new positions of one sequence (batch 1).

    ``run`` binds the cache's first ``past`` positions as the past K/V, binds the
    present K/V outputs to the positions right after, and the other outputs to
    reusable buffers. The target's graphs write in place instead, the same memory bound as
    past and present: a BSND-shared graph gets the first W positions of each buffer, W
    rebound only when the sequence outgrows it (``WIDTH_STEP``), a BNSH-shared graph the
    whole buffer once. The caller decides what the new length is (``cache.length``): a
    window can be scored, then partly kept.

    A static-shape graph (``spec.static``, exported with ``--static`` for NPUs) takes a fixed
    window W over the whole K/V capacity C: ``run`` pads to W (or goes in chunks of W), and its
    cache capacity is C whatever the caller asks (see ``_run_static``).
    """

    def __init__(self, spec: GraphSpec, session: ort.InferenceSession, capacity: int, cache: KVCache | None = None):
        self.spec = spec
        self.session = session
        _check_io(spec, session)
        self.static = spec.static
        capacity = self.static["capacity"] if self.static else capacity
        # A static graph writes all W present rows: the buffer has room for a padded window at C.
        rows = capacity + (self.static["seq"] if self.static else 0)
        # ``cache``: memory another session shares (the fused target's halves, runtime/fused.py)
        self.cache = cache or KVCache(spec.layers[1] - spec.layers[0], rows, spec.num_kv_heads, spec.head_dim,
                                      spec.kv_layout)
        self.in_place = spec.kv_layout in ("BNSH-shared", "BSND-shared")
        # GroupQueryAttention (BNSH-shared) is causal by itself and reads only the mask's width
        self.mask_width_only = spec.kv_layout == "BNSH-shared"
        self._bound_width = 0
        self._static_inputs: dict[str, np.ndarray] | None = None
        self._provider = _provider(session)
        self.binding = session.io_binding()
        self.first_input = spec.name(spec.first_input)  # input_ids, or hidden for the suffix
        self.kv_slots = spec.kv_slots  # built once: the draft's run binds them on every call
        presents = {present for *_, present in self.kv_slots}
        self._outputs = {v.name: v for v in spec.outputs if v.name not in presents}
        self._inputs = {k: spec.name(k) for k in RUNTIME_INPUTS}
        self._buffers: dict[str, np.ndarray] = {}
        self._stage: dict[str, np.ndarray] = {}  # see _staged
        self._bound: dict[str, tuple] = {}  # name -> (address, shape, dtype) bound (in-place graphs)
        self._all_rows = np.arange(capacity, dtype=np.int64)

    @property
    def capacity(self) -> int:
        """Positions the cache can hold: the buffer's, or a static graph's fixed C (its buffer
        has W more rows, for the padding rows a window at the end writes)."""
        return self.static["capacity"] if self.static else self.cache.capacity

    @property
    def provider(self) -> str:
        """The EP that runs the graph, from ONNX Runtime's record of which EP took which node;
        ``A+B`` when nodes were split (``--allow-cpu-fallback``)."""
        return self._provider

    def run(self, first, position_ids: np.ndarray, attention_mask: np.ndarray, head_rows: np.ndarray | None = None,
            past: int | None = None, outputs: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
        """Score ``seq`` new positions on top of ``past`` cached ones (default: all of them),
        with the head on ``head_rows`` of them (default: all).

        ``outputs`` and the returned keys are the manifest's logical names (``GraphSpec.names``).
        Returns views of reusable buffers: copy what must outlive the next call.
        """
        names = {self.spec.name(o): o for o in outputs}
        result = self._run(first, position_ids, attention_mask, head_rows, past, tuple(names))
        return {names[name]: value for name, value in result.items()}

    def _run(self, first, position_ids, attention_mask, head_rows, past, outputs) -> dict[str, np.ndarray]:
        seq = position_ids.shape[1]
        rows = self._all_rows[:seq] if head_rows is None else head_rows
        past = self.cache.length if past is None else past
        if past + seq > self.capacity:
            fix = ("re-export with a larger --static-capacity" if self.static else "raise --max-length")
            raise MirrorError(f"sequence of {past + seq} positions exceeds the cache capacity {self.capacity}: {fix}")
        if self.static:
            return self._run_static(first, position_ids, attention_mask, head_rows, past, outputs)
        if self.in_place:
            return self._run_in_place(first, position_ids, attention_mask, rows, past, outputs)
        self.binding.clear_binding_outputs()  # bind exactly this call's outputs
        self._bind_window(first, position_ids, attention_mask, rows)
        for layer, kind, past_name, present_name in self.kv_slots:
            self._bind_input(past_name, self.cache.rows(layer, kind, 0, past))
            self._bind_output(present_name, self.cache.rows(layer, kind, past, past + seq))
        result = {name: self._bind_output(name, self._output_buffer(name, len(rows), seq)) for name in outputs}
        self.session.run_with_iobinding(self.binding)
        self.cache.length = past + seq
        return result

    def _run_in_place(self, first, position_ids, attention_mask, rows, past: int, outputs) -> dict[str, np.ndarray]:
        """A graph that writes the cache in place: the cache is bound as past and present at once
        (rebound only when its width changes); per call only the window's inputs and the small
        outputs are bound."""
        seq = position_ids.shape[1]
        if attention_mask.shape[-1] != past + seq:
            raise ValueError(f"{self.spec.role}: a mask over {attention_mask.shape[-1]} positions for {past} + {seq}")
        self._bind_cache(past + seq)
        for name, array in self._window(first, position_ids, attention_mask, rows):
            self._bind_in_place(name, self._staged(name, array))
        # every output bound: none is allocated per call
        result = {name: self._bind_in_place(name, self._output_buffer(name, len(rows), seq), output=True)
                  for name in self._outputs}
        self.session.run_with_iobinding(self.binding)
        self.cache.length = past + seq
        return {name: result[name] for name in outputs}

    def _staged(self, name: str, array: np.ndarray) -> np.ndarray:
        """A small per-call input (a token's id, position, head row) copied into a buffer of its
        own: the same memory every call, so it stays bound while its shape does."""
        if array.size > STAGED_SIZE:
            return array
        buf = self._stage.get(name)
        if buf is None or buf.dtype != array.dtype:
            buf = self._stage[name] = np.empty(STAGED_SIZE, dtype=array.dtype)
        view = buf[:array.size].reshape(array.shape)
        view[...] = array
        return view

    def _bind_in_place(self, name: str, array: np.ndarray, output: bool = False) -> np.ndarray:
        """Bind ``array`` unless that very memory and shape is bound to ``name`` already: a bind is
        a Python-to-C++ call that costs more than a decode step's own Python."""
        key = (array.ctypes.data, array.shape, array.dtype)
        if self._bound.get(name) != key:
            (self._bind_output if output else self._bind_input)(name, array)
            self._bound[name] = key
        return array

    def _bind_cache(self, total: int) -> None:
        """Bind the cache where a window ending at ``total`` positions reads and writes it: BNSH-shared,
        each buffer whole, once; BSND-shared, each buffer's first W >= ``total`` positions."""
        if self.mask_width_only:
            width = self.capacity
        elif self._bound_width < total or self._bound_width >= total + 2 * WIDTH_STEP:
            width = min(self.capacity, -(-total // WIDTH_STEP) * WIDTH_STEP)
        else:
            width = self._bound_width
        if width == self._bound_width:
            return
        for layer, kind, past_name, present_name in self.kv_slots:
            view = self.cache.whole(layer, kind) if self.mask_width_only else self.cache.first(layer, kind, width)
            self._bind_input(past_name, view)
            self._bind_output(present_name, view)
        self._bound_width = width

    def _run_static(self, first, position_ids, attention_mask, head_rows, past: int, outputs) -> dict[str, np.ndarray]:
        """Run S new positions through a graph fixed at W new positions on a C-row cache.

        Chunk k (rows [kW, kW + s) of the S, s <= W) starts at ``base = past + kW``:
        * inputs padded to W (ids 0, positions repeat the chunk's last one), and the chunk's
          share of ``head_rows`` (default: all S rows) padded to W with row 0;
        * past = the whole cache [0, C); mask cache columns [0, base) keep their index, the
          chunk's own columns move to C + r, everything else is masked. Padding rows see only
          themselves, so no softmax row is all-masked (which is NaN where -1e9 becomes -inf in
          fp16, as on an NPU);
        * presents go to cache rows [base, base + W): the real rows land where the dynamic
          graph would put them; the padding rows after them are beyond ``cache.length``.
        Every non-present output of a static graph is a head output, one row per head row:
        [1, len(head_rows), ...], a view of a reusable buffer when one chunk holds them all.
        """
        w, c = self.static["seq"], self.static["capacity"]
        seq = position_ids.shape[1]
        wanted = np.arange(seq, dtype=np.int64) if head_rows is None else np.asarray(head_rows, dtype=np.int64)
        inputs = self._static_inputs
        if inputs is None or inputs["first"].dtype != first.dtype:
            inputs = self._bind_static_inputs(first)
        ids, pos, mask, rows = (inputs[k] for k in ("first", *RUNTIME_INPUTS))
        b = self.binding
        pad = np.arange(w)
        result: dict[str, np.ndarray] = {}
        for k0 in range(0, seq, w):
            s = min(w, seq - k0)
            base = past + k0
            ids[:, :s] = first[:, k0:k0 + s]
            ids[:, s:] = 0
            pos[:, :s] = position_ids[:, k0:k0 + s]
            pos[:, s:] = position_ids[:, k0 + s - 1]
            mask.fill(MASKED)
            mask[0, 0, :s, :base] = attention_mask[0, 0, k0:k0 + s, :base]
            mask[0, 0, :s, c:c + s] = attention_mask[0, 0, k0:k0 + s, base:base + s]
            mask[0, 0, pad[s:], c + pad[s:]] = 0.0
            here = np.flatnonzero((wanted >= k0) & (wanted < k0 + s))  # indices into head_rows
            if len(here) > w:
                raise MirrorError(f"{len(here)} head rows in one window of the static {self.spec.role} graph, "
                                  f"which has {w}: re-export with a larger --static-seq")
            rows[:len(here)] = wanted[here] - k0
            rows[len(here):] = 0
            b.clear_binding_outputs()
            for layer, kind, _, present_name in self.kv_slots:
                self._bind_output(present_name, self.cache.rows(layer, kind, base, base + w))
            buffers = {name: self._bind_output(name, self._buffer(name, w)) for name in outputs}
            self.session.run_with_iobinding(b)
            if k0 + s == seq and len(here) == len(wanted) and np.all(here == np.arange(len(here))):
                result = {name: buf[:, :len(here)] for name, buf in buffers.items()}  # all in the last chunk
                break
            for name, buf in buffers.items():
                if name not in result:
                    result[name] = np.empty((1, len(wanted)) + buf.shape[2:], dtype=buf.dtype)
                result[name][:, here] = buf[:, :len(here)]
        self.cache.length = past + seq
        return result

    def _bind_static_inputs(self, first: np.ndarray) -> dict[str, np.ndarray]:
        """Fixed-shape input buffers and the whole-capacity past, bound once: runs refill them."""
        w, c = self.static["seq"], self.static["capacity"]
        inputs = {"first": np.zeros((1, w) + first.shape[2:], dtype=first.dtype),
                  "position_ids": np.zeros((1, w), dtype=np.int64),
                  "attention_mask": np.zeros((1, 1, w, c + w), dtype=np.float32),
                  "head_rows": np.zeros(w, dtype=np.int64)}
        self._bind_input(self.first_input, inputs["first"])
        for logical in RUNTIME_INPUTS:
            self._bind_input(self._inputs[logical], inputs[logical])
        for layer, kind, past_name, _ in self.kv_slots:
            self._bind_input(past_name, self.cache.rows(layer, kind, 0, c))
        self._static_inputs = inputs
        return inputs

    def static_feeds(self) -> dict[str, np.ndarray]:
        """Copies of what a static graph's next run reads, by input name (QDQ calibration data)."""
        inputs, c = self._static_inputs, self.static["capacity"]
        feeds = {self.first_input: inputs["first"].copy(), **{self._inputs[k]: inputs[k].copy() for k in RUNTIME_INPUTS}}
        for layer, kind, past_name, _ in self.kv_slots:
            feeds[past_name] = self.cache.rows(layer, kind, 0, c).copy()
        return feeds

    def _window(self, first, position_ids, attention_mask, rows):
        """A dynamic graph's per-call inputs by their graph names: the new positions and the head rows."""
        return zip((self.first_input, *self._inputs.values()), (first, position_ids, attention_mask, rows))

    def _bind_window(self, first, position_ids, attention_mask, rows) -> None:
        for name, array in self._window(first, position_ids, attention_mask, rows):
            self._bind_input(name, array)

    def _bind_input(self, name: str, array: np.ndarray) -> None:
        self.binding.bind_input(name, "cpu", 0, array.dtype, array.shape, array.ctypes.data)

    def _bind_output(self, name: str, array: np.ndarray) -> np.ndarray:
        """Bind ``array`` (a contiguous buffer or view) as where ``name`` is written; returns it."""
        self.binding.bind_output(name, "cpu", 0, array.dtype, array.shape, array.ctypes.data)
        return array

    def _output_buffer(self, name: str, rows: int, seq: int) -> np.ndarray:
        """The buffer for a dynamic graph's output: one row per head row or per new position."""
        return self._buffer(name, rows if self._outputs[name].shape[1] == "rows" else seq)

    def _buffer(self, name: str, seq: int) -> np.ndarray:
        """A [1, seq, ...] view of a buffer that grows to the longest window seen."""
        spec = self._outputs[name]
        tail = list(spec.shape[2:])
        buf = self._buffers.get(name)
        if buf is None or buf.shape[1] < seq:
            buf = np.empty([1, max(seq, 8)] + tail, dtype=_NUMPY[spec.dtype])
            self._buffers[name] = buf
        return buf[:, :seq]


def _provider(session: ort.InferenceSession) -> str:
    """The EPs that took the graph's nodes, in the session's order of preference."""
    try:
        took = {subgraph.ep_name for subgraph in session.get_provider_graph_assignment_info()
                if subgraph.get_nodes()}
    except Exception:  # a session made without session.record_ep_graph_assignment_info
        took = set()
    names = [name for name in session.get_providers() if name in took]
    return "+".join(names) if names else session.get_providers()[0]


RUNTIME_INPUTS = ("position_ids", "attention_mask", "head_rows")


def _check_io(spec: GraphSpec, session: ort.InferenceSession) -> None:
    """Refuse a bundle whose manifest does not describe its graph, or that this runtime cannot drive."""
    missing = [spec.name(name) for name in RUNTIME_INPUTS if spec.name(name) not in spec.input_names]
    if missing:
        raise MirrorError(f"{spec.path.name} lacks the input {missing[0]!r} this mirror-ort needs "
                          "(exported by an older version): re-export the bundle")
    for kind, declared, actual in (("input", spec.input_names, [i.name for i in session.get_inputs()]),
                                   ("output", spec.output_names, [o.name for o in session.get_outputs()])):
        if declared != actual:
            missing = [n for n in declared if n not in actual] or [n for n in actual if n not in declared]
            raise MirrorError(
                f"{spec.path.name} does not match the manifest: {kind} {missing[0] if missing else 'order'} "
                f"differs (manifest {len(declared)} {kind}s, graph {len(actual)}): re-export the bundle"
            )
