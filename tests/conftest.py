"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The real-data fixtures folder: $TRANSFER_FIXTURES, default <repo>/../shared/fixtures.

    Tests that use it skip (with the reason) on a fresh clone without it.
    """
    path = Path(os.environ.get("TRANSFER_FIXTURES", REPO_ROOT.parent / "shared" / "fixtures"))
    if not path.is_dir():
        pytest.skip(f"Real fixtures folder {path} not found; set TRANSFER_FIXTURES")
    return path


@pytest.fixture(autouse=True, scope="session")
def _private_feature_cache(tmp_path_factory):
    """Feature caches go to a per-session folder, never the user's ~/.cache."""
    if "TRANSFER_CACHE_DIR" not in os.environ:
        os.environ["TRANSFER_CACHE_DIR"] = str(tmp_path_factory.mktemp("feature-cache"))
    yield
