"""The notebooks run top to bottom (code cells executed in order in a fresh process)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def notebook_code(path: Path) -> str:
    cells = json.loads(path.read_text())["cells"]
    return "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")


@pytest.mark.slow  # ~150 s: executes the notebook end to end
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(notebook):
    result = subprocess.run(
        [sys.executable, "-c", notebook_code(notebook)], cwd=notebook.parent, capture_output=True, text=True,
        timeout=600, env={**__import__("os").environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # The walkthrough must learn, with or without ImageNet weights (offline it trains from scratch).
    # (A number may end a sentence: "val accuracy 1.0000. Run saved in ...".)
    scores = [float(v) for v in re.findall(r"val accuracy ([0-9]+(?:\.[0-9]+)?)", result.stdout)]
    assert scores and min(scores) >= 0.9, result.stdout[-3000:]


def test_there_is_a_notebook():
    assert NOTEBOOKS, "notebooks/ holds no walkthrough"
