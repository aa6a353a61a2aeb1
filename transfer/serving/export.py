"""Export a trained model (any task) as a self-contained SavedModel (+ ``model.keras``).

The export answers raw image bytes with named results and needs neither
``transfer`` nor Keras custom layers to run: decoding, resizing (the run's
``transfer.core.resize.ResizePolicy``, the functions training used, recorded as
transfer.json's ``"resize"``) and the family preprocessing layer are all traced
into the graph.

Layout of ``out_dir``::

    saved_model.pb, variables/, fingerprint.pb   the SavedModel
    assets/class_names.txt                        one class name per line
    assets/recipe.toml                            the recipe that trained it
    assets/transfer.json                          metadata (see ``export_model``)
    model.keras                                   the Keras model (reload after ``import transfer.backbones.layers``)

Signatures (outputs are the same for both; each task names its own outputs,
``Task.serving_outputs``, and ``transfer.json`` lists them; a classifier's are):

- ``serving_default``: ``image_bytes`` tf.string ``[N]`` (encoded JPEG, PNG,
  GIF or BMP).
- ``serving_images``: ``images`` uint8 ``[N, H, W, 3]``, any size.
- outputs: ``scores`` float32 ``[N, C]`` (softmax, or sigmoid for
  multi-label), ``class_names`` string ``[N, C]`` (aligned with ``scores``),
  ``top_class`` string ``[N]``, ``top_score`` float32 ``[N]``.
- multi-label exports add the decision at ``threshold`` (0.5, recorded in
  ``transfer.json``): ``above_threshold`` bool ``[N, C]`` (score >=
  threshold) and ``labels`` string ``[N, C]``, the class name where
  ``above_threshold`` and ``""`` elsewhere (fixed shapes, no ragged tensors,
  so graph-mode runners and TF Serving return them as they are).

TF Serving REST: ``{"instances": [{"b64": "<base64 JPEG>"}]}`` (the input name
ends in ``_bytes`` and is a string tensor, so the server base64-decodes it).
Both signatures run under ``tf.saved_model.load`` and under graph-mode
loaders (``saved_model_cli run``, TF Serving's C++ server,
``tf.compat.v1.saved_model.loader.load``); ``export_model`` checks both ways
against the Keras model before the export is moved into place.

Example:
    >>> export_model(model, "exports/flowers", class_names=["daisy", "rose"],
    ...              image_size=224, recipe_toml=recipe.to_toml(),
    ...              metadata={"backbone": "mobilenet_0.25"})
    PosixPath('exports/flowers')
    >>> f = tf.saved_model.load("exports/flowers").signatures["serving_default"]
    >>> f(image_bytes=tf.constant([open("rose.jpg", "rb").read()]))["top_class"]
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import tensorflow as tf

from transfer.core.atomic_folder import atomic_directory
from transfer.core.imageops import decode_image
from transfer.core.resize import ResizePolicy
from transfer.serving.signatures import BYTES_SIGNATURE, IMAGES_SIGNATURE, SIGNATURE_INPUTS, signatures_with
from transfer.tasks import DEFAULT_TASK

logger = logging.getLogger(__name__)

FORMAT = "transfer.export"  # an export's format name (assets/transfer.json), not a module path
FORMAT_VERSION = 1
KERAS_FILE = "model.keras"
CLASS_NAMES_FILE = "class_names.txt"
RECIPE_FILE = "recipe.toml"
METADATA_FILE = "transfer.json"
# Keys export_model fills itself; caller metadata may not override them.
_RESERVED = frozenset(
    {
        "format", "format_version", "task", "class_names", "num_classes", "image_size", "multi_label",
        "threshold", "preprocessing", "resize", "signatures", "files", "transfer_version", "tensorflow_version",
        "keras_version", "created",
    }
)  # fmt: skip


class _ServingModule(tf.Module):
    """What gets saved: the two serving functions, the variables they read, metadata and assets.

    Three separable pieces make up each signature: ``run_model`` (the Keras
    model: uint8 ``[N, S, S, 3]`` -> scores), ``answer`` (post-processing:
    scores -> the named outputs) and the input wrappers (``serve_bytes``
    decodes and resizes encoded images, ``serve_images`` resizes tensors).
    The functions are built as closures in ``__init__`` (rather than decorated
    methods) so each gets a plain ``input_signature`` without ``self``.

    The Keras model itself is deliberately not an attribute. Keras 3 wraps each
    weight's ``tf.Variable`` in a ``keras.Variable``, and saving a tracked
    ``keras.Variable`` writes a *copy* of the variable (a new ``tf.Variable``
    named ``Variable_N``) into the checkpoint, while the traced functions keep
    reading the original handle (named after the layer, e.g.
    ``conv_dw_12_bn/gamma``). ``tf.saved_model.load`` rebinds the functions to
    the restored objects, so Python did not notice; graph-mode loaders
    (``saved_model_cli run``, TF Serving, ``tf.compat.v1.saved_model.loader``)
    run the checkpoint's restore op, which fills only the copies, and the
    signatures failed with "Could not find variable conv_dw_12_bn/gamma". As
    ``keras.export.ExportArchive`` does, the module tracks exactly the plain
    ``tf.Variable`` objects the traced functions capture
    (``ConcreteFunction.variables``): one saved variable per weight, restored
    under the very handle the graph reads. ``_check_parity`` runs both
    signatures in a graph-mode session before the export is moved into place.
    """

    def __init__(self, model, task, config: Mapping[str, Any], image_size: int, asset_files: Mapping[str, Path]):
        super().__init__(name="transfer_export")
        class_names = list(config["class_names"])
        input_dtype = tf.as_dtype(model.inputs[0].dtype)
        # Non-trainable variables so `loaded.class_names` / `loaded.image_size`
        # are readable on the reloaded object (plain constants would not be saved).
        self.class_names = tf.Variable(tf.constant(class_names, dtype=tf.string), trainable=False,
                                       name="class_names")
        self.image_size = tf.Variable(int(image_size), dtype=tf.int32, trainable=False, name="image_size")
        # Assets are copied into `assets/` and re-pointed on load (`.asset_path`).
        self.class_names_file = tf.saved_model.Asset(str(asset_files[CLASS_NAMES_FILE]))
        self.recipe_file = tf.saved_model.Asset(str(asset_files[RECIPE_FILE]))
        self.metadata_file = tf.saved_model.Asset(str(asset_files[METADATA_FILE]))
        # The run's policy: the task's postprocess maps boxes and masks back by the same one.
        policy = ResizePolicy.from_config(config)

        def run_model(images):
            # An empty batch runs the model on one blank image, then keeps none of it:
            # with oneDNN (TF's default on x86) Conv2D returns a wrongly shaped tensor
            # for batch size 0 and the graph fails.
            count = tf.shape(images)[0]
            batch = tf.cond(count > 0, lambda: images,
                            lambda: tf.zeros([1, image_size, image_size, 3], images.dtype))
            # training=False: BatchNorm in inference mode and Dropout off.
            raw = model(tf.cast(batch, input_dtype), training=False)
            return tf.nest.map_structure(lambda t: tf.cast(t, tf.float32)[:count], raw)

        def answer(images, original_sizes, signature=None):
            # The task's post-processing: raw outputs -> named results (boxes in the original pixels, ...).
            if signature is None:
                return task.postprocess(run_model(images), original_sizes, image_size, config)
            return task.postprocess(run_model(images), original_sizes, image_size, config, signature=signature)

        def decode_one(encoded):
            # The very functions the training pipeline maps over its files.
            image = decode_image(encoded)
            return policy.resize_image(image, image_size), tf.shape(image)[:2]

        def serve_bytes(image_bytes, signature=None):
            images, sizes = tf.map_fn(
                decode_one, image_bytes,
                fn_output_signature=(tf.TensorSpec([image_size, image_size, 3], tf.uint8),
                                     tf.TensorSpec([2], tf.int32)),
            )
            return answer(images, sizes, signature)

        def serve_images(images):
            shape = tf.shape(images)
            sizes = tf.tile(shape[1:3][tf.newaxis], [shape[0], 1])
            return answer(policy.resize_image(images, image_size), sizes)

        self.serve_bytes = tf.function(
            serve_bytes, input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")]
        )
        self.serve_images = tf.function(
            serve_images, input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")]
        )
        # The task's further bytes signatures (segmentation's per-class probabilities).
        self.extra = {
            key: tf.function(lambda image_bytes, key=key: serve_bytes(image_bytes, key),
                             input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
            for key in task.extra_signatures(config)
        }
        # Traces the functions (once: the signatures reuse these traces) and
        # tracks what they read; see the class docstring.
        self.model_variables = _variables_read_by(self.serve_bytes, self.serve_images, *self.extra.values())


def _variables_read_by(*functions) -> list[tf.Variable]:
    """The ``tf.Variable`` objects the traced ``functions`` capture, each once, in a stable order."""
    seen: dict[int, tf.Variable] = {}
    for fn in functions:
        for variable in fn.get_concrete_function().variables:
            seen.setdefault(id(variable), variable)
    return list(seen.values())


def export_model(
    model,
    out_dir: str | os.PathLike,
    *,
    class_names: Sequence[str],
    image_size: int,
    multi_label: bool = False,
    recipe_toml: str = "",
    metadata: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    task: str = DEFAULT_TASK,
    task_config: Mapping[str, Any] | None = None,
    protected: Sequence = (),
) -> Path:
    """Write ``model`` as a serving-ready SavedModel folder at ``out_dir``; returns its path.

    The folder appears atomically: complete or not at all (an existing export
    survives a failed overwrite). Before it is moved into place the staged
    SavedModel is reloaded and checked against the Keras model on a synthetic
    image, so an export that disagrees with its model is never written.

    Args:
        model: a classifier taking uint8 ``[S, S, 3]`` and returning ``[N, C]`` scores.
        out_dir: the export folder to create.
        class_names: the ``C`` names, in the order of the model's outputs.
        image_size: ``S``, the side images are resized to (as in training).
        multi_label: whether scores are independent sigmoids (recorded for predict).
        recipe_toml: the recipe text, stored as ``assets/recipe.toml``.
        metadata: extra JSON-serializable fields for ``assets/transfer.json``
            (e.g. ``{"backbone": "resnet50"}``).
        overwrite: replace an existing ``out_dir``, which must be an export (``transfer.core.artifacts``).
        task: the ``transfer.tasks`` name whose post-processing makes the outputs.
        task_config: the run's settings the task reads (run.json); by default
            ``{"class_names": ..., "multi_label": ...}``.
        protected: paths (or ``(path, label)``) ``out_dir`` may not be, hold or lie inside.

    Example:
        >>> export_model(model, "exports/pets", class_names=["cat", "dog"], image_size=160)
    """
    from transfer.serving.parity import check_parity  # imports this module's signature names
    from transfer.tasks import get_task

    out_dir = Path(out_dir)
    task = get_task(task)
    class_names = _check_class_names(class_names)
    image_size = _check_image_size(model, image_size)
    config = {**(task_config or {"multi_label": bool(multi_label)}), "class_names": class_names}
    task.check_export_model(model, config)
    meta = _metadata(model, task, config, image_size, metadata)

    # marker=False: assets/transfer.json says it is an export (transfer.core.artifacts).
    with atomic_directory(out_dir, overwrite=overwrite, kind="export", protected=protected,
                          marker=False) as staging, tempfile.TemporaryDirectory(
        prefix=".transfer-assets-", dir=staging
    ) as sources:
        # The Asset sources live inside the staging folder (deleted before the
        # rename) so nothing is left behind in the system temp folder on a crash.
        asset_paths = _write_assets(Path(sources), class_names, recipe_toml, meta)
        _save_saved_model(_ServingModule(model, task, config, image_size, asset_paths), staging)
        model.save(staging / KERAS_FILE)
        check_parity(model, task, staging, image_size, config)
    logger.info("Exported %d-class %s model to %s", len(class_names), task.title, out_dir)
    return out_dir


def _write_assets(folder: Path, class_names, recipe_toml: str, meta: Mapping[str, Any]) -> dict[str, Path]:
    """The export's asset files (class names, recipe, transfer.json) written into ``folder``."""
    texts = {
        CLASS_NAMES_FILE: "\n".join(class_names) + "\n",
        RECIPE_FILE: recipe_toml,
        METADATA_FILE: json.dumps(meta, indent=2, ensure_ascii=False) + "\n",
    }
    paths = {}
    for name, text in texts.items():
        paths[name] = folder / name
        paths[name].write_text(text, encoding="utf-8")
    return paths


