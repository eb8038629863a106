"""Sessions on the requested provider, or a one-line error: never a silent CPU fallback."""

import os
import sys
from contextlib import contextmanager
from pathlib import Path

import onnx
import onnxruntime as ort

from ..errors import MirrorError
from .choice import ProviderChoice
from .plugins import require_installed
from .registry import lookup
from .session_options import build_session_options
from .spec import CPU_EP

_FALLBACK_REFUSED = "fallback to CPU EP has been explicitly disabled"


def create_session(path: Path | bytes, choice: ProviderChoice, threads: int | None = None,
                   allow_cpu_fallback: bool = False, spin: bool | None = None,
                   role: str = "model") -> ort.InferenceSession:
    """An InferenceSession on ``choice``; ``role`` (prefix, suffix, draft) names the graph in errors.
    ``path`` may be a serialized model instead (the fused target, which has dynamic shapes)."""
    spec = lookup(choice.name)
    require_installed(spec)
    if spec.needs_static_shapes(choice.options):
        require_static(choice, not isinstance(path, bytes) and graph_is_static(path), role)
    plan = build_session_options(choice, threads, spin, allow_cpu_fallback)
    try:
        with _native_stdout_to_stderr():
            session = ort.InferenceSession(_model(path), sess_options=plan.options, providers=plan.providers)
    except Exception as e:  # ONNX Runtime's errors derive from Exception only
        if _FALLBACK_REFUSED not in str(e):
            raise
        raise MirrorError(_refused_fallback_message(path, choice, role)) from None
    _check_assignment(session, choice, role)
    return session


def fallback_nodes(path: Path, choice: ProviderChoice) -> list[str]:
    """The nodes ``choice`` would leave to the CPU EP, as ``name (OpType)``.

    Read from ONNX Runtime's record of which EP got which node (after graph optimisation, so
    fused nodes carry their fused names), in a session that allows the fallback.
    """
    if lookup(choice.name).ort_name == CPU_EP:
        return []
    return _names(_assigned(_fallback_session(path, choice), CPU_EP))


def _refused_fallback_message(path: Path, choice: ProviderChoice, role: str) -> str:
    session = _fallback_session(path, choice)
    if not _assigned(session, lookup(choice.name).ort_name):
        return (f"{choice} could not take any node of the {role} graph (ONNX Runtime's log above says why): "
                f"pick another device or provider")
    nodes = _names(_assigned(session, CPU_EP))
    shown = ", ".join(nodes[:5]) + (f" and {len(nodes) - 5} more" if len(nodes) > 5 else "")
    return (f"{choice} cannot take the whole {role} graph: {len(nodes)} node(s) would fall back to the CPU "
            f"({shown}): pass --allow-cpu-fallback or pick another provider")


def _names(nodes: list[ort.OrtEpAssignedNode]) -> list[str]:
    return [f"{node.name or '<unnamed>'} ({node.op_type})" for node in nodes]


def _fallback_session(path: Path | bytes, choice: ProviderChoice) -> ort.InferenceSession:
    plan = build_session_options(choice, allow_cpu_fallback=True)
    with _native_stdout_to_stderr():
        return ort.InferenceSession(_model(path), sess_options=plan.options, providers=plan.providers)


def _model(path: Path | bytes) -> str | bytes:
    return path if isinstance(path, bytes) else str(path)


@contextmanager
def _native_stdout_to_stderr():
    """Send what native code writes to file descriptor 1 while a session is made to stderr.

    QNN's HTP backend prints a ``# LIBNATIVE: ...`` line on stdout when it first loads, which
    would land in ``mirror-ort run``'s text or in front of its ``--json`` object.
    """
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError):  # no real stdout (e.g. closed): nothing to protect
        yield
        return
    try:
        os.dup2(2, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def require_static(choice: ProviderChoice, graph_is_static: bool, role: str) -> None:
    """Refuse a dynamic-shape graph for a provider that compiles for one shape (QNN, CUDA graphs)."""
    spec = lookup(choice.name)
    if graph_is_static or not spec.needs_static_shapes(choice.options):
        return
    who = spec.name if spec.static_shapes else f"{spec.name} with {spec.graph_capture_option}=1"
    raise MirrorError(f"the {role} graph has dynamic shapes but {who} needs static shapes: "
                      f"re-export with `mirror-ort export --static`")


def graph_is_static(path: Path) -> bool:
    """Whether every graph input has a fixed rank and fixed sizes (external weights are not read)."""
    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {init.name for init in graph.initializer}
    inputs = [i.type.tensor_type for i in graph.input if i.name not in initializers]
    return all(t.HasField("shape") and all(d.HasField("dim_value") and d.dim_value > 0 for d in t.shape.dim)
               for t in inputs)


def _check_assignment(session: ort.InferenceSession, choice: ProviderChoice, role: str) -> None:
    """The session lists the EP and the EP took nodes: a registered EP may still take none."""
    ort_name = lookup(choice.name).ort_name
    got = session.get_providers()
    if ort_name not in got:
        raise MirrorError(f"the {role} session got {', '.join(got)} instead of {choice}: "
                          f"run `mirror-ort providers` to see what this machine offers")
    if ort_name != CPU_EP and not _assigned(session, ort_name) and _assigned(session, CPU_EP):
        raise MirrorError(f"{choice} took none of the {role} graph's nodes (all run on the CPU): "
                          f"pick another provider or check its options")


def _assigned(session: ort.InferenceSession, ort_name: str) -> list[ort.OrtEpAssignedNode]:
    return [node for subgraph in session.get_provider_graph_assignment_info()
            if subgraph.ep_name == ort_name for node in subgraph.get_nodes()]
