"""`transfer demo`: offline it trains from scratch and learns; reruns get a new folder; one short fallback line."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import transfer.cli.demo as demo
from transfer.cli.main import app

REPO = Path(__file__).resolve().parents[1]


def offline_env(tmp_path: Path) -> dict:
    """An environment whose Keras cache is an empty folder, so no ImageNet weights are found."""
    keras_home = tmp_path / "keras-home"
    (keras_home / "models").mkdir(parents=True, exist_ok=True)
    return {**os.environ, "KERAS_HOME": str(keras_home), "TF_CPP_MIN_LOG_LEVEL": "3"}


def check_fallback_line(line: str) -> None:
    assert "\n" not in line and len(line) <= 200, line
    assert "--weights none" in line and "transfer weights import mobilenet_2_5_224_tf_no_top.h5" in line, line
    assert "weights=None" not in line, line


def test_demo_answers_say_whether_they_are_right():
    from transfer.cli.demo import demo_answer_text

    assert demo_answer_text({"predictions": [{"class": "square", "score": 0.7321}], "true_class": "circle"}) == \
        "square 0.732 (wrong: it is a circle)"
    assert demo_answer_text({"predictions": [{"class": "circle", "score": 0.99}], "true_class": "circle"}) == \
        "circle 0.990 (right)"
    assert demo_answer_text({"error": "File not found: 'x.png'.", "true_class": "circle"}) == "File not found: 'x.png'."


def test_fallback_line_is_one_short_line_in_cli_spelling():
    check_fallback_line(demo.imagenet_fallback_line(demo.DEMO_BACKBONE, RuntimeError("offline")))


def test_new_demo_dir_never_reuses_a_folder(tmp_path):
    first = demo.new_demo_dir(tmp_path)
    assert re.fullmatch(r"demo-\d{8}-\d{6}", first.name), first
    first.mkdir()
    second = demo.new_demo_dir(tmp_path)
    assert second != first and not second.exists()


def test_demo_settings_from_scratch_train_everything():
    backbone, recipe, size = demo.demo_settings(pretrained=False)
    assert backbone == demo.SCRATCH_BACKBONE and size == demo.SCRATCH_IMAGE_SIZE
    assert [s.trainable for s in recipe.stages] == ["all"]
    backbone, recipe, size = demo.demo_settings(pretrained=True)
    assert backbone == demo.DEMO_BACKBONE and recipe.stages[0].trainable == "head"


def test_scratch_data_validates_on_the_committed_images(tmp_path):
    data = demo.find_demo_data()
    assert data is not None
    root = demo.scratch_data(tmp_path / "drawn", data, per_class=2)
    assert sorted(p.name for p in (root / "train").iterdir()) == sorted(demo.SHAPES)
    assert len(list((root / "train").glob("*/*.png"))) == 2 * len(demo.SHAPES)
    committed = sorted(p.relative_to(data / "val") for p in (data / "val").glob("*/*.png"))
    assert sorted(p.relative_to(root / "val") for p in (root / "val").glob("*/*.png")) == committed


@pytest.fixture
def fake_demo(monkeypatch):
    """run_demo replaced by a stand-in that writes what the real one writes, instantly."""
    calls = []

    def fake_run_demo(out, *, weights="imagenet", verbose=1):
        out = Path(out)
        (out / "run").mkdir(parents=True)
        (out / "run" / "run.json").write_text("{}")
        (out / "export").mkdir()
        calls.append(out)
        return {"weights": "random", "backbone": demo.SCRATCH_BACKBONE, "image_size": 64, "recipe_text": "all",
                "data": out, "run": out / "run", "evaluation": out / "run" / "evaluation", "accuracy": 1.0,
                "export": out / "export", "predictions": [], "seconds": 1.0}

    monkeypatch.setattr(demo, "run_demo", fake_run_demo)
    return calls


def test_demo_reruns_into_a_new_folder_and_refuses_to_clobber(fake_demo, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    for _ in range(2):
        result = runner.invoke(app, ["demo"])
        assert result.exit_code == 0, result.output
    assert len(set(fake_demo)) == 2 and all(p.parent == Path("runs") for p in fake_demo), fake_demo
    assert all(re.fullmatch(r"demo-\d{8}-\d{6}(-\d+)?", p.name) for p in fake_demo)

    result = runner.invoke(app, ["demo", "--out", str(fake_demo[0])])
    assert result.exit_code == 2 and "already holds a demo run" in result.output and "--overwrite" in result.output
    keep = fake_demo[0] / "notes.txt"
    keep.write_text("mine")
    result = runner.invoke(app, ["demo", "--out", str(fake_demo[0]), "--overwrite"])
    assert result.exit_code == 0, result.output
    assert keep.read_text() == "mine"  # --overwrite replaces only what the demo writes


def test_default_demo_folder_is_git_ignored():
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    result = subprocess.run(["git", "check-ignore", "-q", "runs/demo-20250101-000000/run/run.json"], cwd=REPO)
    assert result.returncode == 0, "runs/ (the demo's default output) is not in .gitignore"


def test_run_demo_falls_back_in_one_line(tmp_path, monkeypatch, capsys):
    """No weights to be had: one line (Keras's download message swallowed), then from scratch on drawn shapes."""
    import transfer.engine.train
    import transfer.backbones.weights
    from transfer.core.errors import TransferError

    def no_weights(spec, weights, image_size):
        print("Downloading data from https://storage.googleapis.com/...")
        raise TransferError("Could not download the ImageNet weights.", fix="... or pass weights=None ...")

    class Stop(Exception):
        pass

    seen = {}

    def fake_train(split, run_dir, **kwargs):
        seen.update(kwargs, num_train=len(split.train), num_val=len(split.val))
        raise Stop

    monkeypatch.setattr(transfer.backbones.weights, "build_backbone", no_weights)
    monkeypatch.setattr(transfer.engine.train, "train", fake_train)
    with pytest.raises(Stop):
        demo.run_demo(tmp_path / "out", drawn_per_class=4)
    out = capsys.readouterr().out
    assert "Downloading" not in out and "weights=None" not in out, out
    fallback = [line for line in out.splitlines() if line.startswith("No ImageNet weights")]
    assert len(fallback) == 1, out
    check_fallback_line(fallback[0])
    assert seen["weights"] is None and seen["backbone"] == demo.SCRATCH_BACKBONE
    assert seen["image_size"] == demo.SCRATCH_IMAGE_SIZE and seen["num_train"] == 4 * len(demo.SHAPES)
    assert seen["num_val"] == demo.DEMO_VAL_PER_CLASS * len(demo.SHAPES)


def run_offline_demo(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """The real `transfer demo` CLI, in tmp_path, with an empty Keras cache."""
    return subprocess.run([sys.executable, "-m", "transfer", "demo", *args], cwd=tmp_path, env=offline_env(tmp_path),
                          capture_output=True, text=True, timeout=900)


@pytest.mark.slow  # ~3 min: three offline demos, each in a fresh process
def test_offline_demo_learns_the_shapes_the_same_way_each_time(tmp_path):
    """No cached ImageNet weights: one short line says so; training from scratch reaches >= 0.95 on
    three runs in fresh processes, each showing the same examples with the same answers, each
    saying whether it is right."""
    answers = []
    for attempt in range(3):
        home = tmp_path / f"try{attempt}"
        home.mkdir()
        result = run_offline_demo(home)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        out = result.stdout
        fallback = [line for line in out.splitlines() if line.startswith("No ImageNet weights")]
        assert len(fallback) == 1, out
        check_fallback_line(fallback[0])
        assert "weights=None" not in out + result.stderr and "Downloading data from" not in out
        accuracy = float(re.search(r"^Evaluation: .*\(accuracy ([\d.]+)\)$", out, re.M).group(1))
        assert accuracy >= 0.95, out[-3000:]
        predicted = re.findall(r"^Predicted: +(.*)$", out, re.M)
        assert [Path(line.split(":")[0]).parent.name for line in predicted] == ["circle", "square", "triangle"]
        assert all(re.search(r" [\d.]+ \((right|wrong: it is a \w+)\)$", line) for line in predicted), predicted
        # The same files (by class folder and name: an installed package draws its own data/ per run)
        # with the same answers.
        answers.append(["/".join(Path(line.split(": ")[0]).parts[-2:]) + ": " + line.split(": ", 1)[1]
                        for line in predicted])
    assert answers[0] == answers[1] == answers[2], answers
    tmp_path = tmp_path / "try0"
    runs = list((tmp_path / "runs").glob("demo-*"))
    assert len(runs) == 1 and (runs[0] / "export" / "saved_model.pb").exists()
    # A second run without --out goes to a new folder; with that --out it refuses (no retraining needed to see it).
    again = run_offline_demo(tmp_path, "--out", str(runs[0]))
    assert again.returncode == 2 and "--overwrite" in again.stdout + again.stderr


@pytest.mark.slow
def test_offline_demo_one_epoch(tmp_path):
    """The offline path end to end with one epoch (80 s): fallback line, drawn data, run, export, predictions."""
    code = ("import transfer.cli.demo as d; s = d.run_demo('out', verbose=2, epochs=1, drawn_per_class=40); "
            "print('RESULT', s['weights'], s['backbone'], len(s['predictions']), s['export'])")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=offline_env(tmp_path),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"RESULT random {demo.SCRATCH_BACKBONE} 3" in result.stdout, result.stdout
    fallback = [line for line in result.stdout.splitlines() if line.startswith("No ImageNet weights")]
    assert len(fallback) == 1, result.stdout
    check_fallback_line(fallback[0])
    assert (tmp_path / "out" / "drawn-shapes" / "val").is_dir()
