"""Every guide of benchmarks/guides/ keeps the contract benchmarks/task_panel.py calls it by.

The contract (benchmarks/README.md, "task_panel.py"): a module-level ``GUIDE`` dict naming the
guide, its task and its source, and ``run_guide(data, *, backbone, weights, image_size, steps,
epochs, seed, score_samples, echo)`` with those defaults. Each guide's own test file trains it.
"""

from __future__ import annotations

import importlib
import inspect
import sys

import pytest

from tests.conftest import REPO_ROOT

BENCHMARKS = REPO_ROOT / "benchmarks"
GUIDES = {"detect": "retinanet", "segment": "deeplabv3plus", "localize": "box_regression"}
DEFAULTS = {"backbone": "mobilenet_0.25", "weights": None, "image_size": inspect.Parameter.empty,
            "steps": None, "epochs": None, "seed": 0, "score_samples": None}


def guide_module(name: str):
    if not (BENCHMARKS / "guides" / f"{name}.py").is_file():
        pytest.skip(f"benchmarks/guides/{name}.py is not written yet")
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    return importlib.import_module(f"benchmarks.guides.{name}")


@pytest.mark.parametrize("task, name", sorted(GUIDES.items()))
def test_guide_keeps_the_contract(task, name):
    module = guide_module(name)
    assert set(module.GUIDE) >= {"name", "task", "source"}
    assert module.GUIDE["task"] == task and module.GUIDE["name"]
    assert module.GUIDE["source"].startswith("https://")
    parameters = inspect.signature(module.run_guide).parameters
    first, *keywords = parameters.values()
    assert first.name == "data" and first.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    assert {p.name: p.default for p in keywords if p.name != "echo"} == DEFAULTS
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in keywords) and "echo" in parameters


def test_the_panel_runs_these_guides():
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    sides = importlib.import_module("task_panel_sides")
    assert sides.GUIDES == {task: f"benchmarks.guides.{name}" for task, name in GUIDES.items()}
