"""Shared fixtures: tiny random models and bundles, built once per test session."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny_models import build_tiny_model, tiny_tokenizer  # noqa: E402


@pytest.fixture(scope="session")
def tokenizer():
    return tiny_tokenizer(384)


@pytest.fixture(scope="session")
def target_dir(tmp_path_factory, tokenizer):
    return build_tiny_model(tmp_path_factory.mktemp("target"), "llama", layers=4, seed=0, tokenizer=tokenizer)


@pytest.fixture(scope="session")
def unrelated_draft_dir(tmp_path_factory, tokenizer):
    """A random draft that shares only the tokenizer: almost nothing is accepted."""
    return build_tiny_model(tmp_path_factory.mktemp("draft"), "llama", layers=1, seed=7, tokenizer=tokenizer)


def export(model, out, **options):
    from mirror_ort.export.exporter import ExportOptions, export_bundle

    return export_bundle(None if model is None else str(model), out, ExportOptions(**options), log=lambda m: None)


@pytest.fixture(scope="session")
def bundle_layers(tmp_path_factory, target_dir):
    """Exit after layer 2 of 4; draft = the target's first 2 layers."""
    return export(target_dir, tmp_path_factory.mktemp("b") / "layers", draft="layers:2").path


@pytest.fixture(scope="session")
def bundle_self(tmp_path_factory, target_dir):
    """Exit after layer 3; draft = the target itself: every draft token is accepted."""
    return export(target_dir, tmp_path_factory.mktemp("b") / "self", draft=str(target_dir), exit_layer=3,
                  validate=False).path


@pytest.fixture(scope="session")
def bundle_unrelated(tmp_path_factory, target_dir, unrelated_draft_dir):
    """Exit after layer 1; an unrelated draft: the fallback path."""
    return export(target_dir, tmp_path_factory.mktemp("b") / "unrelated", draft=str(unrelated_draft_dir),
                  exit_layer=1, validate=False).path