def _save_saved_model(module, staging: Path) -> None:
    """``module`` as a SavedModel in ``staging``: the bytes and images signatures and the task's own."""
    tf.saved_model.save(
        module,
        str(staging),
        signatures={
            BYTES_SIGNATURE: module.serve_bytes.get_concrete_function(),
            IMAGES_SIGNATURE: module.serve_images.get_concrete_function(),
            **{key: fn.get_concrete_function() for key, fn in module.extra.items()},
        },
    )


def _check_class_names(class_names) -> list[str]:
    if isinstance(class_names, (str, bytes)):
        raise TypeError(f"class_names must be a list of strings. Received: class_names={class_names!r}")
    names = list(class_names)
    bad = [n for n in names if not isinstance(n, str) or not n.strip() or "\n" in n or "\r" in n]
    if bad:
        # class_names.txt holds one name per line, so names must be single-line and non-empty.
        raise ValueError(f"Class names must be non-empty single-line strings. Received: {bad!r}")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"Class names must be unique. Received duplicates: {dupes!r}")
    return names


def _check_image_size(model, image_size) -> int:
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 1:
        raise ValueError(f"image_size must be a positive integer. Received: image_size={image_size!r}")
    if len(model.inputs) != 1:
        raise ValueError(f"Expected a model with one image input. Received {len(model.inputs)} inputs.")
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or shape[-1] != 3 or any(d not in (None, image_size) for d in shape[1:3]):
        raise ValueError(
            f"The model's input shape {shape} does not take {image_size}x{image_size} RGB images. "
            f"Received: image_size={image_size}"
        )
    return int(image_size)


