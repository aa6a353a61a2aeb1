"""Classification (single- and multi-label) as a ``Task``: the engine's view of ``transfer.tasks.classify.model``.

Everything here delegates to the classification modules that already own each
piece (model and objective in ``tasks.classify``, the pipeline in
``data.pipeline``, the report in ``evaluate``); this class is only the seam.

Example:
    >>> task = ClassifyTask()
    >>> task.serving_outputs({"multi_label": False})["top_class"]
    'string [N]'
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from transfer.core.errors import TransferError
from transfer.core.resize import ResizePolicy
from transfer.data.samples import Samples
from transfer.tasks.base import Objective, Task
from transfer.tasks.classify.model import MULTI_LABEL_THRESHOLD


class ClassifyTask(Task):
    """Image classification: one class per image, or several labels (multi-label)."""

    name = "classify"
    title = "classification"
    reader = "transfer.tasks.classify.reader:ExportedClassifier"
    uses_feature_cache = True
    # Measured on the small-data panel only (benchmarks/small_data_panel.py): the box and
    # mask tasks have no head-only stage that could stand as the final model.
    checks_finetune_on_small_data = True

    # --- data -------------------------------------------------------------------------------
    def load_data(self, source, *, val_source=None, val_fraction=0.2, seed=0, allow_outside_root=False,
                  echo: Callable[[str], None] | None = None):
        from transfer.data import load_data
        from transfer.data.samples import DataSplit

        if val_source is None:
            return load_data(source, val_fraction=val_fraction, seed=seed, allow_outside_root=allow_outside_root)
        train = whole_source(source, allow_outside_root=allow_outside_root, role="--data")
        val = whole_source(val_source, allow_outside_root=allow_outside_root, role="--val-data")
        return DataSplit(train, in_class_order(val, train.class_names, val_source), origin=f"--val-data {val_source}")

    def describe_data(self, data) -> str:
        n = len(data.class_names)
        kind = f"{n} labels, multi-label" if data.multi_label else f"{n} classes"
        return f"{len(data.train)} train / {len(data.val)} val images, {kind} ({data.origin})"

    def target_to_json(self, target):
        return list(target) if isinstance(target, tuple) else int(target)

    def target_from_json(self, value, config):
        return tuple(int(v) for v in value) if config.get("multi_label") else int(value)

    def evaluation_samples(self, data, config):
        from transfer.data import load_data
        from transfer.data.sources.folder import read_class_folders

        path = Path(str(data))
        if path.is_dir() and not any((path / name).is_dir() for name in ("train", "val", "validation")):
            samples = read_class_folders(path)
        else:
            samples = load_data(str(data)).val
        return in_class_order(samples, tuple(config["class_names"]), data)

    def data_class_names(self, data, config):
        """Its class folders, or the classes of its CSV or ``train``/``val`` folders, as ``evaluation_samples``
        reads them; a ``tfds:`` source names none here (read whole into memory: not twice, and
        ``evaluation_samples`` maps its names)."""
        from transfer.data import load_data
        from transfer.data.sources.folder import read_class_folders

        if str(data).startswith("tfds:"):
            return None, "its label names", False
        path = Path(str(data))
        if path.is_dir() and not any((path / name).is_dir() for name in ("train", "val", "validation")):
            return tuple(read_class_folders(path).class_names), "its class folders are", False
        return tuple(load_data(str(data)).val.class_names), "its classes are", False

    # --- model ------------------------------------------------------------------------------
    def run_config(self, data, recipe) -> dict[str, Any]:
        from transfer.tasks.classify.model import monitor_for

        return {"class_names": list(data.class_names), "multi_label": data.multi_label,
                "monitor": monitor_for(data.multi_label),
                "resize": ResizePolicy(recipe.resize).to_config()}  # read back by every step: from_config

    def check_recipe(self, recipe) -> None:
        pass  # Recipe validates its classification settings itself

    def build_model(self, spec, config, image_size, weights, recipe):
        from transfer.tasks.classify.model import build_classifier

        return build_classifier(spec, len(config["class_names"]), image_size, weights=weights,
                                multi_label=bool(config.get("multi_label")), dropout=recipe.dropout)

    def objective(self, config, recipe) -> Objective:
        from transfer.tasks.classify.model import loss_and_metrics, monitor_for

        multi_label = bool(config.get("multi_label"))
        loss, metrics = loss_and_metrics(multi_label, recipe.label_smoothing)
        return Objective(loss, metrics, config.get("monitor") or monitor_for(multi_label), "max")

    def make_dataset(self, samples, image_size, batch_size, *, training, recipe, cache, config):
        from transfer.data.pipelines.images import make_dataset

        resize = ResizePolicy.from_config(config)
        if training:
            return make_dataset(samples, image_size, batch_size, training=True, augment=recipe.augment,
                                seed=recipe.seed, cache=cache, resize=resize)
        return make_dataset(samples, image_size, batch_size, training=False, cache=cache, resize=resize)

    def training_notes(self, data, config):
        if not data.multi_label:
            return []
        from transfer.engine.summary import metric_label

        return [f"Multi-label: {data.train.num_classes} labels, each scored on its own (sigmoid), "
                f"present at a score >= {MULTI_LABEL_THRESHOLD:g}; the best epoch is the one with the best "
                f"{metric_label(config['monitor'])} (the mean over labels of each label's F1)."]

    def class_weight(self, samples, recipe):
        if recipe.class_weight == "none":
            return None
        if samples.multi_label:
            raise TransferError('class_weight = "balanced" works for single-label data only.',
                                fix='Use class_weight = "none" for multi-label data.')
        counts = samples.class_counts()
        total, num_classes = len(samples), samples.num_classes
        return {i: total / (num_classes * max(counts[name], 1)) for i, name in enumerate(samples.class_names)}

    def small_data_recipe(self, data, recipe):
        from transfer.tasks.classify.probe_head import HEAD_FIT, probe_head_recipe

        fitted, lines = probe_head_recipe(recipe, data.train.targets, data.train.num_classes, data.train.multi_label)
        return fitted, lines, ({"head_fit": HEAD_FIT} if lines else {})

    def fit_head_on_cached_features(self, model, data, image_size, recipe, config, callbacks, *,
                                    initial_epoch, epochs, class_weight, verbose):
        """A ``"head"`` stage on backbone features computed once (``transfer.engine.feature_cache``).

        The frozen backbone gives the same features every epoch, so it runs once
        (per view) instead of once per epoch; the classifier's own head layers
        train, with the compiled optimizer, and the callbacks see the classifier.
        """
        from transfer.data.pipelines.images import targets_array
        from transfer.engine.summary import say
        from transfer.engine.feature_cache import extract_features
        from transfer.tasks.classify.head_fit import fit_head_on_features

        cache_dir = config.get("feature_cache")
        say(verbose, f"Backbone features of {len(data.train)} + {len(data.val)} images "
                     f"({recipe.head_cache_views} view(s) per training image)"
                     + (f", cached in {cache_dir}" if cache_dir else ""))
        train_features = extract_features(
            model, data.train, image_size, views=recipe.head_cache_views, augment=recipe.augment,
            seed=recipe.seed, cache_dir=cache_dir, verbose=1 if verbose == 1 else 0,
            resize=ResizePolicy.from_config(config),
        )
        val_features = extract_features(model, data.val, image_size, cache_dir=cache_dir,
                                        verbose=1 if verbose == 1 else 0, resize=ResizePolicy.from_config(config))
        optimizer = model.optimizer
        from transfer.tasks.classify.probe_head import HEAD_FIT

        if config.get("head_fit") == HEAD_FIT:
            optimizer = _fit_probe_head(model, train_features[0], data.train, recipe, verbose)
        return fit_head_on_features(
            model, train_features, targets_array(data.train), epochs=epochs, optimizer=optimizer,
            batch_size=recipe.batch_size, label_smoothing=recipe.label_smoothing,
            validation=(val_features, targets_array(data.val)), callbacks=callbacks,
            initial_epoch=initial_epoch, seed=recipe.seed, verbose=verbose, class_weight=class_weight,
        )

    # --- evaluation -------------------------------------------------------------------------
    def evaluate(self, model, samples, image_size, batch_size, config):
        from transfer.tasks.classify.evaluation import evaluate_model

        return evaluate_model(model, samples, image_size, batch_size, resize=ResizePolicy.from_config(config))

    # --- export -----------------------------------------------------------------------------
    def check_export_model(self, model, config) -> None:
        num_classes = len(config["class_names"])
        if len(model.outputs) != 1:
            raise ValueError(f"Expected a model with one scores output. Received {len(model.outputs)} outputs.")
        width = model.outputs[0].shape[-1]
        if width != num_classes:
            raise ValueError(
                f"The model outputs {width} scores but {num_classes} class names were given. "
                f"Received: class_names of length {num_classes}"
            )

    def serving_outputs(self, config) -> dict[str, str]:
        outputs = {"scores": "float32 [N, C]", "class_names": "string [N, C]", "top_class": "string [N]",
                   "top_score": "float32 [N]"}
        if config.get("multi_label"):
            outputs["above_threshold"] = "bool [N, C] (score >= threshold)"
            outputs["labels"] = "string [N, C] (the class name where above_threshold, else empty)"
        return outputs

    def postprocess(self, raw, original_sizes, image_size, config):
        import tensorflow as tf

        scores = tf.cast(raw, tf.float32)
        names = tf.constant(list(config["class_names"]), dtype=tf.string)
        top = tf.argmax(scores, axis=-1, output_type=tf.int32)
        tiled_names = tf.tile(names[tf.newaxis], [tf.shape(scores)[0], 1])
        outputs = {
            "scores": scores,
            "class_names": tiled_names,
            "top_class": tf.gather(names, top),
            "top_score": tf.reduce_max(scores, axis=-1),
        }
        if config.get("multi_label"):
            above = scores >= tf.constant(float(config.get("threshold", MULTI_LABEL_THRESHOLD)), tf.float32)
            outputs["above_threshold"] = above
            outputs["labels"] = tf.where(above, tiled_names, tf.fill(tf.shape(tiled_names), ""))
        return outputs

    def parity_error(self, raw, served, image_size, config) -> float:
        import numpy as np

        return float(np.max(np.abs(np.asarray(served["scores"], np.float32) - np.asarray(raw, np.float32))))

    def export_metadata(self, config) -> dict[str, Any]:
        multi_label = bool(config.get("multi_label"))
        return {"multi_label": multi_label, **({"threshold": MULTI_LABEL_THRESHOLD} if multi_label else {})}


def whole_source(source, *, allow_outside_root: bool = False, role: str = "--data"):
    """Every image of a classification source as one ``Samples`` (no split), for ``--val-data``.

    A folder of class folders, a CSV (its split column, if any, is ignored) or
    ``tfds:NAME`` (its training part). A folder that holds ``train/``/``val/``
    already has a split, so pairing it with ``--val-data`` is refused.
    """
    from transfer.data import load_data
    from transfer.data.sources.csvfile import _raise_for_stops, list_csv
    from transfer.data.sources.folder import read_class_folders

    text = os.fspath(source)
    path = Path(text)
    if text.lower().endswith(".csv") and path.is_file():
        listing = list_csv(path, allow_outside_root=allow_outside_root)
        _raise_for_stops(listing)
        return listing.samples()
    if path.is_dir():
        if any((path / name).is_dir() for name in ("train", "val", "validation")):
            raise TransferError(
                f"{role} {text} has train/ and val/ folders: it is split already.",
                fix=f"Point {role} at one of them (e.g. {path / 'train'}), or drop --val-data.",
            )
        return read_class_folders(path)
    return load_data(text).train


def in_class_order(samples, class_names: tuple[str, ...], source):
    """``samples`` with targets in ``class_names``' order (a subset of the classes is fine)."""
    from transfer.data.samples import Samples

    unknown = sorted(set(samples.class_names) - set(class_names))
    if unknown:
        raise TransferError(
            f"{source} has classes the training data does not: {unknown}.",
            fix=f"The known classes are {list(class_names)}; rename or remove the others.",
        )
    if tuple(samples.class_names) == tuple(class_names):
        return samples
    index = {name: i for i, name in enumerate(class_names)}

    def convert(target):
        if isinstance(target, tuple):
            return tuple(index[samples.class_names[t]] for t in target)
        return index[samples.class_names[target]]

    return Samples(samples.sources, tuple(convert(t) for t in samples.targets), tuple(class_names),
                   samples.multi_label, samples.encoded)


