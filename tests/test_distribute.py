"""transfer.engine.distribute: TF_CONFIG validation, strategy choice, dataset sharding,
and one real two-worker MultiWorkerMirroredStrategy run on localhost."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.conftest import REPO_ROOT
from transfer.engine.distribute import Distribution, choose_distribution, distribute_dataset, parse_tf_config
from transfer.core.errors import TransferError


def _tf_config(cluster, task_type="worker", index=0) -> str:
    return json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})


# --- parse_tf_config -------------------------------------------------------------------------


def test_parse_tf_config_workers():
    parsed = parse_tf_config(_tf_config({"worker": ["a:1", "b:1", "c:1"]}, index=2))
    assert parsed == {
        "cluster": {"worker": ["a:1", "b:1", "c:1"]}, "task_type": "worker", "task_index": 2,
        "num_workers": 3, "worker_index": 2, "is_chief": False,
    }
    assert parse_tf_config(_tf_config({"worker": ["a:1", "b:1"]}, index=0))["is_chief"]


def test_parse_tf_config_counts_the_chief_first():
    cluster = {"chief": ["c:1"], "worker": ["a:1", "b:1"]}
    chief = parse_tf_config(_tf_config(cluster, "chief", 0))
    worker = parse_tf_config(_tf_config(cluster, "worker", 0))
    assert (chief["num_workers"], chief["worker_index"], chief["is_chief"]) == (3, 0, True)
    assert (worker["worker_index"], worker["is_chief"]) == (1, False)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        (json.dumps({"task": {"type": "worker", "index": 0}}), 'no "cluster"'),
        (json.dumps({"cluster": {"worker": ["a:1"]}}), 'no "task"'),
        (_tf_config({"worker": ["a:1"], "ps": ["p:1"]}), "'ps' job"),
        (_tf_config({"worker": ["a:1"], "evaluator": ["e:1"]}), "'evaluator' job"),
        (_tf_config({"worker": []}), "non-empty list"),
        (_tf_config({"worker": ["a:1", "no-port"]}), "'no-port', not a \"host:port\""),
        (_tf_config({"worker": ["a:1", "a:1"]}), "more than once"),
        (_tf_config({"chief": ["a:1", "b:1"]}, "chief"), '2 "chief" tasks'),
        (_tf_config({"worker": ["a:1", "b:1"]}, index=2), "index 2 is out of range"),
        (_tf_config({"worker": ["a:1", "b:1"]}, index=-1), "index -1 is out of range"),
        (_tf_config({"worker": ["a:1", "b:1"]}, index="0"), "index '0' is out of range"),
        (_tf_config({"worker": ["a:1", "b:1"]}, task_type="chief"), "task type 'chief' is not a job"),
    ],
)
def test_parse_tf_config_errors_name_tf_config_and_a_fix(text, expected):
    with pytest.raises(TransferError) as caught:
        parse_tf_config(text)
    assert "TF_CONFIG" in caught.value.message
    assert expected in caught.value.message
    assert caught.value.fix


# --- choose_distribution ---------------------------------------------------------------------


def _gpus() -> int:
    import tensorflow as tf

    return len(tf.config.list_physical_devices("GPU"))


def test_auto_without_tf_config_is_none():
    if _gpus() > 1:
        pytest.skip("several GPUs visible: auto picks mirrored")
    dist = choose_distribution("auto", environ={})
    assert (dist.kind, dist.strategy, dist.num_replicas, dist.num_workers, dist.is_chief) == (
        "none", None, 1, 1, True)
    assert dist.describe() == "No distribution strategy: one device"
    with dist.scope():
        pass


def test_auto_with_a_one_task_tf_config_is_not_multi_worker():
    if _gpus() > 1:
        pytest.skip("several GPUs visible: auto picks mirrored")
    environ = {"TF_CONFIG": _tf_config({"worker": ["localhost:1"]})}
    assert choose_distribution("auto", environ=environ).kind == "none"


def test_mirrored_on_this_machine():
    import tensorflow as tf

    dist = choose_distribution("mirrored", environ={})
    assert dist.kind == "mirrored"
    assert isinstance(dist.strategy, tf.distribute.MirroredStrategy)
    assert dist.num_replicas == max(_gpus(), 1)
    assert (dist.num_workers, dist.worker_index, dist.is_chief) == (1, 0, True)
    assert dist.describe() == f"MirroredStrategy: {dist.num_replicas} replica" + (
        "s" if dist.num_replicas > 1 else "") + " on this machine"
    with dist.scope():
        assert tf.distribute.get_strategy() is dist.strategy


def test_mirrored_trains_a_keras_model_in_scope():
    import keras
    import tensorflow as tf

    dist = choose_distribution("mirrored", environ={})
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (20, 8, 8, 3), dtype=np.uint8)
    targets = np.eye(2, dtype=np.float32)[rng.integers(0, 2, 20)]
    ds = tf.data.Dataset.from_tensor_slices((images, targets)).batch(8)
    ds = distribute_dataset(ds, dist, batch_size=8, num_examples=20)
    with dist.scope():
        inputs = keras.Input((8, 8, 3), dtype="uint8")
        x = keras.layers.Rescaling(1 / 255)(inputs)
        x = keras.layers.BatchNormalization(trainable=False)(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
        model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(ds, validation_data=ds, epochs=1, verbose=0, class_weight={0: 1.0, 1: 2.0})
    assert set(history.history) == {"accuracy", "loss", "val_accuracy", "val_loss"}


def test_distribution_errors():
    with pytest.raises(TransferError, match="Unknown distribution 'gpus'"):
        choose_distribution("gpus", environ={})
    with pytest.raises(TransferError, match="needs TF_CONFIG"):
        choose_distribution("multi_worker", environ={})
    with pytest.raises(TransferError, match="TF_CONFIG is not valid JSON"):
        choose_distribution("auto", environ={"TF_CONFIG": "{"})


def test_multi_worker_after_other_tensorflow_ops_says_to_choose_first():
    import tensorflow as tf

    tf.constant(1.0) + 1.0  # TensorFlow has started in this process
    environ = {"TF_CONFIG": _tf_config({"worker": ["localhost:1", "localhost:2"]})}
    with pytest.raises(TransferError) as caught:
        choose_distribution("auto", environ=environ)
    assert "before anything else" in caught.value.message
    assert "choose_distribution() first" in caught.value.fix


def test_describe_multi_worker():
    assert Distribution("multi_worker", None, 2, 2, 0).describe() == (
        "MultiWorkerMirroredStrategy: 2 workers x 1 replica, this is worker 0 (chief)")
    worker = Distribution("multi_worker", None, 8, 2, 1)
    assert not worker.is_chief
    assert worker.describe() == "MultiWorkerMirroredStrategy: 2 workers x 4 replicas, this is worker 1"


def test_steps_per_execution_is_one_with_several_replicas():
    assert Distribution("none").steps_per_execution(64) == 64
    assert Distribution("mirrored", None, 1).steps_per_execution(64) == 64
    assert Distribution("mirrored", None, 2).steps_per_execution(64) == 1
    assert Distribution("multi_worker", None, 2, 2, 0).steps_per_execution(64) == 1


# --- distribute_dataset ----------------------------------------------------------------------


def _batches(n, batch_size):
    import tensorflow as tf

    return tf.data.Dataset.range(n).map(lambda i: (i, i)).batch(batch_size)


def test_distribute_dataset_none_is_a_no_op():
    ds = _batches(10, 4)
    assert distribute_dataset(ds, Distribution("none")) is ds


def test_distribute_dataset_shards_by_data():
    import tensorflow as tf

    two_workers = Distribution("multi_worker", None, 2, 2, 0)
    ds = distribute_dataset(_batches(10, 4), two_workers, batch_size=4, num_examples=10)
    assert ds.options().experimental_distribute.auto_shard_policy == tf.data.experimental.AutoShardPolicy.DATA
    assert int(ds.cardinality()) == 3  # tail of 2 examples: one per replica, kept


def test_distribute_dataset_drops_a_tail_smaller_than_the_replicas():
    four = Distribution("multi_worker", None, 4, 2, 0)
    known = distribute_dataset(_batches(10, 4), four, batch_size=4, num_examples=10)
    assert int(known.cardinality()) == 2  # the 2-example tail would leave 2 replicas empty
    assert [len(x) for x, _ in known] == [4, 4]
    filtered = distribute_dataset(_batches(10, 4), four)  # sizes unknown: filtered
    assert [len(x) for x, _ in filtered] == [4, 4]
    with pytest.raises(TransferError, match="Batch size 2 is smaller than the 4 replicas"):
        distribute_dataset(_batches(10, 2), four, batch_size=2, num_examples=10)


# --- two real workers on localhost -----------------------------------------------------------

WORKER = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from transfer.engine.distribute import choose_distribution, distribute_dataset

    dist = choose_distribution()  # first: before any other TensorFlow op
    import keras
    import numpy as np
    import tensorflow as tf

    out = Path(sys.argv[1])
    n, batch, size, classes = 49, 16, 16, 3  # 49 = 3 batches + a 1-example tail
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    targets = np.eye(classes, dtype=np.float32)[rng.integers(0, classes, n)]

    def dataset(training):
        ds = tf.data.Dataset.from_tensor_slices((images, targets)).cache()
        if training:
            ds = ds.shuffle(n, seed=1, reshuffle_each_iteration=True)
        return distribute_dataset(ds.batch(batch).prefetch(2), dist, batch_size=batch, num_examples=n)

    with dist.scope():
        keras.utils.set_random_seed(0)
        inputs = keras.Input((size, size, 3), dtype="uint8")
        x = keras.layers.Rescaling(1 / 255)(inputs)
        x = keras.layers.Conv2D(4, 3, activation="relu")(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        model = keras.Model(inputs, keras.layers.Dense(classes, activation="softmax")(x))
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss="categorical_crossentropy",
                      metrics=["accuracy"])
    history = model.fit(dataset(True), validation_data=dataset(False), epochs=2, verbose=0,
                        class_weight={0: 1.0, 1: 2.0, 2: 0.5})
    np.savez(out / f"weights_{dist.worker_index}.npz", *[w.numpy() for w in model.trainable_weights])
    if dist.is_chief:  # save alone: no collective, the other worker does not wait
        model.save(out / "model.keras")
        reloaded = keras.saving.load_model(out / "model.keras")  # outside scope: plain local predict
        assert reloaded.predict(images[:4], verbose=0).shape == (4, classes)
    print(json.dumps({"describe": dist.describe(), "kind": dist.kind, "num_replicas": dist.num_replicas,
                      "history": history.history}))
    """
)


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("localhost", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def test_two_workers_train_in_sync_and_only_the_chief_writes(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    cluster = {"worker": [f"localhost:{port}" for port in _free_ports(2)]}
    procs = []
    for index in range(2):
        env = {**os.environ, "TF_CONFIG": _tf_config(cluster, index=index), "TF_CPP_MIN_LOG_LEVEL": "3",
               "CUDA_VISIBLE_DEVICES": "-1", "PYTHONPATH": str(REPO_ROOT)}
        procs.append(subprocess.Popen([sys.executable, str(script), str(tmp_path)], env=env, cwd=REPO_ROOT,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=150))
    finally:
        for proc in procs:  # a worker stuck in a collective ignores SIGTERM: kill
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    for proc, (stdout, stderr) in zip(procs, outputs):
        assert proc.returncode == 0, stderr[-3000:]
    reports = [json.loads(stdout.strip().splitlines()[-1]) for stdout, _ in outputs]
    assert [r["describe"] for r in reports] == [
        "MultiWorkerMirroredStrategy: 2 workers x 1 replica, this is worker 0 (chief)",
        "MultiWorkerMirroredStrategy: 2 workers x 1 replica, this is worker 1",
    ]
    assert [(r["kind"], r["num_replicas"]) for r in reports] == [("multi_worker", 2)] * 2
    # Metrics are averaged over the workers, so both logs (and early-stopping decisions) agree.
    assert reports[0]["history"] == reports[1]["history"]
    assert len(reports[0]["history"]["val_accuracy"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "model.keras", "weights_0.npz", "weights_1.npz", "worker.py"]
    first, second = np.load(tmp_path / "weights_0.npz"), np.load(tmp_path / "weights_1.npz")
    assert len(first.files) == 6
    for name in first.files:  # synchronous training keeps the trained weights identical
        np.testing.assert_array_equal(first[name], second[name])
