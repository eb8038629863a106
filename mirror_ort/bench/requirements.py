"""Which peer packages are installed, and how to install the missing ones."""

import importlib.util

from .rows import Skipped

TORCH_HINT = "pip install torch==2.13.0 'transformers>=4.57,<4.58' (or pip install 'mirror-ort[export]')"
HINTS = {
    "onnxruntime_genai": "pip install onnxruntime-genai==0.18.0",
    "onnx_ir": "pip install onnx-ir (onnxruntime-genai's model builder needs it)",
    "torch": TORCH_HINT,
    "transformers": TORCH_HINT,
    "matplotlib": "pip install matplotlib (or pip install 'mirror-ort[bench]')",
}
DISTRIBUTIONS = {"onnxruntime_genai": "onnxruntime-genai", "onnx_ir": "onnx-ir"}


def installed(module: str) -> bool:
    """True if ``module`` can be imported (found without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(*modules: str, purpose: str = "") -> None:
    """Raise Skipped naming the first missing package and its install command."""
    for module in modules:
        if not installed(module):
            name = DISTRIBUTIONS.get(module, module)
            raise Skipped(f"{name} is not installed{' (' + purpose + ')' if purpose else ''}: "
                          f"{HINTS.get(module, 'pip install ' + name)}")
