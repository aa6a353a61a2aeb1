"""--task segment end to end through the real CLI, each command in a fresh process:
train -> evaluate --json -> export -> predict (--out, --draw, --json) -> saved_model_cli run.

The generated data has a red but unlabelled band (mask value 3, --ignore-index 3): the
evaluation must count only labelled pixels, and agree with a count made here from the masks
the export wrote.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.segmentfactory import CLASS_NAMES, VOID, write_mask_folder

VAL_SIZES = [(64, 48), (80, 64), (50, 70), (96, 64), (64, 64), (72, 40)]


def _transfer(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([sys.executable, "-m", "transfer", *args], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, f"transfer {' '.join(args)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.mark.slow  # about 2 minutes on two shared CPU cores (five fresh processes, the export's parity checks)
def test_train_evaluate_export_predict_and_serve_in_fresh_processes(tmp_path):
    write_mask_folder(tmp_path / "train", 24, size=(64, 64), void=True)
    write_mask_folder(tmp_path / "val", len(VAL_SIZES), start=100, sizes=VAL_SIZES, void=True)
    run, export = tmp_path / "run", tmp_path / "export"
    trained = _transfer("train", "--task", "segment", "--data", "train", "--val-data", "val", "--ignore-index",
                        str(VOID), "--backbone", "smallcnn", "--weights", "none", "--image-size", "64", "--epochs",
                        "1", "--decoder-stride", "2", "--out", "run", cwd=tmp_path)
    assert "mask value 3 ignored" in trained.stdout
    config = json.loads((run / "run.json").read_text())
    assert config["task"] == "segment" and config["ignore_index"] == VOID and config["decoder"] == "unet"
    assert config["decoder_stride"] == 2 and "Decoder unet to stride 2" in trained.stdout
    assert config["class_names"] == list(CLASS_NAMES) and config["monitor"] == "val_iou"
    assert config["status"] == "done"

    evaluated = _transfer("evaluate", "run", "--json", cwd=tmp_path)
    summary = json.loads(evaluated.stdout[evaluated.stdout.index("{"):])
    assert set(summary["per_class_iou"]) == set(CLASS_NAMES)
    assert (run / "evaluation" / "confusion_matrix.png").is_file() and (run / "evaluation" / "per_class_iou.png").is_file()

    _transfer("export", "run", "--out", "export", cwd=tmp_path)
    meta = json.loads((export / "assets" / "transfer.json").read_text())
    assert meta["task"] == "segmentation" and "serving_probabilities" in meta["signatures"]
    assert meta["decoder_stride"] == 2

    files = sorted((tmp_path / "val" / "images").glob("*.png"))
    predicted = _transfer("predict", "export", *map(str, files), "--out", "masks", "--draw", "drawn", "--json",
                          cwd=tmp_path)
    answer = json.loads(predicted.stdout[predicted.stdout.index("{"):])
    truths, guesses = [], []
    for result, file in zip(answer["results"], files):
        mask = np.asarray(Image.open(tmp_path / result["mask_file"]))  # relative to cwd
        truth = np.asarray(Image.open(tmp_path / "val" / "masks" / file.name))
        assert mask.shape == truth.shape == (result["height"], result["width"])  # the original size
        assert Image.open(tmp_path / result["drawn"]).size == (truth.shape[1], truth.shape[0])
        assert set(np.unique(mask)) <= {0, 1, 2}
        truths.append(truth.ravel())
        guesses.append(mask.ravel())
    truth, guess = np.concatenate(truths), np.concatenate(guesses)
    labelled = truth != VOID
    assert (~labelled).mean() > 0.1  # the unlabelled band is big enough to matter
    # evaluate counted the labelled pixels only, at the original resolution, as predict answers them.
    assert summary["num_pixels"] == int(labelled.sum())
    assert summary["pixel_accuracy"] == pytest.approx(float((guess[labelled] == truth[labelled]).mean()), abs=2e-3)
    confusion = np.array(summary["confusion_matrix"]["matrix"])
    assert confusion.sum(axis=1).tolist() == [int((truth == c).sum()) for c in range(3)]
    # Mean IoU and Dice are the matrix's, over the classes in truth or prediction.
    tp, rows, columns = np.diag(confusion), confusion.sum(axis=1), confusion.sum(axis=0)
    present = rows + columns > 0
    assert summary["mean_iou"] == pytest.approx(np.mean((tp / (rows + columns - tp))[present]), abs=1e-4)
    assert summary["dice"] == pytest.approx(np.mean((2 * tp / (rows + columns))[present]), abs=1e-4)

    # A graph-mode loader that knows nothing of transfer: saved_model_cli, on one PNG.
    cli = shutil.which("saved_model_cli", path=str(Path(sys.executable).parent)) or shutil.which("saved_model_cli")
    if cli is None:
        pytest.skip("saved_model_cli is not installed")
    image = np.asarray(Image.open(files[1]).convert("RGB"))[None]
    np.save(tmp_path / "image.npy", image)
    served = subprocess.run([cli, "run", "--dir", str(export), "--tag_set", "serve", "--signature_def",
                             "serving_images", "--inputs", f"images={tmp_path / 'image.npy'}", "--outdir",
                             str(tmp_path / "served")], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""})
    assert served.returncode == 0, served.stderr[-3000:]
    served_mask = np.load(tmp_path / "served" / "mask.npy")
    assert served_mask.shape == (1,) + image.shape[1:3]
    assert np.array_equal(served_mask[0], np.asarray(Image.open(tmp_path / answer["results"][1]["mask_file"])))
