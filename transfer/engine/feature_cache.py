"""Cached backbone features: computed once per image (and view), kept on disk, never stale.

While the backbone is frozen, running it every epoch recomputes the same
numbers: the pooled features of an image depend only on the image, the
backbone's weights and the augmentation. ``extract_features`` computes them
once (optionally for a few augmented views per image) and keeps them on disk;
``transfer.tasks.classify.head_fit.fit_head_on_features`` then trains the classifier's head
on them (the linear probe).

The cache is keyed by a hash of everything the features depend on (the
extractor's layer configurations and exact weight values, the image files'
sizes and modification times or the encoded bytes, image size, views,
augmentation, seed, and the transfer/Keras/TensorFlow versions), and each
file stores its key description, which is compared on load. A stale cache is
never used: any change gives another file name.

Memory: the features array (``views * N * D`` float32: a million images x
1280 features is 5 GB a view) is the only per-image data held; decoded
images are cached only when several views reuse them, in memory or on disk
as ``transfer.data.pipelines.cache_policy`` decides.

Example:
    >>> feats = extract_features(model, split.train, 128, views=3, augment=("flip", "zoom"),
    ...                          cache_dir=default_cache_dir())        # [3, N, 256]
    >>> val = extract_features(model, split.val, 128, cache_dir=default_cache_dir())[0]
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import weakref
from pathlib import Path
from typing import Any, Sequence

import keras
import numpy as np

from transfer.core.errors import TransferError
from transfer.core.resize import ResizePolicy
from transfer.backbones.nesting import leaf_layers

log = logging.getLogger(__name__)

# Bump when the cached values would change for the same key description.
CACHE_FORMAT = 1
POOL_LAYER = "pool"


def default_cache_dir() -> Path:
    """Where features are cached: ``$TRANSFER_CACHE_DIR``, else ``$XDG_CACHE_HOME/transfer/features``.

    (``~/.cache/transfer/features`` when neither is set.)

    Example:
        >>> default_cache_dir()
        PosixPath('/root/.cache/transfer/features')
    """
    if os.environ.get("TRANSFER_CACHE_DIR"):
        return Path(os.environ["TRANSFER_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "transfer" / "features"


def feature_model(model):
    """The part of ``model`` that maps uint8 images to pooled features.

    ``model`` is a classifier from ``transfer.tasks.classify.model.build_classifier``
    (its input up to the ``"pool"`` layer), or any model taking uint8 images
    whose output is features (a spatial ``[H, W, C]`` output is average pooled).

    Example:
        >>> feature_model(classifier).output_shape
        (None, 256)
    """
    names = {layer.name for layer in model.layers}
    # A single input as a tensor, not a list, so the model is called with a plain batch.
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    if POOL_LAYER in names:
        return keras.Model(inputs, model.get_layer(POOL_LAYER).output, name=f"{model.name}_features")
    if len(model.output.shape) == 4:
        pooled = keras.layers.GlobalAveragePooling2D()(model.output)
        return keras.Model(inputs, pooled, name=f"{model.name}_features")
    if len(model.output.shape) != 2:
        raise ValueError(
            "Expected a classifier with a 'pool' layer or a model with [H, W, C] or [D] outputs. "
            f"Received: output shape {model.output.shape}"
        )
    return model


def feature_cache_key(
    model, samples, image_size: int, *, views: int = 1, augment: Sequence[str] = (), seed: int = 0,
    resize=None,
) -> tuple[str, dict[str, Any]]:
    """``(hex key, description)`` of the features ``extract_features`` would compute.

    The description names every input of the features; the key is its hash.

    Example:
        >>> key, description = feature_cache_key(model, split.train, 128)
        >>> sorted(description)[:3]
        ['architecture', 'augment', 'format']
    """
    import tensorflow as tf

    from transfer import __version__

    extractor = feature_model(model)
    augmented = views > 1 and bool(augment)
    views = views if augmented else 1
    description = {
        "format": CACHE_FORMAT,
        "transfer": __version__,
        "keras": keras.__version__,
        "tensorflow": tf.__version__,
        "model": extractor.name,
        "architecture": _architecture_hash(extractor),
        "weights": _weights_hash(extractor),
        "image_size": int(image_size),
        "resize": (resize or ResizePolicy()).to_dict(),  # the run's policy: other pixels, other features
        "views": int(views),
        # Seed and augmentation only matter for the augmented views.
        "augment": sorted(set(augment)) if augmented else [],
        "seed": int(seed) if augmented else None,
        "num_samples": len(samples),
        "samples": _samples_hash(samples),
    }
    text = json.dumps(description, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest(), description


def extract_features(
    model,
    samples,
    image_size: int,
    batch_size: int = 64,
    *,
    views: int = 1,
    augment: Sequence[str] = (),
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    verbose: int = 0,
    resize=None,
) -> np.ndarray:
    """Pooled features ``float32 [views, N, D]`` of ``samples``, from the cache when it holds them.

    View 0 is each image as validation sees it; views 1.. are random
    augmentations (``augment`` names as in ``transfer.data.pipelines.images.Augmenter``),
    reproducible for a ``seed``; without ``augment`` there is one view.
    ``model`` is a classifier or a feature model (see ``feature_model``); it
    runs in inference mode. With ``cache_dir`` the result is read from /
    written to ``cache_dir`` (see the module doc), which is then pruned to
    ``$TRANSFER_CACHE_MAX_MB`` (default 2048) by dropping the least recently
    used files. ``verbose=1`` shows a progress bar while computing. ``resize``: the run's
    ``transfer.core.resize.ResizePolicy`` (default stretch).

    Example:
        >>> extract_features(model, split.val, 128).shape
        (1, 864, 256)
    """
    if not (isinstance(views, int) and views >= 1):
        raise TransferError(f"views={views!r} is not a whole number >= 1.", fix="Use 1 (no augmentation) or more.")
    if len(samples) == 0:
        raise ValueError("Cannot extract features of 0 samples.")
    if not augment:
        views = 1  # without augmentation every view would be the plain image
    path = description = None
    if cache_dir is not None:
        key, description = feature_cache_key(model, samples, image_size, views=views, augment=augment, seed=seed,
                                             resize=resize)
        path = Path(cache_dir) / f"features-{key[:40]}.npz"
        cached = _load(path, description)
        if cached is not None:
            log.info("Features of %d images x %d views read from %s", len(samples), views, path)
            return cached
    features = _compute(model, samples, image_size, batch_size, views, tuple(augment), seed, verbose, resize)
    if path is not None:
        _save(path, features, description)
        log.info("Features of %d images x %d views cached in %s", len(samples), views, path)
        prune_cache(path.parent, keep=path)
    return features


def prune_cache(cache_dir: str | os.PathLike, max_bytes: int | None = None, *, keep: Path | None = None) -> list[Path]:
    """Delete the least recently used feature files until ``cache_dir`` holds at most ``max_bytes``.

    ``max_bytes`` defaults to ``$TRANSFER_CACHE_MAX_MB`` megabytes (2048).
    ``keep`` is never deleted (the file just written). Returns what was deleted.

    Example:
        >>> prune_cache(default_cache_dir(), max_bytes=500 * 2**20)
        []
    """
    if max_bytes is None:
        try:
            max_bytes = int(float(os.environ.get("TRANSFER_CACHE_MAX_MB", "2048")) * 2**20)
        except ValueError:
            raise TransferError(
                f"TRANSFER_CACHE_MAX_MB={os.environ['TRANSFER_CACHE_MAX_MB']!r} is not a number.",
                fix="Set it to a size in megabytes, e.g. 2048.",
            ) from None
    files = []
    for path in Path(cache_dir).glob("features-*.npz"):
        try:
            stat = path.stat()
        except OSError:
            continue  # removed by another process meanwhile
        files.append((stat.st_mtime, stat.st_size, path))
    total = sum(size for _, size, _ in files)
    deleted = []
    for _, size, path in sorted(files, key=lambda item: item[0]):  # oldest use first
        if total <= max_bytes:
            break
        if keep is not None and path == keep:
            continue
        path.unlink(missing_ok=True)
        total -= size
        deleted.append(path)
    if deleted:
        log.info("Feature cache %s: removed %d least recently used file(s)", cache_dir, len(deleted))
    return deleted


def _compute(model, samples, image_size, batch_size, views, augment, seed, verbose=0, resize=None) -> np.ndarray:
    """Features ``float32 [views, N, D]``, filled in place batch by batch.

    Memory: the result array (views * N * D * 4 bytes: 1M images x 1280
    features is 5 GB per view) plus one batch; decoded images are cached
    only when several views reuse them, in memory or on disk as
    ``transfer.data.pipelines.cache_policy`` decides (removed when done).
    """
    import shutil

    import tensorflow as tf

    from transfer.data.pipelines.cache_policy import choose_image_cache
    from transfer.data.pipelines.images import Augmenter, cache_images, decoded_images

    forward = _forward_function(model, image_size)
    images, folder = decoded_images(samples, image_size, resize), None
    if views > 1:
        # Decoded once and reused by every view (where the policy allows).
        images, folder = cache_images(images, choose_image_cache(len(samples), image_size))
    out = None
    batches = -(-len(samples) // batch_size)
    progress = keras.utils.Progbar(batches * views, unit_name="batch") if verbose else None
    try:
        for view in range(views):
            ds = images
            if view > 0 and augment:
                # One independent, seeded stream per view.
                stream = tf.data.Dataset.random(seed=seed * 1009 + view).batch(2)
                augmenter = Augmenter(augment, image_size)
                ds = tf.data.Dataset.zip((ds.map(lambda x: (x, 0.0)), stream)).map(
                    lambda sample, pair: augmenter(sample, pair)[0], num_parallel_calls=tf.data.AUTOTUNE
                )
            ds = ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
            row = 0
            for batch in ds:
                values = forward(batch).numpy().reshape(len(batch), -1)
                if out is None:
                    out = np.empty((views, len(samples), values.shape[1]), np.float32)
                out[view, row:row + len(values)] = values
                row += len(values)
                if progress is not None:
                    progress.add(1)
            if row != len(samples):
                raise ValueError(f"Expected features of {len(samples)} images, got {row}.")
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
    return out


# The last compiled forward pass, reused while the same model extracts again
# (training then validation images): tracing a backbone costs seconds.
_LAST_FORWARD: list = []


def _forward_function(model, image_size: int):
    import tensorflow as tf

    if _LAST_FORWARD:
        ref, size, forward = _LAST_FORWARD[0]
        if ref() is model and size == image_size:
            return forward
    extractor = feature_model(model)
    spec = tf.TensorSpec([None, image_size, image_size, 3], tf.uint8)
    # A plain compiled call: Keras's predict() costs twice as much here (per-batch overhead).
    forward = tf.function(lambda x: tf.cast(extractor(x, training=False), tf.float32), input_signature=[spec])
    _LAST_FORWARD[:] = [(weakref.ref(model), image_size, forward)]
    return forward


def _load(path: Path, description: dict) -> np.ndarray | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            stored = json.loads(str(data["description"]))
            if stored != json.loads(json.dumps(description, sort_keys=True)):
                log.warning("Feature cache %s belongs to other inputs; recomputing.", path)
                return None
            features = data["features"]
        os.utime(path)  # marks it recently used, for prune_cache
        return features
    except (OSError, ValueError, KeyError) as error:
        # A damaged cache file is only a cache miss.
        log.warning("Feature cache %s is unreadable (%s); recomputing.", path, error)
        return None


def _save(path: Path, features: np.ndarray, description: dict) -> None:
    from transfer.core.atomic import _write_then_replace

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # streamed: no second copy of the features in memory
            np.savez(f, features=features, description=np.array(json.dumps(description, sort_keys=True)))

    try:
        _write_then_replace(path, write)
    except OSError as error:
        # Training goes on without the cache; the next run computes again.
        log.warning("Could not write the feature cache %s: %s", path, error)


def _architecture_hash(model) -> str:
    """Hash of every layer's class and configuration, without names.

    Names are left out because Keras numbers unnamed layers by how many were
    built before ("input_layer_3"), which would make the same model miss.
    """
    h = hashlib.sha256()
    for layer in leaf_layers(model):
        config = {k: v for k, v in layer.get_config().items() if k not in ("name", "trainable")}
        h.update(type(layer).__name__.encode())
        h.update(json.dumps(config, sort_keys=True, default=str).encode())
    return h.hexdigest()


def _weights_hash(model) -> str:
    """Hash of the exact weight values (BatchNorm statistics included), in layer order."""
    h = hashlib.blake2b(digest_size=32)
    for weight in model.weights:
        value = np.ascontiguousarray(weight.numpy())
        h.update(f"{value.dtype}{value.shape}".encode())
        h.update(value.tobytes())
    return h.hexdigest()


def _samples_hash(samples) -> str:
    """Hash of the images' identity: file path, size and mtime, or the encoded bytes."""
    h = hashlib.sha256()
    if samples.encoded is not None:
        for data in samples.encoded:
            h.update(hashlib.sha256(data).digest())
        return h.hexdigest()
    for source in samples.sources:
        try:
            stat = os.stat(source)
        except OSError as error:
            raise TransferError(
                f"Image file {source} cannot be read ({error.strerror}).",
                fix="Check that the data folder is complete and readable, or reload the data.",
            ) from None
        h.update(f"{source}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return h.hexdigest()
