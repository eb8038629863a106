"""mirror-ort: Mirror Speculative Decoding on ONNX Runtime."""

from .errors import MirrorError

__version__ = "0.1.0"
__all__ = ["MirrorError", "Pipeline", "__version__"]


def __getattr__(name):
    # Pipeline pulls in ONNX Runtime: import it on first use so `import mirror_ort` (and the CLI) stays light.
    if name == "Pipeline":
        from .runtime.pipeline import Pipeline

        return Pipeline
    raise AttributeError(f"module 'mirror_ort' has no attribute {name!r}")
