"""The shape of one registry entry: everything mirror-ort must know about a provider, as data."""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

CPU_EP = "CPUExecutionProvider"


@dataclass(frozen=True)
class DeviceRule:
    """What the ``device`` in ``name:device`` selects.

    ``option`` names the provider option the device sets (cuda: ``device_id``); ``None`` means
    the device picks, by hardware type, which of the plugin's EP devices the session gets.
    ``choices`` are the accepted spellings (matched without case); empty means a device index.
    """

    option: str | None
    choices: tuple[str, ...] = ()
    default: str | None = None

    def canonical(self, text: str) -> str | None:
        """The accepted spelling of ``text``, or None when this rule does not accept it."""
        if not self.choices:
            return text if text.isdigit() else None
        return next((c for c in self.choices if c.lower() == text.lower()), None)

    def describe(self) -> str:
        return ", ".join(self.choices) if self.choices else "a device index (0, 1, ...)"


@dataclass(frozen=True)
class ProviderSpec:
    """One execution provider. The runtime never branches on a provider's name: it reads this."""

    name: str
    ort_name: str
    install_hint: str
    # Python package shipping a plugin library (with get_library_path()/get_ep_name()); None
    # means the provider is compiled into the onnxruntime wheel that is installed.
    plugin_module: str | None = None
    device: DeviceRule | None = None
    options: tuple[str, ...] = ()
    defaults: Mapping[str, str] = field(default_factory=dict)
    device_defaults: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    # SessionOptions attributes the provider needs (DirectML: no memory pattern, sequential).
    session_settings: Mapping[str, object] = field(default_factory=dict)
    static_shapes: bool = False
    # Option that records the graph once and replays it (CUDA graphs): only sound for fixed shapes.
    graph_capture_option: str | None = None
    # Turns user-level options into what the provider reads, given the device.
    translate: Callable[[str | None, dict[str, str]], dict[str, str]] | None = None

    @property
    def is_plugin(self) -> bool:
        return self.plugin_module is not None

    def needs_static_shapes(self, options: Mapping[str, str]) -> bool:
        capture = self.graph_capture_option and options.get(self.graph_capture_option, "0")
        return self.static_shapes or str(capture).lower() in ("1", "true")
