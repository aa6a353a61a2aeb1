"""The run's honest summary: best and last epoch, and stages that lost ground (transfer.engine.summary)."""

import json

import pytest
from typer.testing import CliRunner

from transfer.cli.main import app
from transfer.core.recipe import Recipe, Stage
from transfer.engine.summary import final_line, stage_regression, stage_summaries, training_text

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


def test_the_note_counts_images_and_says_when_the_loss_disagrees():
    # busi at 128 px: the fine-tune ended 4 of 156 images under the head stage while its loss fell.
    rows = [{"epoch": 22, "stage": "head", "val_accuracy": 0.7372, "val_loss": 0.7921},
            {"epoch": 30, "stage": "head", "val_accuracy": 0.7308, "val_loss": 0.7837},
            {"epoch": 38, "stage": "finetune", "val_accuracy": 0.7115, "val_loss": 0.7321}]
    note = stage_regression(rows, "finetune", "val_accuracy", next_lr=1e-3, num_val=156)
    assert "below the 0.7372 of stage 'head' (epoch 22), 4 of 156 validation images:" in note
    assert "val loss (0.7321) is below that epoch's (0.7921)" in note and "noise" in note
    assert "learning_rate" not in note
    # A loss that rose too: the gap is real, and the note says what to try.
    worse = rows[:2] + [{"epoch": 38, "stage": "finetune", "val_accuracy": 0.7115, "val_loss": 0.8500}]
    note = stage_regression(worse, "finetune", "val_accuracy", next_lr=1e-3, num_val=156)
    assert "noise" not in note and "Try a lower learning_rate" in note
    # history.csv read back on resume: strings, and an empty cell where no loss was logged.
    as_read = [{k: str(v) for k, v in row.items()} for row in rows]
    as_read[0]["val_loss"] = ""
    assert "Try a lower learning_rate" in stage_regression(as_read, "finetune", "val_accuracy", next_lr=1e-3)
    # Images are counted for accuracy only (a macro F1 gap is not a number of images).
    f1 = [{"epoch": 1, "stage": "head", "val_macro_f1": 0.8}, {"epoch": 2, "stage": "ft", "val_macro_f1": 0.7}]
    assert "validation images" not in stage_regression(f1, "ft", "val_macro_f1", next_lr=1e-3, num_val=50)
    # ... nor is a mAP or IoU against the loss: only accuracy gets the noise reading.
    iou = [{"epoch": 1, "stage": "head", "val_mean_iou": 0.8, "val_loss": 0.5},
           {"epoch": 2, "stage": "ft", "val_mean_iou": 0.7, "val_loss": 0.4}]
    assert "Try a lower learning_rate" in stage_regression(iou, "ft", "val_mean_iou", next_lr=1e-3, num_val=50)


def test_stage_summaries_and_final_line_give_best_and_last():
    stages = stage_summaries(HISTORY, "val_accuracy")
    assert [(s["stage"], s["epochs"], s["best_epoch"], s["last"]) for s in stages] == [
        ("head", 2, 2, 0.67), ("finetune", 2, 4, 0.62)]
    line = final_line(HISTORY, "val_accuracy", 2, "runs/x")
    assert line == "Best epoch 2 ('head'): val accuracy 0.6700; last epoch 4: 0.6200. Run saved in runs/x"


@pytest.mark.slow  # ~75 s: a real three-stage training
def test_a_run_records_best_and_last_epoch_and_its_notes(tmp_path):
    from transfer.data import load_data
    from transfer.cli.demo import make_shapes_dataset
    from transfer.engine.train import train

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


def test_metric_labels_spell_acronyms_as_users_write_them():
    from transfer.engine.summary import metric_label

    assert metric_label("val_iou") == "val IoU"
    assert metric_label("val_box_iou") == "val box IoU"
    assert metric_label("val_macro_f1") == "val macro F1"
    assert metric_label("val_loss") == "val loss"
    rows = [{"epoch": 1, "stage": "head", "val_iou": 0.8}, {"epoch": 2, "stage": "ft", "val_iou": 0.7}]
    assert stage_regression(rows, "ft", "val_iou", next_lr=1e-3).startswith("Stage 'ft' ended at val IoU 0.7000")
