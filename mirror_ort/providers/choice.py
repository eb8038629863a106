"""What the user asked for: ``name[:device]`` plus ``key=value`` options, checked against the table."""

from collections.abc import Iterable
from dataclasses import dataclass, field

from ..errors import MirrorError
from .registry import lookup
from .spec import ProviderSpec


@dataclass(frozen=True)
class ProviderChoice:
    name: str = "cpu"
    device: str | None = None
    options: dict = field(default_factory=dict)

    def __str__(self) -> str:
        return self.name + (f":{self.device}" if self.device else "")


def parse_provider(text: str, options: tuple[str, ...] = ()) -> ProviderChoice:
    """``"openvino:NPU", ("precision=f16",)`` -> a checked ProviderChoice (nothing is loaded yet)."""
    name, _, device = text.strip().partition(":")
    spec = lookup(name)
    parsed = {}
    for item in options:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise MirrorError(f"provider option {item!r} is not key=value: write it as e.g. device_id=0")
        parsed[key.strip()] = value.strip()
    check_options(spec, parsed)
    return ProviderChoice(spec.name, canonical_device(spec, device or None), parsed)


def canonical_device(spec: ProviderSpec, device: str | None) -> str | None:
    """The device as the provider spells it, its default when none is given; bad devices raise."""
    if spec.device is None:
        if device:
            raise MirrorError(f"{spec.name} takes no device: write {spec.name!r}, not {spec.name + ':' + device!r}")
        return None
    if not device:
        return spec.device.default
    canonical = spec.device.canonical(device)
    if canonical is None:
        raise MirrorError(f"unknown device {device!r} for {spec.name}: use {spec.device.describe()}")
    return canonical


def check_options(spec: ProviderSpec, keys: Iterable[str]) -> None:
    unknown = sorted(set(keys) - set(spec.options))
    if unknown:
        accepted = ", ".join(spec.options) if spec.options else "none"
        raise MirrorError(f"unknown option {unknown[0]!r} for {spec.name}: accepted options are {accepted}")
