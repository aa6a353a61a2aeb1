"""Processes killed (SIGKILL) while writing checkpoints and exports leave the old artifact or the new one.

Two kinds of kills:

- deterministic: the child process kills itself at a chosen step of
  ``transfer.core.atomic`` (mid-write, before the rename, between the two renames
  of a folder replacement, after the exchange), using plain files and a stand-in
  model so no TensorFlow is needed (fast);
- timed: a child that loops writing files and folders, and a real TensorFlow
  child that saves Keras checkpoints and SavedModel exports, are killed from
  outside at several moments.

After each kill the destination is either absent (never written), the old
complete artifact or the new complete one; the leftovers are recognisable
staging entries that ``remove_stale`` (run by every later write) cleans up.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from transfer.core import atomic

REPO_ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")

# The child: writes version N of a file, a folder or a .keras file, optionally killing itself at a step.
CHILD = r"""
import hashlib, json, os, signal, sys
from pathlib import Path
import transfer.core.atomic as atomic
import transfer.core.atomic_folder as atomic_folder

mode, target, version, kill_at = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]

def die(*_, **__):
    os.kill(os.getpid(), signal.SIGKILL)

def payload(n):
    body = (f"version {n}\n".encode() * 20000)
    return hashlib.sha256(body).hexdigest().encode() + b"\n" + body

if kill_at == "fsync":
    atomic.os.fsync = die                          # data written, not yet renamed into place
elif kill_at == "replace":
    atomic.os.replace = die
elif kill_at == "rmtree":
    atomic.shutil.rmtree = die                     # after the exchange, before the old folder is deleted
elif kill_at == "between-renames":
    atomic_folder._exchange = lambda a, b: False          # the portable path: two renames
    real_rename = os.rename
    calls = []
    def rename(a, b):
        calls.append(a)
        if len(calls) == 2:
            die()
        real_rename(a, b)
    atomic.os.rename = rename

def write_folder(folder, n, kill_midway):
    manifest = {}
    for i in range(6):
        data = f"file {i} of version {n}\n".encode() * 5000
        (folder / f"part{i}.bin").write_bytes(data)
        manifest[f"part{i}.bin"] = hashlib.sha256(data).hexdigest()
        if kill_midway and i == 2:
            die()
    (folder / "MANIFEST.json").write_text(json.dumps({"version": n, "files": manifest}))

