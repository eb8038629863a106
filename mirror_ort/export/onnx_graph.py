"""torch module -> ONNX file, with the graph's I/O read back for the manifest."""

import logging
import warnings
from pathlib import Path

import onnx
import torch

# Graphs whose weights exceed this go to ONNX external data (``<file>.data``).
EXTERNAL_DATA_BYTES = 512 * 1024 * 1024

_ONNX_DTYPES = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16",
                onnx.TensorProto.INT64: "int64", onnx.TensorProto.INT32: "int32"}


def export_graph(module, args: tuple, input_names: list[str], output_names: list[str],
                 dynamic_shapes: tuple, path: Path, opset: int = 23) -> None:
    """Export with the dynamo exporter: tied weights are stored once. Opset 23 has the
    RMSNormalization / RotaryEmbedding / Attention ops the fused DecoderSpan exports to;
    the static NPU draft keeps its decomposed ops at opset 20."""
    weight_bytes = sum(p.numel() * p.element_size() for p in {id(p): p for p in module.parameters()}.values())
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    logging.getLogger("onnx_ir").setLevel(logging.WARNING)  # per-initializer INFO lines once logging is configured
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module, args, dynamo=True, input_names=input_names, output_names=output_names,
            dynamic_shapes=dynamic_shapes, opset_version=opset, optimize=True, verbose=False,
        )
    program.save(str(path), external_data=weight_bytes > EXTERNAL_DATA_BYTES)


def graph_io(path: Path) -> dict:
    """Names, dtypes and (symbolic) shapes of a graph's inputs and outputs."""
    model = onnx.load(str(path), load_external_data=False)

    def describe(values):
        return [{"name": v.name,
                 "dtype": _ONNX_DTYPES.get(v.type.tensor_type.elem_type, str(v.type.tensor_type.elem_type)),
                 "shape": [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]}
                for v in values]

    return {"inputs": describe(model.graph.input), "outputs": describe(model.graph.output)}
