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