class StandInModel:
    # What atomic_save_keras needs of a Keras model: save(path) writing the file.
    def save(self, path):
        data = payload(version)
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])
            f.flush()
            if kill_at == "mid-save":
                die()
            f.write(data[len(data) // 2 :])

if mode == "file":
    atomic.atomic_write_bytes(target, payload(version))
elif mode == "dir":
    with atomic_folder.atomic_directory(target, overwrite=True) as staging:
        write_folder(staging, version, kill_at == "mid-write")
elif mode == "keras":
    atomic.atomic_save_keras(StandInModel(), target)
elif mode == "loop":
    while True:
        version += 1
        atomic.atomic_write_bytes(target / "data.bin", payload(version))
        with atomic_folder.atomic_directory(target / "export", overwrite=True) as staging:
            write_folder(staging, version, False)
print("done")
"""


def run_child(mode: str, target: Path, version: int, kill_at: str = "none") -> int:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run([sys.executable, "-c", CHILD, mode, str(target), str(version), kill_at],
                          env=env, capture_output=True, text=True, timeout=60)
    return proc.returncode


def file_version(path: Path) -> int | None:
    """The version of a complete payload file; fails the test on a torn one."""
    if not path.exists():
        return None
    digest, body = path.read_bytes().split(b"\n", 1)
    assert hashlib.sha256(body).hexdigest().encode() == digest, f"{path} is torn"
    return int(body.split(b"\n", 1)[0].split()[1])


def folder_version(path: Path) -> int | None:
    """The version of a complete folder; fails the test on a partial or mixed one."""
    if not path.exists():
        return None
    manifest = json.loads((path / "MANIFEST.json").read_text())
    assert sorted(p.name for p in path.iterdir()) == sorted([*manifest["files"], "MANIFEST.json"]), path
    for name, digest in manifest["files"].items():
        data = (path / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest, f"{path / name} is torn"
        assert f"of version {manifest['version']}\n".encode() in data, f"{path} mixes versions"
    return manifest["version"]


@pytest.mark.parametrize("mode, kill_at, expected", [
    ("file", "fsync", 1),           # killed after writing the staging file: old file stays
    ("file", "replace", 1),
    ("keras", "mid-save", 1),       # killed while the model writes its staging file
    ("keras", "replace", 1),
    ("dir", "mid-write", 1),        # killed while the export folder is half written
    ("dir", "rmtree", 2),           # killed after the atomic exchange: the new folder is in place
    ("dir", "between-renames", 1),  # portable path, killed with the old folder aside: put back
])
def test_kill_at_each_step_leaves_old_or_new(tmp_path, mode, kill_at, expected):
    target = tmp_path / ("best.keras" if mode == "keras" else "artifact")
    version_of = folder_version if mode == "dir" else file_version
    assert run_child(mode, target, 1) == 0 and version_of(target) == 1

    assert run_child(mode, target, 2, kill_at) == -signal.SIGKILL
    leftovers = atomic.staging_entries(tmp_path)
    assert leftovers, "a killed write leaves a recognisable staging entry"
    assert all(".tmp-" in p.name or ".old-" in p.name for p in leftovers)

    atomic.remove_stale(tmp_path)  # what the next write does first (the killed PID is gone)
    assert version_of(target) == expected
    assert atomic.staging_entries(tmp_path) == []
    assert run_child(mode, target, 3) == 0 and version_of(target) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]


def test_remove_stale_leaves_live_writers_alone(tmp_path):
    live = tmp_path / f".export.tmp-{os.getpid()}-0123456789ab"
    live.mkdir()
    assert atomic.remove_stale(tmp_path) == [] and live.is_dir()
    dead_pid = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True).stdout.strip()
    dead = tmp_path / f".export.tmp-{dead_pid}-0123456789ab"
    dead.mkdir()
    (tmp_path / "unrelated.tmp-1-file").write_text("not ours")
    assert atomic.remove_stale(tmp_path) == [dead]
    assert live.is_dir() and (tmp_path / "unrelated.tmp-1-file").exists()


@pytest.mark.parametrize("delay", [0.0, 0.03, 0.07, 0.12, 0.2, 0.35])
def test_timed_kills_of_a_writing_loop(tmp_path, delay):
    """A child rewriting a file and a folder as fast as it can, killed at different moments."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, "loop", str(tmp_path), "0", "none"], env=env)
    started = time.monotonic()
    while not (tmp_path / "export").exists() and time.monotonic() - started < 30:
        time.sleep(0.005)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    file_v, folder_v = file_version(tmp_path / "data.bin"), folder_version(tmp_path / "export")
    assert file_v is not None and folder_v is not None
    assert folder_v in (file_v - 1, file_v)  # the loop writes the file, then the folder
    atomic.remove_stale(tmp_path)
    assert atomic.staging_entries(tmp_path) == []
    assert folder_version(tmp_path / "export") == folder_v


TF_CHILD = r"""
import sys, time
from pathlib import Path
import numpy as np
from tests.test_export_predict import CLASSES, SIZE, tiny_classifier
from transfer.core.atomic import atomic_save_keras
from transfer.serving.export import export_model

out = Path(sys.argv[1])
model = tiny_classifier()
for round in range(1, 100):
    model.get_layer("scores").kernel.assign(model.get_layer("scores").kernel * 1.01)
    print(f"begin checkpoint {round}", flush=True)
    atomic_save_keras(model, out / "best.keras")
    print(f"begin export {round}", flush=True)
    export_model(model, out / "export", class_names=CLASSES, image_size=SIZE, overwrite=True,
                 metadata={"round": round})
    print(f"exported {round}", flush=True)
"""


@pytest.mark.parametrize("wait_for, delay", [
    ("begin export 2", 0.4),  # inside SavedModel writing (or its parity check) of an overwrite
    pytest.param("begin checkpoint 2", 0.01, marks=pytest.mark.slow),  # inside a .keras save
])
def test_killing_real_checkpoint_and_export_writes(tmp_path, wait_for, delay):
    """A TensorFlow child killed while it overwrites a checkpoint or an export: both still load."""
    import keras
    from PIL import Image

    import transfer.backbones.layers  # noqa: F401  registers the preprocessing layer for load_model
    from transfer.tasks.classify.reader import ExportedClassifier

    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen([sys.executable, "-c", TF_CHILD, str(tmp_path)], env=env, cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    seen = []
    for line in proc.stdout:
        seen.append(line.strip())
        if seen[-1] == wait_for:
            break
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert wait_for in seen, seen

    clf = ExportedClassifier.load(tmp_path / "export")  # old or new, complete either way
    assert clf.metadata["round"] in (1, 2)
    image = tmp_path / "photo.png"
    Image.new("RGB", (20, 20), (200, 30, 30)).save(image)
    (result,) = clf.predict_files([image], top_k=1)
    assert "predictions" in result, result
    keras.saving.load_model(tmp_path / "best.keras", compile=False)
    atomic.remove_stale(tmp_path)
    assert atomic.staging_entries(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.keras", "export", "photo.png"]
