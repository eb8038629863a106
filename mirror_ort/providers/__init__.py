"""Execution providers for the target and the draft (see registry)."""

from .registry import ProviderChoice, create_session, parse_provider

__all__ = ["ProviderChoice", "create_session", "parse_provider"]
