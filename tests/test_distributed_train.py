"""`transfer train` on two worker processes (MultiWorkerMirroredStrategy over localhost, CPU)
produces one normal run folder, written by the chief alone."""

import csv
import json
import os
import socket
import subprocess
import sys

import pytest

from transfer.cli.demo import make_shapes_dataset


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start_workers(tmp_path, train_args):
    """Two ``transfer train *train_args`` processes, a TF_CONFIG cluster of two workers on localhost
    (worker 0 the chief); their temporary folders go under ``tmp_path``."""
    cluster = [f"localhost:{port}" for port in free_ports(2)]
    processes = []
    for index in range(2):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TMPDIR": str(tmp_path),
               "TF_CONFIG": json.dumps({"cluster": {"worker": cluster}, "task": {"type": "worker", "index": index}})}
        command = [sys.executable, "-m", "transfer", "train", *train_args]
        processes.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True))
    return processes


def train_on_workers(tmp_path, train_args, timeout=400):
    """``start_workers``, waited for; each one's ``(stdout, stderr)``, both checked to exit 0."""
    processes = start_workers(tmp_path, train_args)
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=timeout))
    finally:
        for process in processes:
            process.kill()
    for process, (out, err) in zip(processes, outputs):
        assert process.returncode == 0, out[-2000:] + err[-3000:]
    return outputs


@pytest.mark.slow  # two TensorFlow processes, ~30 s; tests/test_distribute.py covers the library fast
def test_two_workers_train_one_run_folder(tmp_path):
    data = make_shapes_dataset(tmp_path / "shapes", train_per_class=6, val_per_class=3, size=32)
    recipe = tmp_path / "recipe.toml"
    recipe.write_text('batch_size = 8\n[[stages]]\nname = "head"\ntrainable = "head"\nepochs = 1\n'
                      '[[stages]]\nname = "all"\ntrainable = "all"\nepochs = 2\n')
    run_dir = tmp_path / "run"
    # Both get the same --out, as on machines sharing a file system: only the chief may write it.
    outputs = train_on_workers(tmp_path, ["--data", str(data), "--weights", "none", "--image-size", "32",
                                          "--recipe", str(recipe), "--out", str(run_dir)])
    chief_out, worker_out = outputs[0][0], outputs[1][0]
    assert "MultiWorkerMirroredStrategy: 2 workers x 1 replica, this is worker 0 (chief)" in chief_out
    assert "Worker 1 finished; the chief wrote the run folder." in worker_out

    config = json.loads((run_dir / "run.json").read_text())
    assert config["status"] == "done"
    rows = list(csv.DictReader(open(run_dir / "history.csv")))
    assert [(r["epoch"], r["stage"]) for r in rows] == [("1", "head"), ("2", "all"), ("3", "all")]
    assert (run_dir / "checkpoints" / "best.keras").is_file()
    assert json.loads((run_dir / "metrics.json").read_text())["num_images"] == 9
    # The worker's own files went to a temporary folder that it removed.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recipe.toml", "run", "shapes"]
