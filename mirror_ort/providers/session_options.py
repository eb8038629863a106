"""A ProviderChoice -> the SessionOptions and provider options ONNX Runtime gets.

Kept apart from session creation so the options for providers that cannot run on this machine
(CUDA, DirectML) can still be built and checked.
"""

import os
from dataclasses import dataclass

import onnxruntime as ort

from ..errors import MirrorError
from .choice import ProviderChoice, canonical_device, check_options
from .plugins import ep_devices
from .registry import lookup
from .spec import CPU_EP, ProviderSpec


@dataclass
class SessionPlan:
    spec: ProviderSpec
    options: ort.SessionOptions
    # The ``providers=`` argument for built-in providers; None for plugins, whose devices are
    # added to ``options`` (the old ``providers=[name]`` form silently gives a plugin nothing).
    providers: list[tuple[str, dict[str, str]]] | None
    provider_options: dict[str, str]


def provider_options(choice: ProviderChoice) -> dict[str, str]:
    """Defaults, then what the device sets, then the user's options, in the provider's own terms."""
    spec = lookup(choice.name)
    check_options(spec, choice.options)
    device = canonical_device(spec, choice.device)
    options = {**spec.defaults, **spec.device_defaults.get(device, {})}
    if device is not None and spec.device.option:
        options[spec.device.option] = device
    options.update({key: str(value) for key, value in choice.options.items()})
    return spec.translate(device, options) if spec.translate else options


def available_cores() -> int:
    """The cores this process may run on (what ONNX Runtime's default thread pool fills)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def build_session_options(choice: ProviderChoice, threads: int | None = None, spin: bool | None = None,
                          allow_cpu_fallback: bool = False) -> SessionPlan:
    """SessionOptions for ``choice``: threads, spinning, no silent CPU fallback, the provider itself."""
    spec = lookup(choice.name)
    options = provider_options(choice)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # errors only: QNN warns on every session about features x86 lacks
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    if spin is not None:  # sessions running at the same time on too few cores want spinning off
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    # The target is two sessions run back to back (prefix, suffix): an idle pool that keeps
    # spinning after its Run steals the cores from the next one (ar: 40 -> 82 tokens/s at 2 threads).
    so.add_session_config_entry("session.force_spinning_stop", "1")
    if spec.ort_name != CPU_EP and not allow_cpu_fallback:
        # Only for other EPs: ONNX Runtime rejects the flag when the CPU EP is the one requested.
        so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    so.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
    for name, value in spec.session_settings.items():
        setattr(so, name, value)
    if not spec.is_plugin:
        return SessionPlan(spec, so, [(spec.ort_name, options)], options)
    so.add_provider_for_devices(_plugin_devices(spec, canonical_device(spec, choice.device)), options)
    return SessionPlan(spec, so, None, options)


def _plugin_devices(spec: ProviderSpec, device: str | None) -> list[ort.OrtEpDevice]:
    offered = ep_devices(spec)
    picks_hardware = spec.device is not None and spec.device.option is None
    chosen = [d for d in offered if d.device.type.name == device] if picks_hardware and device else offered
    if not chosen:
        names = ", ".join(sorted({d.device.type.name for d in offered})) or "none"
        wanted = f"{device} device" if picks_hardware and device else "device"
        raise MirrorError(f"{spec.name} offers no {wanted} on this machine (it offers: {names}): "
                          f"pick another device or provider; `mirror-ort providers` lists them")
    return chosen
