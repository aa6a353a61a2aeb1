"""benchmarks/task_panel.py: entries, step passing, the figures, --combine, the pinned recipes; a --quick run.

The fast tests run the panel's logic on known numbers (and one child process that fails); the
slow ones run ``--quick`` end to end on the real raccoon localization entry.
"""

from __future__ import annotations

import importlib
import json
import math
import subprocess
import sys
import tomllib

import pytest

from tests.conftest import REPO_ROOT, require_fixture

BENCHMARKS = REPO_ROOT / "benchmarks"
RECIPES = BENCHMARKS / "recipes"
WEIGHTS_FILE = "weights/mobilenet_2_5_224_tf_no_top.h5"


@pytest.fixture(scope="module")
def panel():
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module("task_panel")


@pytest.fixture(scope="module")
def sides(panel):
    return importlib.import_module("task_panel_sides")


def transfer_side(best, last, seconds, steps=120, **scores):
    """A transfer side as the child writes it, with ``best``/``last`` dicts of scores."""
    return {"side": "transfer", "best": {"score": best}, "last": {"score": last}, "wall_seconds": seconds,
            "steps": steps, "image_size": 288, **scores}


def guide_side(score, seconds):
    return {"side": "guide", "score": score, "wall_seconds": seconds, "steps": 120}


# --- entries ---------------------------------------------------------------------------------

def test_the_panel_holds_the_issues_entries(panel):
    assert [e.name for e in panel.PANEL] == [
        "detect:raccoon", "detect:bccd", "detect:face_masks", "detect:neu_det", "localize:raccoon",
        "segment:camvid", "segment:balloon", "segment:membrane"]
    by_name = {e.name: e for e in panel.PANEL}
    bccd = by_name["detect:bccd"]
    assert (bccd.val, bccd.score) == ("bccd/ImageSets/Main/val.txt", "bccd/ImageSets/Main/test.txt")
    assert by_name["segment:camvid"].options == {"ignore_index": 11}
    membrane = by_name["segment:membrane"]
    assert (membrane.image_size, membrane.val_fraction) == (512, 0.1667)
    assert membrane.metrics == ("mean_iou", "pixel_accuracy")
    assert by_name["detect:neu_det"].metrics == ("map", "map50") and by_name["detect:neu_det"].val is None


def test_entries_are_chosen_by_name_or_task_in_panel_order(panel):
    chosen = panel.select_entries("segment:balloon,localize")
    assert [e.name for e in chosen] == ["localize:raccoon", "segment:balloon"]
    assert [e.name for e in panel.select_entries("detect")][1:] == ["detect:bccd", "detect:face_masks",
                                                                     "detect:neu_det"]
    with pytest.raises(SystemExit, match=r"unknown \['detect:coco'\]"):
        panel.select_entries("detect:coco")


def test_entry_round_trips_through_json(sides, panel):
    membrane = panel.PANEL[-1]
    again = sides.Entry.from_dict(json.loads(json.dumps(membrane.to_dict())))
    assert again == membrane and again.slug == "segment-membrane"


def test_image_size_follows_quick_then_entry_then_pinned_scale_then_task(sides, panel):
    by_name = {e.name: e for e in panel.PANEL}
    size = sides.image_size_for
    assert size(by_name["segment:membrane"], "mobilenet_0.25", quick=True) == 64
    assert size(by_name["segment:membrane"], "mobilenet_0.25", quick=False) == 512
    assert size(by_name["segment:balloon"], "mobilenet_0.25", quick=False) == 320
    assert size(by_name["detect:raccoon"], "mobilenet_0.25", quick=False) == 288
    # A pinned recipe's scale wins over the task's default (224 x 10/7 -> 320 even for detection).
    assert size(by_name["detect:raccoon"], "mobilenet_0.25", quick=False, settings={"image_size_scale": [10, 7]}) == 320


# --- steps -----------------------------------------------------------------------------------