def _fit_probe_head(model, features, samples: Samples, recipe, verbose: int):
    """Fit the head as a logistic regression (``transfer.tasks.classify.probe_head``), say so, and
    return the optimizer of the stage's epoch: one that moves no weight (SGD at rate 0), so the
    epoch only validates, checkpoints and logs the fitted head."""
    import keras

    from transfer.engine.summary import say
    from transfer.tasks.classify.probe_head import fit_probe_head

    info = fit_probe_head(model, features, samples.targets, num_classes=samples.num_classes,
                          balanced=recipe.class_weight == "balanced", seed=recipe.seed,
                          label_smoothing=recipe.label_smoothing)
    say(verbose, f"Head fit as a logistic regression: C = {info['C']:g} by {info['folds']}-fold cross-validation "
                 f"on the training images (accuracy {info['cv_accuracy']:.3f} on the held-out folds); logits "
                 f"x{info['logit_scale']:.3g} to suit the label smoothing {recipe.label_smoothing:g} the fine-tune trains with.")
    return keras.optimizers.SGD(learning_rate=0.0)


def class_weights(samples: Samples, mode: str) -> dict[int, float] | None:
    """``{class: N / (C * count)}`` for ``mode == "balanced"``; None otherwise (classification)."""
    class _Mode:
        class_weight = mode

    return ClassifyTask().class_weight(samples, _Mode)