def _preprocessing_mode(model) -> str | None:
    # Recorded for humans reading transfer.json; the layer itself is in the graph.
    for layer in getattr(model, "_flatten_layers", lambda: [])():
        if type(layer).__name__ == "FamilyPreprocessing":
            return layer.mode
    return None


def _transfer_version() -> str:
    from transfer import __version__

    return __version__


def _metadata(model, task, config, image_size, extra) -> dict:
    import keras

    extra = dict(extra or {})
    task_meta = task.export_metadata(config)
    clash = sorted((_RESERVED | set(task_meta)) & set(extra))
    if clash:
        raise ValueError(f"metadata may not set keys that export_model fills itself. Received: {clash}")
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "task": task.title,
        "class_names": list(config["class_names"]),
        "num_classes": len(config["class_names"]),
        "image_size": image_size,
        **task_meta,
        "backbone": None,
        "preprocessing": _preprocessing_mode(model),
        "resize": ResizePolicy.from_config(config).to_dict(),
        "signatures": {**signatures_with(task.serving_outputs(config)),
                       **{key: {"inputs": dict(SIGNATURE_INPUTS[BYTES_SIGNATURE]), "outputs": dict(outputs)}
                          for key, outputs in task.extra_signatures(config).items()}},
        "files": {
            "keras_model": KERAS_FILE,
            "class_names": f"assets/{CLASS_NAMES_FILE}",
            "recipe": f"assets/{RECIPE_FILE}",
        },
        "transfer_version": _transfer_version(),
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    meta.update(extra)
    try:
        json.dumps(meta)
    except TypeError as e:
        raise ValueError(f"metadata must be JSON-serializable. Received: {extra!r} ({e})") from None
    return meta


