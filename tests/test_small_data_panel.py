"""benchmarks/small_data_panel.py (issue 24): seeded per-class subsampling, the per-entry spread and
verdict on known numbers, --combine; a --quick run end to end on neu_steel (slow)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT, require_fixture
from transfer.data.samples import Samples

BENCHMARKS = REPO_ROOT / "benchmarks"


@pytest.fixture(scope="module")
def small():
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module("small_data_panel")


def _samples(counts):
    sources, targets = [], []
    for label, count in enumerate(counts):
        sources += [f"c{label}/{i}.png" for i in range(count)]
        targets += [label] * count
    return Samples(tuple(sources), tuple(targets), tuple(f"c{k}" for k in range(len(counts))))


def test_per_class_split_is_seeded_disjoint_and_capped(small):
    samples = _samples([100, 100, 12])
    split = small.per_class_split(samples, 20, 10, seed=1)
    train, val = list(split.train.targets), list(split.val.targets)
    # A class of 12 keeps 4 in 5 for training (9) and the rest (3) for validation.
    assert [train.count(k) for k in range(3)] == [20, 20, 9]
    assert [val.count(k) for k in range(3)] == [10, 10, 3]
    assert not set(split.train.sources) & set(split.val.sources)
    again = small.per_class_split(samples, 20, 10, seed=1)
    assert again.train.sources == split.train.sources and again.val.sources == split.val.sources
    assert small.per_class_split(samples, 20, 10, seed=2).train.sources != split.train.sources


def _run(last, head_best, probe, num_val=50):
    return {"last": last, "best": max(last, head_best), "head_best": head_best, "probe": probe, "num_val": num_val}


def test_an_entry_holds_only_when_the_mean_is_ahead_and_no_seed_loses_two_images(small):
    # Seeds within one image of the head stage, ahead on average: holds.
    fine = small.summarize_entry([_run(0.90, 0.92, 0.88), _run(0.94, 0.90, 0.90), _run(0.92, 0.90, 0.90)])
    assert fine["holds"]
    assert fine["last_minus_head_best_images"]["min"] == -1.0
    assert fine["last_minus_head_best"]["mean"] == pytest.approx(0.0133, abs=1e-4)
    # One seed 3 images under its head stage (the brain MRI case), even with a mean ahead.
    one_bad = small.summarize_entry([_run(0.86, 0.92, 0.80), _run(0.98, 0.90, 0.80), _run(0.98, 0.90, 0.80)])
    assert one_bad["last_minus_head_best"]["mean"] > 0 and not one_bad["holds"]
    # Behind the probe on average.
    assert not small.summarize_entry([_run(0.90, 0.88, 0.91), _run(0.90, 0.88, 0.91)])["holds"]


def test_combine_merges_runs_into_entries(small, tmp_path, capsys):
    rows = [{"set": "busi", "per_class": 20, "seed": s, "num_train": 60, "num_val": 75, "last": 0.8, "best": 0.8,
             "head_best": 0.79, "probe": 0.78, "curve": [0.8]} for s in (1, 2)]
    for i, row in enumerate(rows):
        (tmp_path / f"{i}.json").write_text(json.dumps({"wall_seconds": 10, "rows": [row]}))
    out = tmp_path / "all.json"
    assert small.main(["--combine", str(tmp_path / "0.json"), str(tmp_path / "1.json"), "--json-out", str(out)]) == 0
    merged = json.loads(out.read_text())
    assert merged["wall_seconds"] == 20 and len(merged["entries"]) == 1
    assert [r["seed"] for r in merged["entries"][0]["seeds"]] == [1, 2]
    assert "busi-20" in capsys.readouterr().out


@pytest.mark.slow  # two small trainings and two probes on real neu_steel images, ~2 min
def test_quick_run_end_to_end(tmp_path, fixtures_dir):
    fixtures = require_fixture(fixtures_dir / "neu_steel").parent
    out = tmp_path / "quick.json"
    done = subprocess.run([sys.executable, str(BENCHMARKS / "small_data_panel.py"), "--quick", "--fixtures",
                           str(fixtures), "--json-out", str(out)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    payload = json.loads(out.read_text())
    [entry] = payload["entries"]
    assert (entry["set"], entry["per_class"], len(entry["seeds"])) == ("neu_steel", 10, 2)
    for run in entry["seeds"]:
        assert (run["num_train"], run["num_val"]) == (60, 60)
        assert 0.0 <= run["last"] <= run["best"] <= 1.0 and 0.0 <= run["probe"] <= 1.0
        assert run["head_best"] is not None
    assert "neu_steel-10" in done.stdout
