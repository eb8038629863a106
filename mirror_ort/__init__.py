"""mirror-ort: Mirror Speculative Decoding on ONNX Runtime."""

__version__ = "0.1.0"
