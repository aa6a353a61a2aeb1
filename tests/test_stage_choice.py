"""The fine-tune check of small training sets (issue 24, ``transfer.engine.stage_choice``).

On 80 to ``small_data_max_images`` training images, classification first trains the recipe on
three quarters of the training images and scores the head stage's last epoch against the fine-tune's
last epoch on the other quarter; the fine-tune stays only if it wins. The validation images play no
part. A real run (smallcnn, 32 px, 80 images) whose fine-tune is at a rate far too high ends as the
head stage's model, and says so in its output, run.json, recipe.toml and ``transfer evaluate``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.imagefactory import write_image_folder
from transfer.core.errors import TransferError
from transfer.core.recipe import Recipe, Stage
from transfer.data.samples import DataSplit, Samples
from transfer.engine.stage_choice import StageChoice, choose_stages, head_stage_count, wants_check
from transfer.tasks import get_task

CLASSIFY = get_task("classify")


def test_head_stage_count_counts_the_leading_head_only_stages():
    assert head_stage_count(Recipe()) == 1
    two_heads = Recipe(stages=(Stage("h1", "head"), Stage("h2", "head"), Stage("ft", "all"), Stage("h3", "head")))
    assert head_stage_count(two_heads) == 2
    assert head_stage_count(Recipe(stages=(Stage("ft", "all"), Stage("h", "head")))) == 0


@pytest.mark.parametrize("num_train, expected", [(79, False), (80, True), (300, True), (301, False)])
def test_the_check_runs_on_80_to_300_training_images(num_train, expected):
    assert wants_check(Recipe(), CLASSIFY, num_train) is expected


def test_no_check_without_both_kinds_of_stage_for_other_tasks_or_when_turned_off():
    assert not wants_check(Recipe(stages=(Stage("head", "head"),)), CLASSIFY, 200)
    assert not wants_check(Recipe(stages=(Stage("ft", "all"),)), CLASSIFY, 200)
    assert not wants_check(Recipe(small_data_max_images=0), CLASSIFY, 200)
    for task in ("localize", "detect", "segment"):
        assert not wants_check(Recipe(), get_task(task), 200)


@pytest.mark.parametrize("value", [-1, 1.5, True, "1000"])
def test_a_bad_small_data_max_images_is_refused(value):
    with pytest.raises(TransferError, match="small_data_max_images"):
        Recipe(small_data_max_images=value)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        with pytest.raises(TransferError, match="small_data_max_images"):
            Recipe.from_toml(f"small_data_max_images = {json.dumps(value)}")


def test_the_setting_round_trips_through_toml():
    recipe = Recipe(small_data_max_images=250)
    assert Recipe.from_toml(recipe.to_toml()) == recipe


def _split(per_class: int = 40) -> DataSplit:
    paths = tuple(f"/data/{c}/{i}.jpg" for c in "ab" for i in range(per_class))
    train = Samples(paths, (0,) * per_class + (1,) * per_class, ("a", "b"))
    val = Samples(("/data/v/0.jpg", "/data/v/1.jpg"), (0, 1), ("a", "b"))
    return DataSplit(train, val, "test")


def _fake_inner_run(head_last: float, finetune_last: float, seen: list):
    """A stand-in for the inner training: records what it was given and writes the run.json
    that a real run would (the stage summaries the check reads)."""

    def train_inner(split, out_dir: Path, recipe):
        seen.append((split, Path(out_dir), recipe))
        out_dir.mkdir(parents=True)
        stages = [{"stage": "head", "last": head_last, "best": head_last},
                  {"stage": "finetune", "last": finetune_last, "best": finetune_last}]
        (out_dir / "run.json").write_text(json.dumps({"monitor": "val_accuracy", "monitor_mode": "max",
                                                      "stages": stages}))

    return train_inner


def test_the_inner_run_trains_on_three_quarters_of_the_training_images_and_never_sees_validation():
    seen: list = []
    data = _split()
    recipe, choice = choose_stages(data, Recipe(), CLASSIFY, _fake_inner_run(0.8, 0.9, seen), verbose=0)
    (inner, folder, inner_recipe), = seen
    assert len(inner.train) == 60 and len(inner.val) == 20
    assert set(inner.train.sources) | set(inner.val.sources) == set(data.train.sources)
    assert not set(inner.train.sources) & set(inner.val.sources)
    assert not set(data.val.sources) & (set(inner.train.sources) | set(inner.val.sources))
    assert inner_recipe.small_data_max_images == 0  # no check inside the check
    assert not folder.parent.exists()  # the inner run's temporary folder is gone
    assert recipe == Recipe() and choice.keep_finetune
    assert (choice.inner_train, choice.held_out) == (60, 20)


@pytest.mark.parametrize("head, finetuned, keep", [(0.8, 0.9, True), (0.8, 0.8, False), (0.9, 0.7, False)])
def test_the_fine_tune_stays_only_when_it_beats_the_head_on_the_held_out_images(head, finetuned, keep):
    recipe, choice = choose_stages(_split(), Recipe(), CLASSIFY, _fake_inner_run(head, finetuned, []), verbose=0)
    assert choice.keep_finetune is keep
    assert [s.name for s in recipe.stages] == (["head", "finetune"] if keep else ["head"])
    record = choice.record()
    assert record["final_model"] == ("finetune" if keep else "head")
    assert record["skipped_stages"] == ([] if keep else ["finetune"])
    assert f"head stage {head:.3f}, fine-tuned {finetuned:.3f} (val accuracy)" in choice.line()
    assert ("the fine-tune stays" in choice.line()) is keep


def test_the_choice_line_names_the_split_and_what_was_kept():
    choice = StageChoice(keep_finetune=False, head_score=0.84, finetune_score=0.76, monitor="val_accuracy",
                         inner_train=75, held_out=25, skipped_stages=("finetune",), seconds=3.0)
    assert choice.line() == (
        "Fine-tune check on 75 of the 100 training images (25 held out; the validation images play no part): "
        "head stage 0.840, fine-tuned 0.760 (val accuracy); the final model is the head stage's (the stage(s) "
        "'finetune' skipped).")


RECIPE = ('batch_size = 8\naugment = []\nwarmup_epochs = 0.0\nema_epochs = 0.0\n'
          '[[stages]]\nname = "head"\ntrainable = "head"\nlearning_rate = 0.01\nepochs = 3\n'
          '[[stages]]\nname = "too_fast"\ntrainable = "all"\nlearning_rate = 3.0\nepochs = 2\n')


@pytest.fixture(scope="module")
def head_only_run(tmp_path_factory):
    """A real run on 80 training images whose fine-tune, at AdamW 3.0, cannot beat its head."""
    from transfer.cli.main import app

    root = tmp_path_factory.mktemp("choice")
    write_image_folder(root / "data", {"red": 40, "blue": 40}, val_counts={"red": 10, "blue": 10}, size=32)
    (root / "recipe.toml").write_text(RECIPE)
    result = CliRunner().invoke(app, ["train", "--data", str(root / "data" / "train"), "--val-data",
                                      str(root / "data" / "val"), "--backbone", "smallcnn", "--weights", "none",
                                      "--image-size", "32", "--recipe", str(root / "recipe.toml"),
                                      "--out", str(root / "run")])
    assert result.exit_code == 0, result.output
    return root / "run", result.output


@pytest.mark.slow  # two real trainings, ~30 s
def test_a_losing_fine_tune_is_skipped_and_every_report_says_the_final_model_is_the_head_stages(head_only_run):
    from transfer.cli.main import app

    run, output = head_only_run
    config = json.loads((run / "run.json").read_text())
    choice = config["stage_choice"]
    assert choice["final_model"] == "head" and choice["skipped_stages"] == ["too_fast"], choice
    assert (choice["inner_train"], choice["held_out"]) == (60, 20)
    assert choice["finetune_score"] <= choice["head_score"]
    assert choice["line"] in output
    assert "Small training set (80 images)" in output
    assert [s.name for s in Recipe.load(run / "recipe.toml").stages] == ["head"]  # resume trains no more
    with open(run / "history.csv") as handle:
        assert {row["stage"] for row in csv.DictReader(handle)} == {"head"}
    assert [s["stage"] for s in config["stages"]] == ["head"]
    evaluated = CliRunner().invoke(app, ["evaluate", str(run)])
    assert evaluated.exit_code == 0 and choice["line"] in evaluated.output, evaluated.output
    as_json = CliRunner().invoke(app, ["evaluate", str(run), "--json"])
    assert json.loads(as_json.output)["training"]["stage_choice"]["final_model"] == "head"


def test_a_distributed_run_says_it_skips_the_check(monkeypatch):
    from transfer.engine import train as train_module

    class Distributed:
        kind = "multi_worker"

    said = []
    monkeypatch.setattr(train_module, "say", lambda verbose, line: said.append(line))
    data = _split()
    recipe, choice = train_module._checked_stages(data, Recipe(), Recipe(), CLASSIFY, Distributed(), 1, True)
    assert recipe == Recipe() and choice is None
    assert said and "Fine-tune check skipped" in said[0]
