"""Check an export against its Keras model, in both runtimes that serve it.

``export_model`` stages the SavedModel, then ``check_parity`` reloads it and
runs every signature through ``tf.saved_model.load`` (Python callers,
``transfer predict``) and through a graph-mode TF1 session
(``run_signatures_in_session``: what ``saved_model_cli run`` and TF
Serving's C++ server do) on the same images; any output further than
``PARITY_ATOL`` from the Keras model's stops the export before it is moved
into place.

Example:
    >>> run_signatures_in_session("exports/flowers", {"serving_images": np.zeros((1, 128, 128, 3), np.uint8)})
    {'serving_images': {'scores': array([[...]], dtype=float32), ...}}
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import tensorflow as tf

from transfer.serving.signatures import BYTES_SIGNATURE, IMAGES_SIGNATURE

PARITY_ATOL = 1e-4


def check_parity(model, task, export_dir: Path, image_size: int, config: Mapping[str, Any]) -> None:
    """Reload the staged export and compare its signatures (both, and a task's extra ones) with
    the Keras model.

    Twice: through ``tf.saved_model.load`` (what Python callers and
    ``transfer predict`` use) and through a graph-mode TF1 session (what
    ``saved_model_cli run`` and TF Serving's C++ server do), which restores the
    variables from the checkpoint instead of rebinding Python objects. The
    task says how its served outputs compare with the model's raw ones.
    """
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(2, image_size, image_size, 3), dtype=np.uint8)
    raw = tf.nest.map_structure(lambda t: np.asarray(t, dtype=np.float32), model(images, training=False))
    # PNG is lossless, so the bytes signature must decode to these exact pixels.
    encoded = [tf.io.encode_png(img).numpy() for img in images]
    loaded = tf.saved_model.load(str(export_dir))
    extra = list(task.extra_signatures(config))

    def numpy(outputs):
        return {k: v.numpy() for k, v in outputs.items()}

    results = {
        IMAGES_SIGNATURE: numpy(loaded.signatures[IMAGES_SIGNATURE](images=tf.constant(images))),
        BYTES_SIGNATURE: numpy(loaded.signatures[BYTES_SIGNATURE](image_bytes=tf.constant(encoded))),
        **{key: numpy(loaded.signatures[key](image_bytes=tf.constant(encoded))) for key in extra},
    }
    try:
        graph_mode = run_signatures_in_session(
            export_dir, {IMAGES_SIGNATURE: images, BYTES_SIGNATURE: np.array(encoded, dtype=object),
                         **{key: np.array(encoded, dtype=object) for key in extra}}
        )
    except tf.errors.OpError as e:
        lines = [line.strip() for line in (e.message or str(e)).splitlines()]
        reason = next((line for line in lines if line and line != "Graph execution error:"), type(e).__name__)
        raise RuntimeError(
            "The exported signatures do not run in graph mode (tf.compat.v1 loader, as `saved_model_cli run` "
            f"and TF Serving load them): {type(e).__name__}: {reason} The export was not written."
        ) from e
    results.update({f"{name} (graph mode)": out for name, out in graph_mode.items()})
    for name, served in results.items():
        err = task.parity_error(raw, served, image_size, config)
        if not err <= PARITY_ATOL:
            raise RuntimeError(
                f"The exported signature {name!r} disagrees with the Keras model "
                f"(max abs difference {err:.3g} > {PARITY_ATOL}); the export was not written."
            )


def run_signatures_in_session(export_dir: str | os.PathLike, inputs: Mapping[str, Any]) -> dict[str, dict]:
    """Run signatures the way TF1 graph-mode servers do; ``{signature: {output: array}}``.

    ``inputs`` maps a signature key to the value of its single input. The
    SavedModel is loaded with ``tf.compat.v1.saved_model.loader.load`` into a
    fresh graph and session (variables restored by the checkpoint's restore
    op, as in ``saved_model_cli run`` and TF Serving), then each signature's
    output tensors are fetched by the names its SignatureDef gives.

    Example:
        >>> run_signatures_in_session("exports/flowers", {"serving_images": np.zeros((1, 128, 128, 3), np.uint8)})
        {'serving_images': {'scores': array([[...]], dtype=float32), 'top_class': array([b'daisy'], ...), ...}}
    """
    results = {}
    with tf.Graph().as_default() as graph, tf.compat.v1.Session(graph=graph) as sess:
        with _quiet_tensorflow_logger():  # the TF1 loader logs a deprecation warning on every call
            meta_graph = tf.compat.v1.saved_model.loader.load(sess, [tf.saved_model.SERVING], str(export_dir))
        for key, value in inputs.items():
            signature = meta_graph.signature_def[key]
            (input_info,) = signature.inputs.values()
            fetches = {name: info.name for name, info in signature.outputs.items()}
            results[key] = sess.run(fetches, {input_info.name: value})
    return results


@contextlib.contextmanager
def _quiet_tensorflow_logger():
    tf_logger = tf.get_logger()
    level = tf_logger.level
    tf_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        tf_logger.setLevel(level)
