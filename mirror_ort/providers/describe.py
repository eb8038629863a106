"""What this environment can run, for ``mirror-ort providers``: providers, plugin libraries, devices."""

import onnxruntime as ort

from ..errors import MirrorError
from .plugins import ep_devices, is_installed, library_path, load_plugin
from .registry import PROVIDERS
from .spec import ProviderSpec


def describe_providers() -> dict:
    """Every registry entry: installed or not, its plugin library (loaded or the loader's message),
    the devices ONNX Runtime offers it, and the install hint when it is missing."""
    providers = [_describe(spec) for spec in PROVIDERS.values()]  # loads the plugins first
    return {"onnxruntime": ort.__version__, "available": ort.get_available_providers(), "providers": providers}


def _describe(spec: ProviderSpec) -> dict:
    entry = {"name": spec.name, "ort_name": spec.ort_name, "kind": "plugin" if spec.is_plugin else "built-in",
             "installed": is_installed(spec), "static_shapes": spec.static_shapes,
             "library": None, "devices": [], "install_hint": None}
    if not entry["installed"]:
        entry["install_hint"] = spec.install_hint
        return entry
    if spec.is_plugin:
        entry["library"] = _library(spec)
        if not entry["library"]["loaded"]:
            return entry
    entry["devices"] = [{"ep_name": d.ep_name, "ep_vendor": d.ep_vendor, "vendor": d.device.vendor,
                         "type": d.device.type.name} for d in ep_devices(spec)]
    return entry


def _library(spec: ProviderSpec) -> dict:
    path = None
    try:
        path = library_path(spec)
        load_plugin(spec)
    except MirrorError as e:
        return {"path": path, "loaded": False, "message": str(e)}
    return {"path": path, "loaded": True, "message": None}


def format_providers(described: dict) -> str:
    """The human form of describe_providers(): one block per provider."""
    lines = [f"onnxruntime {described['onnxruntime']} (available: {', '.join(described['available'])})", ""]
    for entry in described["providers"]:
        library = entry["library"]
        if not entry["installed"]:
            status, detail = "missing", entry["install_hint"]
        elif library and not library["loaded"]:
            status, detail = "broken", library["message"]
        elif not entry["devices"]:
            status, detail = "no device", "installed, but it offers no device on this machine"
        else:
            status = "ready"
            detail = ", ".join(f"{d['type']} ({d['vendor']})" for d in entry["devices"])
        static = "  [needs static shapes]" if entry["static_shapes"] else ""
        lines.append(f"{entry['name']:<16} {status:<10} {detail}{static}")
        if library and library["path"]:
            lines.append(f"{'':<16} {'library':<10} {library['path']}")
    return "\n".join(lines)