def export_run(run_dir: str | os.PathLike, out_dir: str | os.PathLike, *, overwrite: bool = False,
               serving_options: Mapping[str, Any] | None = None) -> Path:
    """Export the best checkpoint of a ``transfer train`` run (what ``transfer export`` does).

    ``serving_options``: export-time settings of the run's task, e.g. detection's
    ``{"score_threshold": 0.5}`` (the run's own are kept for what is not given).

    Example:
        >>> export_run("runs/flowers", "exports/flowers")
        PosixPath('exports/flowers')
        >>> export_run("runs/bccd", "exports/bccd", serving_options={"iou_threshold": 0.6})
        PosixPath('exports/bccd')
    """
    from transfer.core.artifacts import check_replaceable, run_inputs
    from transfer.engine.run import RunDir
    from transfer.tasks import get_task, task_of_config

    run = RunDir(run_dir).require()
    config = run.config()
    protected = run_inputs(run.root, config)  # never the run, its data, or a folder holding them
    check_replaceable(out_dir, "export", protected)  # before the model loads; again before the move
    config = get_task(task_of_config(config)).with_serving_options(config, dict(serving_options or {}))
    return export_model(
        run.load_model(),
        out_dir,
        class_names=config["class_names"],
        image_size=int(config["image_size"]),
        multi_label=bool(config.get("multi_label")),
        task=task_of_config(config),
        task_config=config,
        recipe_toml=run.recipe_file.read_text(encoding="utf-8"),
        metadata={
            "backbone": config["backbone"],
            "weights": config.get("weights"),
            "run_dir": str(run.root.resolve()),
            "best_epoch": config.get("best_epoch"),
        },
        overwrite=overwrite,
        protected=protected,
    )
