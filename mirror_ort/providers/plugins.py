"""Plugin EP libraries: found through their Python package, loaded into ONNX Runtime once per process.

ONNX Runtime refuses a second registration of the same library, and session creation in two
threads may race to register it, hence the lock and the record of what is loaded.
"""

import importlib
import importlib.util
import threading

import onnxruntime as ort

from ..errors import MirrorError
from .spec import ProviderSpec

_lock = threading.Lock()
_loaded: dict[str, str] = {}  # ORT provider name -> library path


def is_installed(spec: ProviderSpec) -> bool:
    """Plugins: their package is importable. Built-in providers: this onnxruntime build has them."""
    if spec.is_plugin:
        return importlib.util.find_spec(spec.plugin_module) is not None
    return spec.ort_name in ort.get_available_providers()


def require_installed(spec: ProviderSpec) -> None:
    if not is_installed(spec):
        raise MirrorError(f"execution provider {spec.name} is not installed: {spec.install_hint}")


def library_path(spec: ProviderSpec) -> str:
    """Where the plugin package says its library is (it raises when the file is missing)."""
    require_installed(spec)
    package = importlib.import_module(spec.plugin_module)
    try:
        return package.get_library_path()
    except (OSError, RuntimeError) as e:
        raise MirrorError(f"the {spec.name} plugin library is missing ({ort_message(e)}): "
                          f"reinstall it: {spec.install_hint}") from None


def load_plugin(spec: ProviderSpec) -> str:
    """Register the plugin library with ONNX Runtime (once per process); returns its path."""
    with _lock:
        if spec.ort_name in _loaded:
            return _loaded[spec.ort_name]
        path = library_path(spec)
        try:
            ort.register_execution_provider_library(spec.ort_name, path)
        except Exception as e:  # ONNX Runtime's errors derive from Exception only
            if "already registered" not in str(e):
                raise MirrorError(f"cannot load the {spec.name} plugin library {path}: {ort_message(e)}; "
                                  f"reinstall it: {spec.install_hint}") from None
        _loaded[spec.ort_name] = path
        return path


def ep_devices(spec: ProviderSpec) -> list[ort.OrtEpDevice]:
    """The devices ONNX Runtime offers to this provider (plugins are loaded first)."""
    if spec.is_plugin:
        load_plugin(spec)
    return [d for d in ort.get_ep_devices() if d.ep_name == spec.ort_name]


def ort_message(error: BaseException) -> str:
    """ONNX Runtime's message on one line, without its ``[ONNXRuntimeError] : 1 : FAIL :`` prefix."""
    text = " ".join(str(error).split())
    return text.split(" : ", 3)[-1] if text.startswith("[ONNXRuntimeError]") else text
