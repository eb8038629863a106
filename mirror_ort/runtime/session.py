"""One ONNX Runtime session per graph, with I/O binding into preallocated buffers."""

import numpy as np
import onnxruntime as ort

from ..bundle import GraphSpec
from ..errors import MirrorError
from .kv_cache import KVCache

_NUMPY = {"float32": np.float32, "float16": np.float16, "int64": np.int64, "int32": np.int32}


class GraphSession:
    """Runs one bundle graph over new positions of one sequence (batch 1).

    ``run`` binds the cache's first ``past`` positions as the past K/V, binds the
    present K/V outputs to the positions right after, and the other outputs to
    reusable buffers. The caller decides what the new length is (``cache.length``):
    a window can be scored, then partly kept.
    """

    def __init__(self, spec: GraphSpec, session: ort.InferenceSession, capacity: int):
        self.spec = spec
        self.session = session
        _check_io(spec, session)
        self.cache = KVCache(spec.layers[1] - spec.layers[0], capacity, spec.num_kv_heads, spec.head_dim)
        self.binding = session.io_binding()
        self.first_input = spec.input_names[0]  # input_ids or hidden
        self._outputs = {v["name"]: v for v in spec.outputs if not v["name"].startswith("present.")}
        self._buffers: dict[str, np.ndarray] = {}

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    def run(self, first, position_ids: np.ndarray, attention_mask: np.ndarray, past: int | None = None,
            outputs: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
        """Score ``seq`` new positions on top of ``past`` cached ones (default: all of them).

        Returns views of reusable buffers: copy what must outlive the next call.
        """
        seq = position_ids.shape[1]
        past = self.cache.length if past is None else past
        if past + seq > self.cache.capacity:
            raise MirrorError(f"sequence of {past + seq} positions exceeds the cache capacity {self.cache.capacity}: raise --max-length")
        b = self.binding
        b.clear_binding_outputs()  # bind exactly this call's outputs
        self._bind_input(self.first_input, first)
        self._bind_input("position_ids", position_ids)
        self._bind_input("attention_mask", attention_mask)
        for layer, (pk, pv, nk, nv) in enumerate(self.spec.kv_names):
            for kind, (past_name, present_name) in enumerate(((pk, nk), (pv, nv))):
                self._bind_input(past_name, self.cache.rows(layer, kind, 0, past))
                present = self.cache.rows(layer, kind, past, past + seq)
                b.bind_output(present_name, "cpu", 0, np.float32, present.shape, present.ctypes.data)
        result = {}
        for name in outputs:
            buf = self._buffer(name, seq)
            b.bind_output(name, "cpu", 0, buf.dtype, buf.shape, buf.ctypes.data)
            result[name] = buf
        self.session.run_with_iobinding(b)
        self.cache.length = past + seq
        return result

    def _bind_input(self, name: str, array: np.ndarray) -> None:
        self.binding.bind_input(name, "cpu", 0, array.dtype, array.shape, array.ctypes.data)

    def _buffer(self, name: str, seq: int) -> np.ndarray:
        """A [1, seq, ...] view of a buffer that grows to the longest window seen."""
        spec = self._outputs[name]
        tail = [d for d in spec["shape"][2:]]
        buf = self._buffers.get(name)
        if buf is None or buf.shape[1] < seq:
            buf = np.empty([1, max(seq, 8)] + tail, dtype=_NUMPY[spec["dtype"]])
            self._buffers[name] = buf
        return buf[:, :seq]


def _check_io(spec: GraphSpec, session: ort.InferenceSession) -> None:
    """Refuse a bundle whose manifest does not describe its graph."""
    for kind, declared, actual in (("input", spec.input_names, [i.name for i in session.get_inputs()]),
                                   ("output", spec.output_names, [o.name for o in session.get_outputs()])):
        if declared != actual:
            missing = [n for n in declared if n not in actual] or [n for n in actual if n not in declared]
            raise MirrorError(
                f"{spec.path.name} does not match the manifest: {kind} {missing[0] if missing else 'order'} "
                f"differs (manifest {len(declared)} {kind}s, graph {len(actual)}): re-export the bundle"
            )