def test_steps_are_epochs_times_batches(sides, tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("epoch,stage,loss,val_loss,seconds\n1,head,2.5,2.0,3.1\n2,head,2.0,1.5,3.0\n"
                    "3,finetune,1.0,,9.5\n")
    history = sides.read_history(path)
    assert history[2] == {"epoch": 3, "stage": "finetune", "loss": 1.0, "seconds": 9.5}
    # 161 images at batch 16: 11 batches an epoch (the last one partial), 3 epochs.
    assert sides.count_steps(history, 161, 16) == 33
    assert sides.count_steps(history, 160, 16) == 30


def test_the_guide_gets_the_steps_and_size_transfer_took(panel, monkeypatch, tmp_path):
    calls = []

    def fake_child(spec, echo=None):
        calls.append(spec)
        return {"side": "transfer", "steps": 430, "image_size": 288} if spec["side"] == "transfer" else \
            {"side": "guide", "steps": spec["steps"]}

    monkeypatch.setattr(panel, "run_child", fake_child)
    entry = panel.PANEL[0]
    got = panel.run_entry(entry, {"entry": entry.to_dict()}, tmp_path / entry.slug, None, None)
    assert [c["side"] for c in calls] == ["transfer", "guide"]
    assert (calls[1]["steps"], calls[1]["image_size"]) == (430, 288) and got["guide"]["steps"] == 430
    # --only guide takes them from --steps-from; without them it says so instead of racing unequally.
    calls.clear()
    got = panel.run_entry(entry, {"entry": entry.to_dict()}, tmp_path / "b", "guide", {"steps": 77})
    assert [c["steps"] for c in calls] == [77] and "transfer" not in got
    got = panel.run_entry(entry, {"entry": entry.to_dict()}, tmp_path / "c", "guide", None)
    assert "--steps-from" in got["guide"]["error"]


def test_steps_from_reads_an_earlier_panel(panel, tmp_path):
    path = tmp_path / "p.json"
    rows = [panel.entry_row(panel.PANEL[0], {"transfer": transfer_side({}, {}, 1.0, steps=430)}),
            panel.entry_row(panel.PANEL[1], {"transfer": {"side": "transfer", "error": "boom"}})]
    path.write_text(json.dumps({"entries": rows}))
    earlier = panel.steps_from(str(path))
    assert list(earlier) == ["detect:raccoon"] and earlier["detect:raccoon"]["steps"] == 430


def test_the_last_epoch_checkpoint_is_kept_before_the_run_deletes_it(sides, tmp_path):
    from transfer.engine import stage_runner
    from transfer.engine.checkpoints import Progress
    from transfer.engine.run import RunDir

    run = RunDir(tmp_path / "run")
    (run.root / "checkpoints").mkdir(parents=True)
    (run.root / "checkpoints" / "epoch-007.keras").write_bytes(b"the last epoch")
    Progress(stage_index=1, epoch=7, checkpoint="epoch-007.keras").save(run.state_file)
    original = stage_runner.remove_epoch_checkpoints
    with sides.keep_last_epoch(tmp_path / "last.keras") as kept:
        stage_runner.remove_epoch_checkpoints(run)  # what the stage loop calls when a run finishes
    assert (tmp_path / "last.keras").read_bytes() == b"the last epoch"
    assert kept == {"epoch": 7, "file": "epoch-007.keras"}
    assert not list((run.root / "checkpoints").glob("epoch-*")) and not run.state_file.exists()
    assert stage_runner.remove_epoch_checkpoints is original


# --- the figures -----------------------------------------------------------------------------

def test_margin_and_ratio_on_known_numbers(panel):
    entry = {e.name: e for e in panel.PANEL}["detect:bccd"]
    sides = {"transfer": transfer_side({"map": 0.5, "map50": 0.85}, {"map": 0.48, "map50": 0.83}, 300.0),
             "guide": guide_side({"map": 0.4, "map50": 0.75}, 600.0)}
    summary = panel.summarize(entry, sides)
    assert summary["headline"] == "map" and summary["margin"] == pytest.approx(0.08)
    assert summary["metrics"]["map50"] == {"transfer_best": 0.85, "transfer_last": 0.83, "guide_last": 0.75,
                                           "margin": pytest.approx(0.08)}
    assert summary["time_ratio"] == pytest.approx(0.5) and summary["steps"] == 120 and summary["errors"] == {}
    text = panel.table([panel.entry_row(entry, sides)])
    first, second = text.splitlines()[2:4]
    assert first.split() == ["detect:bccd", "map", "0.500", "0.480", "0.400", "+0.080", "300.0", "600.0", "0.50",
                             "120"]
    assert second.split() == ["map50", "0.850", "0.830", "0.750", "+0.080"]


def test_a_missing_or_failed_side_leaves_blanks_and_says_why(panel):
    entry = {e.name: e for e in panel.PANEL}["segment:membrane"]
    sides = {"transfer": transfer_side({"mean_iou": 0.8, "pixel_accuracy": 0.92},
                                       {"mean_iou": 0.79, "pixel_accuracy": 0.921}, 800.0),
             "guide": {"side": "guide", "error": "the child exited with code 1"}}
    summary = panel.summarize(entry, sides)
    assert summary["margin"] is None and summary["time_ratio"] is None
    assert summary["metrics"]["pixel_accuracy"]["transfer_last"] == 0.921
    lines = panel.table([panel.entry_row(entry, sides)]).splitlines()
    assert lines[2].split()[:6] == ["segment:membrane", "mean_iou", "0.800", "0.790", "-", "-"]
    assert lines[3].split() == ["pixel_accuracy", "0.920", "0.921", "-", "-"]
    assert lines[4].split() == ["guide", "failed:", "the", "child", "exited", "with", "code", "1"]


def test_combine_merges_sides_run_apart(panel, tmp_path):
    raccoon, balloon = panel.PANEL[0], {e.name: e for e in panel.PANEL}["segment:balloon"]
    first = {"settings": {"only": "transfer"}, "entries": [
        panel.entry_row(balloon, {"transfer": transfer_side({"mean_iou": 0.8}, {"mean_iou": 0.78}, 400.0)}),
        panel.entry_row(raccoon, {"transfer": transfer_side({"map": 0.45, "map50": 0.9},
                                                            {"map": 0.44, "map50": 0.89}, 1000.0)})]}
    second = {"settings": {"only": "guide"}, "entries": [
        panel.entry_row(raccoon, {"guide": guide_side({"map": 0.30, "map50": 0.7}, 800.0)})]}
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(first))
    b.write_text(json.dumps(second))
    out = tmp_path / "both.json"
    panel.main(["--combine", str(a), str(b), "--json-out", str(out)])
    merged = json.loads(out.read_text())
    assert [row["entry"]["name"] for row in merged["entries"]] == ["detect:raccoon", "segment:balloon"]
    racc = merged["entries"][0]
    assert sorted(racc["sides"]) == ["guide", "transfer"]
    assert racc["summary"]["margin"] == pytest.approx(0.14)
    assert racc["summary"]["time_ratio"] == pytest.approx(1.25)
    assert merged["entries"][1]["summary"]["margin"] is None
    assert merged["combined_from"] == [str(a), str(b)]
    # A later file's side replaces an earlier one's.
    third = {"entries": [panel.entry_row(raccoon, {"guide": guide_side({"map": 0.40, "map50": 0.8}, 500.0)})]}
    again = panel.combine([first, second, third])
    assert again["entries"][0]["summary"]["margin"] == pytest.approx(0.04)


