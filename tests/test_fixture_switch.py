"""TRANSFER_REQUIRE_FIXTURES=1 (set by .ci/run) turns a missing real fixture from a skip into a failure."""

import os
import subprocess
import sys
import textwrap

from tests.conftest import REPO_ROOT

PROBE = textwrap.dedent('''
    from tests.conftest import fixtures_root, require_fixture


    def test_uses_the_fixtures_folder(fixtures_dir):
        pass


    def test_uses_a_file_in_it():
        require_fixture(fixtures_root() / "weights" / "missing.h5")
''')


def run_probe(tmp_path, **env):
    probe = tmp_path / "test_probe.py"
    probe.write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if k not in ("TRANSFER_REQUIRE_FIXTURES", "PYTEST_ADDOPTS")} | env
    env["TRANSFER_FIXTURES"] = str(tmp_path / "no-fixtures-here")
    env["COLUMNS"] = "1000"  # the summary lines keep the whole reason
    # -p loads the project's conftest as a plugin, so the probe sees the fixtures_dir fixture.
    return subprocess.run(
        [sys.executable, "-m", "pytest", str(probe), "-p", "tests.conftest", "-p", "no:cacheprovider", "-rsfE",
         "-o", "addopts=", "--rootdir", str(tmp_path)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )


def test_missing_fixtures_skip_with_the_reason(tmp_path):
    result = run_probe(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 skipped" in result.stdout and "failed" not in result.stdout and "error" not in result.stdout
    assert f"Real fixtures folder {tmp_path / 'no-fixtures-here'} not found" in result.stdout
    assert f"Real fixture {tmp_path / 'no-fixtures-here' / 'weights' / 'missing.h5'} not found" in result.stdout


def test_require_fixtures_makes_them_failures(tmp_path):
    result = run_probe(tmp_path, TRANSFER_REQUIRE_FIXTURES="1")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "skipped" not in result.stdout
    # The fixture fails at setup (an error), the test body's check fails the test: both with the reason.
    assert "1 failed, 1 error" in result.stdout, result.stdout
    assert f"Real fixtures folder {tmp_path / 'no-fixtures-here'} not found" in result.stdout
    assert f"Real fixture {tmp_path / 'no-fixtures-here' / 'weights' / 'missing.h5'} not found" in result.stdout
    assert "TRANSFER_REQUIRE_FIXTURES=1 makes a missing fixture a failure" in result.stdout

