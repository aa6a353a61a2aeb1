"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# With TRANSFER_REQUIRE_FIXTURES=1 (as .ci/run sets it) a missing real fixture fails the test
# instead of skipping it, so CI cannot pass vacuously without ../shared/fixtures.
REQUIRE_FIXTURES = "TRANSFER_REQUIRE_FIXTURES"


def fixtures_root() -> Path:
    """$TRANSFER_FIXTURES, default <repo>/../shared/fixtures (whether it exists or not)."""
    return Path(os.environ.get("TRANSFER_FIXTURES", REPO_ROOT.parent / "shared" / "fixtures"))


def fixtures_required() -> bool:
    return os.environ.get(REQUIRE_FIXTURES, "").strip() not in ("", "0")


def missing_fixture(reason: str) -> NoReturn:
    """Skip the test with ``reason``; a failure with the same reason when TRANSFER_REQUIRE_FIXTURES=1."""
    if fixtures_required():
        pytest.fail(f"{reason} ({REQUIRE_FIXTURES}=1 makes a missing fixture a failure)", pytrace=False)
    pytest.skip(reason)


def require_fixture(path: str | os.PathLike) -> Path:
    """``path`` (a real fixture file or folder) if it exists; else see ``missing_fixture``."""
    path = Path(path)
    if not path.exists():
        missing_fixture(f"Real fixture {path} not found; set TRANSFER_FIXTURES to the fixtures folder")
    return path


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The real-data fixtures folder (``fixtures_root()``).

    Tests that use it skip (with the reason) on a fresh clone without it, or fail
    with TRANSFER_REQUIRE_FIXTURES=1. Files and folders inside it go through
    ``require_fixture`` the same way.
    """
    path = fixtures_root()
    if not path.is_dir():
        missing_fixture(f"Real fixtures folder {path} not found; set TRANSFER_FIXTURES")
    return path


@pytest.fixture(autouse=True, scope="session")
def _private_feature_cache(tmp_path_factory):
    """Feature caches go to a per-session folder, never the user's ~/.cache."""
    if "TRANSFER_CACHE_DIR" not in os.environ:
        os.environ["TRANSFER_CACHE_DIR"] = str(tmp_path_factory.mktemp("feature-cache"))
    yield