def test_guide_results_are_checked_against_the_contract(sides, panel):
    entry = panel.PANEL[0]
    good = {"guide": "retinanet", "source": "https://keras.io/examples/vision/retinanet/", "task": "detect",
            "epochs": 2, "steps": 10, "seconds": 5.0, "train_seconds": 4.0, "score": {"map": 0.25, "map50": 0.5},
            "headline": 0.25, "history": [{"epoch": 1, "loss": 1.0}, {"epoch": 2, "loss": 0.5}]}
    assert sides.contract_problems(good, entry, 10) == []
    bad = {**good, "steps": 9, "headline": 0.5, "history": good["history"][:1]}
    assert sides.contract_problems(bad, entry, 10) == [
        "steps 9, asked for 10", "headline 0.5 is not the score's map 0.25", "1 history rows for 2 epochs"]
    assert sides.contract_problems({"steps": 10}, entry, 10)[0].startswith("missing keys ['guide'")


def test_a_child_that_fails_is_recorded_with_its_last_lines(panel, tmp_path):
    entry = panel.PANEL[4]
    spec = {"entry": entry.to_dict(), "side": "guide", "guide_module": "tests.no_such_guide", "steps": 3,
            "fixtures": str(tmp_path), "backbone": "smallcnn", "weights": None, "quick": True,
            "result": str(tmp_path / "guide.json")}
    lines = []
    got = panel.run_child(spec, echo=lines.append)
    assert got["error"] == "the child exited with code 1"
    assert any("No module named 'tests.no_such_guide'" in line for line in got["log_tail"])
    assert lines[0] == "--- localize:raccoon: guide ---" and not (tmp_path / "guide.json").exists()


