"""The run's honest summary: best and last epoch, and stages that lost ground (transfer.summary)."""

import json

import pytest
from typer.testing import CliRunner

from transfer.cli import app
from transfer.recipe import Recipe, Stage
from transfer.summary import final_line, stage_regression, stage_summaries, training_text

HISTORY = [
    {"epoch": 1, "stage": "head", "val_accuracy": 0.60},
    {"epoch": 2, "stage": "head", "val_accuracy": 0.67},
    {"epoch": 3, "stage": "finetune", "val_accuracy": 0.55},
    {"epoch": 4, "stage": "finetune", "val_accuracy": 0.62},
]


def test_a_stage_that_lost_ground_is_named_with_its_numbers():
    note = stage_regression(HISTORY, "finetune", "val_accuracy", next_lr=1e-3)
    assert "'finetune' ended at val accuracy 0.6200, below the 0.6700 of stage 'head' (epoch 2)" in note
    assert "learning_rate" in note and "0.00033" in note
    better = HISTORY[:3] + [{"epoch": 4, "stage": "finetune", "val_accuracy": 0.70}]
    assert stage_regression(better, "finetune", "val_accuracy", next_lr=1e-3) is None
    assert stage_regression(HISTORY[:2], "head", "val_accuracy", next_lr=1e-3) is None


def test_stage_summaries_and_final_line_give_best_and_last():
    stages = stage_summaries(HISTORY, "val_accuracy")
    assert [(s["stage"], s["epochs"], s["best_epoch"], s["last"]) for s in stages] == [
        ("head", 2, 2, 0.67), ("finetune", 2, 4, 0.62)]
    line = final_line(HISTORY, "val_accuracy", 2, "runs/x")
    assert line == "Best epoch 2 ('head'): val accuracy 0.6700; last epoch 4: 0.6200. Run saved in runs/x"


@pytest.mark.slow  # ~75 s: a real three-stage training
def test_a_run_records_best_and_last_epoch_and_its_notes(tmp_path):
    from transfer.data import load_data
    from transfer.demo import make_shapes_dataset
    from transfer.train import train

    shapes = make_shapes_dataset(tmp_path / "shapes", train_per_class=4, val_per_class=2, size=32)
    recipe = Recipe(stages=(Stage("head", "head", 1e-3, 1), Stage("ft", "all", 1e-3, 2, backbone_lr_scale=0.1)),
                    batch_size=4, ema_epochs=1.0)
    result = train(load_data(shapes), tmp_path / "run", weights=None, image_size=32, recipe=recipe, verbose=0)
    config = json.loads((result.run_dir / "run.json").read_text())
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert config["last_epoch"] == metrics["last_epoch"] == 3
    assert [s["stage"] for s in config["stages"]] == ["head", "ft"]
    assert config["best_value"] == max(s["best"] for s in config["stages"])
    ft = config["stages"][1]
    lost = ft["last"] < config["stages"][0]["best"]
    assert bool(config["notes"]) == lost

    text = CliRunner().invoke(app, ["evaluate", str(result.run_dir)])
    assert text.exit_code == 0, text.output
    assert f"Checkpoint: best epoch {config['best_epoch']} of 3" in text.output
    as_json = CliRunner().invoke(app, ["evaluate", str(result.run_dir), "--json"])
    training = json.loads(as_json.output)["training"]
    assert (training["best_epoch"], training["last_epoch"]) == (config["best_epoch"], 3)


def test_evaluate_text_names_the_lost_ground():
    config = {"monitor": "val_accuracy", "best_epoch": 2, "best_value": 0.67, "last_epoch": 4,
              "last_value": 0.62, "notes": [stage_regression(HISTORY, "finetune", "val_accuracy", next_lr=1e-3)]}
    lines = training_text(config).splitlines()
    assert lines[0] == "Checkpoint: best epoch 2 of 4 (val accuracy 0.6700); last epoch: 0.6200"
    assert lines[1].startswith("Stage 'finetune' ended at val accuracy 0.6200")
    assert training_text({"best_epoch": 3}) == ""  # runs from before the record say nothing


def test_a_loss_monitor_counts_lower_as_better():
    rows = [{"epoch": 1, "stage": "head", "val_loss": 1.9}, {"epoch": 2, "stage": "head", "val_loss": 1.5},
            {"epoch": 3, "stage": "finetune", "val_loss": 1.1}]
    assert stage_summaries(rows, "val_loss", "min")[0]["best_epoch"] == 2
    assert stage_regression(rows, "finetune", "val_loss", next_lr=1e-3, mode="min") is None
    worse = rows[:2] + [{"epoch": 3, "stage": "finetune", "val_loss": 1.7}]
    assert "above the 1.5000" in stage_regression(worse, "finetune", "val_loss", next_lr=1e-3, mode="min")
