"""Execution providers for the target and the draft: ``name[:device]`` + options -> a session.

Each provider is one entry in ``registry.PROVIDERS``; the runtime only calls the functions here.
"""

from .choice import ProviderChoice, parse_provider
from .describe import describe_providers, format_providers
from .registry import PROVIDERS
from .session import create_session, fallback_nodes, graph_is_static, require_static
from .session_options import (
    SessionPlan,
    available_cores,
    build_session_options,
    provider_options,
)

__all__ = [
    "PROVIDERS", "ProviderChoice", "SessionPlan", "available_cores", "build_session_options", "create_session",
    "describe_providers", "fallback_nodes", "format_providers", "graph_is_static", "parse_provider",
    "provider_options", "require_static",
]
