"""Precision at export: weight-only int4/int8 (ONNX Runtime's MatMulNBits, int8 activations)
or fp16 weights.

Inputs and outputs (ids, masks, K/V, logits) stay float32/int64, so the runtime and
the bundle contract do not change with precision; only the weights do.
"""

import logging
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import MirrorError

PRECISIONS = ("fp32", "fp16", "int8", "int4")
DRAFT_PRECISIONS = PRECISIONS + ("qdq",)  # qdq: a static NPU draft, see qdq.py
BLOCK_SIZE = 32
ACCURACY_LEVEL = 4  # int8 activations: see _matmul_nbits


def quantize_graph(path: Path, precision: str) -> None:
    """Rewrite the graph at ``path`` in ``precision`` (in place)."""
    if precision == "fp32":
        return
    if precision not in PRECISIONS:
        raise MirrorError(f"unknown precision {precision!r} (choose from {', '.join(PRECISIONS)})")
    model = onnx.load(str(path))
    _materialize_transposed_weights(model)
    if precision == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=True)
    else:
        model = _matmul_nbits(model, bits=4 if precision == "int4" else 8)
    external = sum(i.ByteSize() for i in model.graph.initializer) > (1 << 31) - (1 << 26)
    if path.with_name(path.name + ".data").exists():
        path.with_name(path.name + ".data").unlink()
    onnx.save(model, str(path), save_as_external_data=external, location=path.name + ".data")


def _matmul_nbits(model, bits: int):
    with quiet_quantizer():
        from onnxruntime.quantization.matmul_nbits_quantizer import (
            DefaultWeightOnlyQuantConfig,
            MatMulNBitsQuantizer,
        )
    # accuracy_level 4: int8 activations, MLAS's fastest path. Exact between methods only because
    # the runtime never scores or reads out a single row (runtime/target.py): with one-row calls,
    # a row's result depended on how many rows were scored together, and sd/mirror kept 1 and 0 of
    # 13 SpecBench prompts equal to ar on SmolLM2.
    # int4 is asymmetric: GGUF sources (Q4_0/Q4_1) already sit on an asymmetric 32-block grid,
    # and on SmolLM2 it kept perplexity at the fp32 level where symmetric lost 9%.
    config = DefaultWeightOnlyQuantConfig(block_size=BLOCK_SIZE, is_symmetric=bits == 8, accuracy_level=ACCURACY_LEVEL,
                                          bits=bits)
    with quiet_quantizer():
        quantizer = MatMulNBitsQuantizer(model, algo_config=config)
        quantizer.process()
    return quantizer.model.model


@contextmanager
def quiet_quantizer():
    """ONNX Runtime's quantizers configure the root logger when imported (INFO, which then let
    onnxscript narrate every later export) and warn at length: keep both to themselves."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def _materialize_transposed_weights(model) -> None:
    """A tied LM head reads the embedding through a Transpose node; the quantizer only takes
    constant weights, so store the head's weight as its own (transposed) initializer."""
    inits = {i.name: i for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        if node.op_type != "MatMul" or node.input[1] in inits:
            continue
        transpose = producers.get(node.input[1])
        if transpose is None or transpose.op_type != "Transpose" or transpose.input[0] not in inits:
            continue
        weight = numpy_helper.to_array(inits[transpose.input[0]])
        perm = next((list(a.ints) for a in transpose.attribute if a.name == "perm"), None)
        name = f"{transpose.input[0]}.transposed_for_{node.name}"
        model.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(weight.transpose(perm)), name))
        node.input[1] = name
    used = {i for n in model.graph.node for i in n.input}
    dead = [n for n in model.graph.node if n.op_type == "Transpose" and not set(n.output) & used]
    for n in dead:
        model.graph.node.remove(n)
