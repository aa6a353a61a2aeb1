"""benchmarks/panel.py end to end on a tiny dataset: all three sides, the summary, --combine."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT, require_fixture
from transfer.cli.demo import make_shapes_dataset

WEIGHTS_FILE = "weights/mobilenet_2_5_224_tf_no_top.h5"


@pytest.mark.slow
def test_panel_runs_every_side_and_summarizes(fixtures_dir, tmp_path):
    weights = require_fixture(fixtures_dir / WEIGHTS_FILE)
    data = make_shapes_dataset(tmp_path / "shapes", train_per_class=8, val_per_class=4, size=32)
    recipe = tmp_path / "tiny.toml"
    recipe.write_text('batch_size = 8\n[[stages]]\nname = "head"\ntrainable = "head"\nepochs = 3\n'
                      '[[stages]]\nname = "finetune"\ntrainable = "all"\nepochs = 1\nbackbone_lr_scale = 0.3\n')
    out = tmp_path / "panel.json"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TRANSFER_CACHE_DIR": str(tmp_path / "cache")}
    run = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "panel.py"), "--entry", f"shapes={data}@32:0",
         "--weights", str(weights), "--recipe", str(recipe), "--batch-size", "8", "--verbose", "0",
         "--json-out", str(out), "--keep-runs", str(tmp_path / "runs")],
        env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    payload = json.loads(out.read_text())
    (row,) = payload["rows"]
    assert set(row["sides"]) == {"guide", "probe", "transfer"}
    guide, probe, transfer = (row["sides"][s] for s in ("guide", "probe", "transfer"))
    assert len(guide["curve"]) == 15 and guide["last"] == guide["curve"][-1] and guide["best"] == max(guide["curve"])
    assert len(transfer["curve"]) == 4 and transfer["head_best"] == max(transfer["curve"][:3])
    assert 0 < probe["seconds"] and 0 < transfer["seconds"]
    summary = payload["summary"]
    assert summary["min_margin_over_probe"] == pytest.approx(transfer["last"] - probe["last"])
    assert summary["min_last_minus_head_best"] == pytest.approx(transfer["last"] - transfer["head_best"])
    assert summary["max_time_ratio_to_guide"] == pytest.approx(transfer["seconds"] / guide["seconds"])
    assert "min_margin_over_probe" in run.stdout and "shapes" in run.stdout

    # The kept run feeds flip_tta.py, whose plain accuracy is the run's own best-epoch figure.
    run_dir = tmp_path / "runs" / "shapes-run"
    tta = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "flip_tta.py"), str(run_dir), "--json-out",
         str(tmp_path / "tta.json")], env=env, capture_output=True, text=True, timeout=300)
    assert tta.returncode == 0, tta.stderr[-3000:]
    (flip,) = json.loads((tmp_path / "tta.json").read_text())
    best = json.loads((run_dir / "run.json").read_text())["best_value"]
    assert flip["num_val"] == 12 and flip["plain"] == pytest.approx(best, abs=1e-6)
    assert {"mirrored", "flip_tta"} <= set(flip) and str(run_dir) in tta.stdout

    # The same --keep-runs again is refused before any side runs, naming the old run.
    again = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "panel.py"), "--entry", f"shapes={data}@32:0",
         "--weights", str(weights), "--keep-runs", str(tmp_path / "runs")],
        env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert again.returncode == 2 and f"{run_dir} already holds a training run" in again.stderr
    assert "--- shapes: guide ---" not in again.stdout

    combined = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "panel.py"), "--combine", str(out), str(out),
         "--json-out", str(tmp_path / "both.json")], env=env, capture_output=True, text=True, timeout=300)
    assert combined.returncode == 0, combined.stderr[-3000:]
    assert len(json.loads((tmp_path / "both.json").read_text())["rows"]) == 2


def test_train_seed_defaults_to_the_split_seed_and_can_be_set(monkeypatch):
    import argparse
    import importlib.util

    spec = importlib.util.spec_from_file_location("panel", REPO_ROOT / "benchmarks" / "panel.py")
    panel = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "panel", panel)  # its dataclasses look their module up there
    spec.loader.exec_module(panel)
    entry = panel.Entry("flowers5-s2", "/data/flowers5", 128, 2)
    assert panel.train_seed(entry, argparse.Namespace(train_seed=None)) == 2
    assert panel.train_seed(entry, argparse.Namespace(train_seed=0)) == 0  # 0 is a seed, not "unset"
