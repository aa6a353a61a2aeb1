"""The committed bad-input corpus through `check-data`, `train`, `export` and `predict`.

``tests/corpus/manifest.json`` (written by ``tests/corpus/make_bad_corpus.py``)
says what each file is and what must happen to it. Through the CLI: no
tracebacks, no crashes, every bad file named, every good file used.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from transfer.cli.main import app

CORPUS = Path(__file__).resolve().parent / "corpus"
MANIFEST = json.loads((CORPUS / "manifest.json").read_text(encoding="utf-8"))
BAD = CORPUS / "bad_dataset"
RECIPE = 'batch_size = 8\naugment = []\n[[stages]]\nname = "head"\ntrainable = "head"\nepochs = 1\n'


def cases(part: str, *expects: str) -> dict[str, dict]:
    return {rel: c for rel, c in MANIFEST[part].items() if c["expect"] in expects}


def invoke(*args: str):
    result = CliRunner().invoke(app, list(args))
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run over the bad folder corpus (the CLI `train` result and its folder)."""
    tmp = tmp_path_factory.mktemp("corpus")
    recipe = tmp / "tiny.toml"
    recipe.write_text(RECIPE)
    run_dir = tmp / "run"
    result = invoke("train", "--data", str(BAD), "--out", str(run_dir), "--backbone", "mobilenet_0.25",
                    "--weights", "none", "--image-size", "32", "--recipe", str(recipe))
    return result, run_dir