def test_the_command_refuses_what_would_fail_hours_in(panel, tmp_path, monkeypatch):
    monkeypatch.setattr(panel, "FIXTURES", tmp_path)
    with pytest.raises(SystemExit, match="raccoon/train_labels.csv"):
        panel.main(["--entries", "localize", "--weights", "none"])
    for name in ("raccoon/train_labels.csv", "raccoon/test_labels.csv"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("")
    with pytest.raises(SystemExit, match="--steps-from"):
        panel.main(["--entries", "localize", "--weights", "none", "--only", "guide"])
    (tmp_path / "work" / "localize-raccoon").mkdir(parents=True)
    with pytest.raises(SystemExit, match="already holds runs"):
        panel.main(["--entries", "localize", "--weights", "none", "--work-dir", str(tmp_path / "work")])
    plain = tmp_path / "plain.toml"
    plain.write_text('batch_size = 4\n[[stages]]\nname = "all"\ntrainable = "all"\nepochs = 1\n')
    with pytest.raises(SystemExit, match="both for every task"):
        panel.recipes_by_task([str(plain), str(plain)])


# --- the pinned recipes ----------------------------------------------------------------------

@pytest.mark.parametrize("task, size, stages, batch", [
    ("detect", 288, [("head", 3, 0.002, 0), ("finetune", 40, 0.002, 0)], 16),
    ("segment", 320, [("head", 5, 0.001, 100), ("finetune", 30, 0.001, 600)], 8),
    ("localize", 288, [("head", 10, 0.001, 0), ("finetune", 40, 0.001, 0)], 8),
])
def test_pinned_recipes_load_and_round_trip(panel, task, size, stages, batch):
    from transfer.core.recipe import Recipe

    path = RECIPES / f"{task}-2026-12-07.toml"
    recipe = Recipe.load(path)
    written = tomllib.loads(path.read_text(encoding="utf-8"))
    assert recipe.to_dict() == written  # every field is in the file, and read as written
    assert Recipe.from_toml(recipe.to_toml()) == recipe
    assert [(s.name, s.epochs, s.learning_rate, s.min_steps) for s in recipe.stages] == stages
    assert recipe.batch_size == batch
    settings = panel.pinned_settings(path)
    assert settings["task"] == task and settings["commit"] == "4b35143"
    scale = settings["image_size_scale"]
    assert settings["image_size_mobilenet_0.25"] == size == round(224 * scale[0] / scale[1] / 32) * 32
    assert "4b35143" in path.read_text().splitlines()[1]


def test_the_recipes_folder_gives_one_recipe_per_task(panel):
    chosen = panel.recipes_by_task([str(RECIPES)])
    assert {task: path.name for task, path in chosen.items()} == {
        "detect": "detect-2026-12-07.toml", "localize": "localize-2026-12-07.toml",
        "segment": "segment-2026-12-07.toml"}
    assert panel.pinned_settings(RECIPES / "segment-2026-12-07.toml")["task_options"] == {
        "decoder": "unet", "loss": "ce+dice", "decoder_stride": 1}


def test_a_pinned_recipe_sets_its_task_options_and_quick_cuts_it_to_one_epoch_a_stage(panel, sides, fixtures_dir):
    require_fixture(fixtures_dir / "balloon" / "train")
    balloon = {e.name: e for e in panel.PANEL}["segment:balloon"]
    path = RECIPES / "segment-2026-12-07.toml"
    task, data, score = sides.load_entry(balloon, fixtures_dir, quick=True, settings=panel.pinned_settings(path))
    assert (task.decoder, task.loss, task.decoder_stride) == ("unet", "ce+dice", 1)
    assert (len(data.train), len(data.val)) == (8, 4) and score is data.val
    recipe = sides.recipe_for(task, str(path), quick=True)
    assert [(s.epochs, s.min_steps) for s in recipe.stages] == [(1, 0), (1, 0)] and recipe.batch_size == 8


# --- end to end ------------------------------------------------------------------------------

def quick_run(fixtures_dir, tmp_path, *extra):
    weights = require_fixture(fixtures_dir / WEIGHTS_FILE)
    require_fixture(fixtures_dir / "raccoon" / "train_labels.csv")
    out = tmp_path / "panel.json"
    run = subprocess.run(
        [sys.executable, str(BENCHMARKS / "task_panel.py"), "--quick", "--entries", "localize:raccoon",
         "--weights", str(weights), "--work-dir", str(tmp_path / "work"), "--json-out", str(out), *extra],
        capture_output=True, text=True, timeout=1500, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    (row,) = json.loads(out.read_text())["entries"]
    return run, row


@pytest.mark.slow
def test_quick_panel_end_to_end_with_a_stand_in_guide(fixtures_dir, tmp_path):
    import numpy as np

    from tests.panel_standin_guide import normalized_boxes
    from transfer.api import load_data
    from transfer.tasks.localize.evaluation import report_from_pixels

    run, row = quick_run(fixtures_dir, tmp_path, "--guide-module", "tests.panel_standin_guide")
    transfer, guide = row["sides"]["transfer"], row["sides"]["guide"]
    # 8 images at batch 8, one epoch a stage: 2 steps, the last stage's optimizer counted 1.
    assert (transfer["steps"], transfer["epochs"], transfer["last_stage_optimizer_iterations"]) == (2, 2, 1)
    assert guide["steps"] == 2 and guide["contract_problems"] == [] and guide["image_size"] == 64
    # The best and last epoch scored at the images' own pixels are the epochs' own val IoU (4 images,
    # one batch; IoU does not change under the stretch): the kept checkpoint is the last epoch.
    history = transfer["history"]
    assert transfer["last"]["score"]["mean_iou"] == pytest.approx(history[-1]["val_iou"], abs=1e-3)
    best = history[transfer["best_epoch"] - 1]["val_iou"]
    assert transfer["best"]["score"]["mean_iou"] == pytest.approx(best, abs=1e-3)
    # The stand-in's score, recomputed: the mean box of all 8 training images on the first 4 test images.
    split = load_data(fixtures_dir / "raccoon/train_labels.csv", task="localize",
                      val_source=fixtures_dir / "raccoon/test_labels.csv", echo=None)
    val = split.val.subset(range(4))
    mean = normalized_boxes(split.train.subset(range(8))).mean(axis=0)
    sizes = np.array([(t.width, t.height, t.width, t.height) for t in val.targets], float)
    expected = report_from_pixels(val, mean[None, :] * sizes).to_dict()["mean_iou"]
    summary = row["summary"]
    assert summary["metrics"]["mean_iou"]["guide_last"] == pytest.approx(expected)
    assert summary["margin"] == pytest.approx(transfer["last"]["score"]["mean_iou"] - expected, abs=1e-4)
    assert summary["time_ratio"] == pytest.approx(transfer["wall_seconds"] / guide["wall_seconds"], rel=0.01)
    assert "localize:raccoon" in run.stdout and "[transfer] " in run.stdout and "[guide] stand-in" in run.stdout


@pytest.mark.slow
def test_quick_panel_end_to_end_with_the_real_localization_guide(fixtures_dir, tmp_path):
    if not (BENCHMARKS / "guides" / "box_regression.py").is_file():
        pytest.skip("benchmarks/guides/box_regression.py is not written yet")
    _, row = quick_run(fixtures_dir, tmp_path)
    guide = row["sides"]["guide"]
    assert "error" not in guide, guide.get("log_tail")
    assert guide["module"] == "benchmarks.guides.box_regression" and guide["contract_problems"] == []
    assert guide["steps"] == row["sides"]["transfer"]["steps"] == 2
    assert row["summary"]["margin"] == pytest.approx(
        row["sides"]["transfer"]["last"]["score"]["mean_iou"] - guide["score"]["mean_iou"], abs=1e-4)
    assert math.isclose(guide["headline"], guide["score"]["mean_iou"], abs_tol=1e-6)
