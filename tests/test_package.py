"""`import transfer` is fast and silent; the CLI help works without TensorFlow."""

import subprocess
import sys
import time


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_import_is_silent_and_does_not_load_tensorflow():
    result = _run(
        "import sys, transfer; "
        "heavy = [m for m in ('tensorflow', 'keras', 'tensorflow_datasets') if m in sys.modules]; "
        "print(heavy)"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    assert result.stderr == ""


def test_import_is_fast():
    started = time.perf_counter()
    result = _run("import transfer")
    # Generous bound: a bare interpreter start is ~20 ms; TensorFlow alone takes seconds.
    assert result.returncode == 0
    assert time.perf_counter() - started < 2.0


def test_public_api_resolves_lazily():
    result = _run("import transfer; print(transfer.Recipe().batch_size, 'Recipe' in dir(transfer))")
    assert result.stdout.split() == ["32", "True"], result.stderr


def test_cli_help_lists_commands():
    result = subprocess.run(
        [sys.executable, "-m", "transfer", "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    for command in ("train", "evaluate", "export", "predict", "backbones", "weights", "demo"):
        assert command in result.stdout