def test_corpus_is_complete_small_and_matches_its_generator(tmp_path):
    bad = {k: v for part in MANIFEST for k, v in MANIFEST[part].items() if v["expect"] != "use" or v["code"]}
    assert len(bad) >= 30
    size = sum(p.stat().st_size for p in CORPUS.rglob("*") if p.is_file())
    assert size < 1024 * 1024
    for rel, case in MANIFEST["bad_dataset"].items():
        assert (BAD / rel).exists(), rel
    # The generator is deterministic in what it writes (names and cases; bytes may vary with PIL versions).
    spec = importlib.util.spec_from_file_location("make_bad_corpus", CORPUS / "make_bad_corpus.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.build_bad_dataset(tmp_path / "bad") == MANIFEST["bad_dataset"]
    assert module.build_bad_labels(tmp_path / "labels") == MANIFEST["bad_labels"]
    listed = sorted(str(p.relative_to(tmp_path / "bad")) for p in (tmp_path / "bad").rglob("*") if p.is_file())
    assert listed == sorted(str(p.relative_to(BAD)) for p in BAD.rglob("*") if p.is_file())


def test_check_data_names_every_bad_file_with_its_problem():
    result = invoke("check-data", str(BAD), "--image-size", "64", "--json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.output)
    found: dict[str, set] = {}
    for f in report["findings"]:
        for path in filter(None, (f["path"], f["related"])):
            action = f["action"] if path == f["path"] else None  # the other file of a duplicate pair: no action
            found.setdefault(os.path.relpath(path, BAD), set()).add((f["code"], action))
    for rel, case in MANIFEST["bad_dataset"].items():
        codes = {code for code, _ in found.get(rel, ())}
        if case["expect"] == "skip":
            assert (case["code"], "skip") in found.get(rel, ()), (rel, found.get(rel))
        elif case["code"] is not None:
            assert case["code"] in codes, (rel, case, found.get(rel))
            assert not any(action in ("skip", "stop") for _, action in found.get(rel, ())), rel
        elif case["expect"] == "use":
            assert not any(action in ("skip", "stop") for _, action in found.get(rel, ())), rel
    assert report["usable"] == len(cases("bad_dataset", "use"))

    table = invoke("check-data", str(BAD), "--image-size", "64").output
    for rel in cases("bad_dataset", "skip", "ignore"):
        assert rel in table, rel


def test_train_skips_each_bad_file_by_name_and_uses_every_good_one(trained):
    result, run_dir = trained
    assert result.exit_code == 0, result.output
    assert "Data check:" in result.output and "Best val accuracy" in result.output
    for rel in cases("bad_dataset", "skip"):
        assert f"Skipping {BAD / rel} (" in result.output, rel
    config = json.loads((run_dir / "run.json").read_text())
    assert config["num_train"] + config["num_val"] == len(cases("bad_dataset", "use"))
    used = {r["path"] for r in json.loads((run_dir / "split.json").read_text())["val"]}
    assert used == {str(BAD / rel) for rel in cases("bad_dataset", "use") if rel.startswith("val/")}


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """A small export (exporting the trained MobileNet takes ~20 s here; what it answers does not matter)."""
    from tests.test_export_predict import CLASSES, SIZE, tiny_classifier
    from transfer.serving.export import export_model

    out = tmp_path_factory.mktemp("export") / "tiny"
    return export_model(tiny_classifier(), out, class_names=CLASSES, image_size=SIZE)


def test_predict_answers_good_files_and_names_each_bad_one(export):
    files = sorted(MANIFEST["bad_dataset"])
    result = invoke("predict", str(export), *[str(BAD / rel) for rel in files], "--json")
    assert result.exit_code == 1, result.output  # some files failed (each named below); the others answered
    by_file = {os.path.relpath(r["file"], BAD): r for r in json.loads(result.output)["results"]}
    assert sorted(by_file) == files
    for rel, case in MANIFEST["bad_dataset"].items():
        if case["expect"] == "use":
            assert "predictions" in by_file[rel], (rel, by_file[rel])
        else:  # skip, ignore (not an image), silent (.DS_Store)
            assert rel.split("/")[-1] in by_file[rel]["error"], (rel, by_file[rel])
    for rel in ("train/dog/bomb_30000x30000.png", "train/cat/huge_65000x65000.jpg"):
        error = by_file[rel]["error"]
        assert "over the limit of 40 megapixels" in error and "--max-megapixels" in error
    # Only bad inputs: every one named, and exit code 1 (2 is kept for usage errors).
    only_bad = [str(BAD / rel) for rel in cases("bad_dataset", "skip")]
    result = invoke("predict", str(export), *only_bad)
    assert result.exit_code == 1
    assert all(path in result.output for path in only_bad)


def test_csv_corpus_check_data_and_train_name_every_bad_line(tmp_path):
    csv_path = CORPUS / "bad_labels" / "labels.csv"
    result = invoke("check-data", str(csv_path), "--image-size", "64")
    assert result.exit_code == 1
    for key, case in MANIFEST["bad_labels"].items():
        if case["code"] == "truncated":
            assert "images/truncated.jpg" in result.output
        else:
            assert f"{key} " in result.output or f"{key}\n" in result.output, key
            assert case["code"] in result.output
    result = invoke("train", "--data", str(csv_path), "--out", str(tmp_path / "run"), "--weights", "none")
    assert result.exit_code == 2
    for key, case in MANIFEST["bad_labels"].items():
        if case["expect"] == "stop":
            assert f"line {case['line']}:" in result.output, key
    assert "check-data" in result.output and not (tmp_path / "run").exists()


def test_empty_class_folder(tmp_path):
    root = CORPUS / "empty_class_dataset"
    result = invoke("check-data", str(root))
    assert result.exit_code == 1 and "empty_class" in result.output and "bird" in result.output
    result = invoke("train", "--data", str(root), "--out", str(tmp_path / "run"), "--weights", "none")
    assert result.exit_code == 2 and "'bird' (0 images, 1 other files)" in result.output


def test_quarantine_moves_bad_files_aside_and_leaves_a_clean_dataset(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(BAD, data)
    quarantine = tmp_path / "quarantine"
    result = invoke("check-data", str(data), "--quarantine", str(quarantine))
    assert result.exit_code == 0, result.output  # everything that would be skipped is now aside
    skipped = cases("bad_dataset", "skip")
    for rel in skipped:
        assert not (data / rel).exists() and (quarantine / rel).is_file(), rel
    log = json.loads((quarantine / "quarantine.json").read_text())["moved"]
    assert sorted(os.path.relpath(m["to"], quarantine) for m in log) == sorted(skipped)
    assert {m["problem"] for m in log} >= {"truncated", "too_large", "not_image"}
    again = invoke("check-data", str(data), "--json")
    assert again.exit_code == 0 and json.loads(again.output)["usable"] == len(cases("bad_dataset", "use"))
    # Never inside the dataset; never for a CSV (its lines would point at moved files).
    result = invoke("check-data", str(data), "--quarantine", str(data / "q"))
    assert result.exit_code == 2 and "inside the dataset" in result.output
    result = invoke("check-data", str(CORPUS / "bad_labels" / "labels.csv"), "--quarantine", str(tmp_path / "q"))
    assert result.exit_code == 2 and "CSV" in result.output and not (tmp_path / "q").exists()
