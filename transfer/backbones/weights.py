"""Where a backbone's weights come from: ImageNet (Keras cache or download), a file, or random.

``build_backbone`` is the one entry point. It logs the source on the
``transfer.backbones.weights`` logger and returns it as a ``WeightsInfo``, and it turns
Keras's failures into ``TransferError``s that say how to fix them; above all,
offline, ``weights="imagenet"`` names the file Keras wanted and the command
that puts it in the cache (``transfer weights import FILE``, i.e.
``transfer.backbones.weights_import.import_weights``).

Example:
    >>> from transfer.backbones import get_backbone
    >>> model, info = build_backbone(get_backbone("mobilenet_0.25"), "imagenet", 128)
    >>> info.source, info.message
    ('imagenet-cache', 'ImageNet weights from /root/.keras/models/mobilenet_2_5_224_tf_no_top.h5 (Keras cache)')
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from transfer.backbones import BackboneSpec
from transfer.core.errors import TransferError

logger = logging.getLogger("transfer.backbones.weights")

SOURCES = ("imagenet-cache", "imagenet-download", "file", "random")
_RANDOM_NAMES = ("none", "random")
_WEIGHT_SUFFIXES = (".weights.h5", ".h5", ".hdf5", ".keras")

# Keras saves NASNet's weights in its cache under another name than the
# download's; every other family keeps the URL's file name.
CACHE_NAME_FOR_DOWNLOAD = {
    "NASNet-mobile.h5": "nasnet_mobile.h5",
    "NASNet-mobile-no-top.h5": "nasnet_mobile_no_top.h5",
    "NASNet-large.h5": "nasnet_large.h5",
    "NASNet-large-no-top.h5": "nasnet_large_no_top.h5",
}

# The cache file names of keras.applications' ImageNet weights (with and
# without the classifier top), so `import_weights` can tell a file Keras will
# look for from one it never will.
_KERAS_WEIGHT_NAMES = re.compile(
    r"(?:vgg1[69]|resnet(?:50|101|152)(?:v2)?|inception_v3|inception_resnet_v2|xception|densenet(?:121|169|201))"
    r"_weights_tf_dim_ordering_tf_kernels(?:_notop)?\.h5"
    r"|mobilenet_(?:1_0|7_5|5_0|2_5)_(?:128|160|192|224)_tf(?:_no_top)?\.h5"
    r"|mobilenet_v2_weights_tf_dim_ordering_tf_kernels_(?:0\.35|0\.5|0\.75|1\.0|1\.3|1\.4)_(?:96|128|160|192|224)(?:_no_top)?\.h5"
    r"|weights_mobilenet_v3_(?:small|large)(?:_minimalistic)?_224_(?:0\.75|1\.0)_float(?:_no_top_v2)?\.h5"
    r"|nasnet_(?:mobile|large)(?:_no_top)?\.h5"
    r"|efficientnetb[0-7](?:_notop)?\.h5"
    r"|efficientnetv2-(?:b[0-3]|[sml])(?:_notop)?\.h5"
    r"|convnext_(?:tiny|small|base|large|xlarge)(?:_notop)?\.h5"
)

# Keras picks MobileNet v1/v2's ImageNet file by input size (a 128 px model
# wants ..._128_...h5). transfer always loads the file trained at the spec's
# default size: one file per backbone to download or import, and features that
# do not change with --image-size. Without a classifier top the weights fit any size.
_SIZE_SPECIFIC_FILES = ("MobileNet", "MobileNetV2")

# keras.utils.get_file's message: "URL fetch failure on {url}: {code} -- {reason}".
_URL_FETCH_FAILURE = re.compile(r"URL fetch failure on (\S+?): (\S*) -- (.*)")


@dataclass(frozen=True)
class WeightsInfo:
    """Where a backbone's weights came from.

    Attributes:
        source: ``"imagenet-cache" | "imagenet-download" | "file" | "random"``.
        path: the weights file that was loaded (``None`` for random weights).
        message: one human sentence, e.g. ``"ImageNet weights from
            /root/.keras/models/x.h5 (Keras cache)"``.

    Example:
        >>> WeightsInfo("random", None, "Random weights (no pretraining)").source
        'random'
    """

    source: str
    path: str | None
    message: str


def keras_cache_dir() -> Path:
    """The folder Keras reads and writes ``weights="imagenet"`` files in.

    That is ``$KERAS_HOME/models`` (default ``~/.keras/models``), fixed when
    Keras is imported; like Keras, falls back to ``/tmp/.keras/models`` when
    the Keras home is not writable.

    Example:
        >>> keras_cache_dir()
        PosixPath('/root/.keras/models')
    """
    from keras.src.backend import config

    # Mirrors keras.utils.get_file, which is what the applications call.
    base = os.path.expanduser(config.keras_home())
    if not os.access(base, os.W_OK):
        base = os.path.join("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir(), ".keras")
    return Path(base) / "models"


def imagenet_file_name(spec: BackboneSpec) -> str:
    """The cache file name of ``spec``'s ImageNet weights (without classifier top).

    Example:
        >>> from transfer.backbones import get_backbone
        >>> imagenet_file_name(get_backbone("resnet50"))
        'resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5'
    """
    c, family = spec.constructor, spec.family
    alpha = float(spec.kwargs.get("alpha", 1.0))
    if family in ("vgg16", "vgg19", "resnet", "resnet_v2", "densenet"):
        return f"{c.lower()}_weights_tf_dim_ordering_tf_kernels_notop.h5"
    if family in ("inception_v3", "inception_resnet_v2", "xception"):
        return f"{family}_weights_tf_dim_ordering_tf_kernels_notop.h5"
    if family == "mobilenet":
        alpha_text = {1.0: "1_0", 0.75: "7_5", 0.5: "5_0", 0.25: "2_5"}[alpha]
        return f"mobilenet_{alpha_text}_{spec.default_size}_tf_no_top.h5"
    if family == "mobilenet_v2":
        return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_{spec.default_size}_no_top.h5"
    if family == "mobilenet_v3":
        size = "small" if c.endswith("Small") else "large"
        minimalistic = "_minimalistic" if spec.kwargs.get("minimalistic") else ""
        return f"weights_mobilenet_v3_{size}{minimalistic}_224_{alpha}_float_no_top_v2.h5"
    if family == "nasnet":
        return "nasnet_mobile_no_top.h5" if c == "NASNetMobile" else "nasnet_large_no_top.h5"
    if family == "efficientnet":
        return f"{c.lower()}_notop.h5"
    if family == "efficientnet_v2":
        return f"efficientnetv2-{c[len('EfficientNetV2'):].lower()}_notop.h5"
    if family == "convnext":
        return f"convnext_{c[len('ConvNeXt'):].lower()}_notop.h5"
    raise ValueError(f"No known ImageNet weights file for family {family!r}. Received: spec={spec.name!r}")


def is_keras_weights_name(name: str) -> bool:
    """Whether ``name`` is a file name ``keras.applications`` looks for in its cache.

    Example:
        >>> is_keras_weights_name("mobilenet_2_5_224_tf_no_top.h5"), is_keras_weights_name("mine.h5")
        (True, False)
    """
    return _KERAS_WEIGHT_NAMES.fullmatch(os.path.basename(str(name))) is not None


def build_backbone(spec: BackboneSpec, weights: str | os.PathLike | None, image_size: int):
    """Build ``spec``'s backbone (no classifier top) at ``image_size`` px with ``weights``.

    Args:
        spec: the backbone, from ``transfer.backbones.get_backbone``.
        weights: ``"imagenet"`` (Keras cache, else a download), a weights file
            (``.weights.h5``, ``.h5`` or ``.keras``), or ``None`` / ``"none"`` /
            ``"random"`` for random initialization.
        image_size: side of the square RGB input.

    Returns:
        ``(model, WeightsInfo)``.

    Example:
        >>> from transfer.backbones import get_backbone
        >>> model, info = build_backbone(get_backbone("resnet50"), None, 64)
        >>> model.output_shape, info.source
        ((None, 2, 2, 2048), 'random')
    """
    _check_image_size(spec, image_size)
    shape = (image_size, image_size, 3)
    if weights is None or (isinstance(weights, str) and weights.strip().lower() in _RANDOM_NAMES):
        model = spec.instantiate(None, shape)
        info = WeightsInfo("random", None, "Random weights (no pretraining)")
    elif isinstance(weights, str) and weights.strip().lower() == "imagenet":
        if not spec.pretrained:
            raise TransferError(
                f"Backbone '{spec.name}' has no ImageNet weights: it is meant to be trained from scratch.",
                fix="Pass --weights none (Python: weights=None), or pick a pretrained backbone "
                    "(`transfer backbones` lists them).",
            )
        model, info = _build_imagenet(spec, image_size)
    elif isinstance(weights, (str, os.PathLike)):
        model, info = _build_from_file(spec, Path(weights).expanduser(), shape)
    else:
        raise TypeError(
            "Expected weights to be 'imagenet', None or a file path. "
            f"Received: weights={weights!r} of type {type(weights).__name__}"
        )
    logger.info("%s: %s", spec.name, info.message)
    return model, info


# --- internals ------------------------------------------------------------------------------


def _check_image_size(spec: BackboneSpec, image_size) -> None:
    if isinstance(image_size, bool) or not isinstance(image_size, int):
        raise TypeError(f"Expected image_size to be an int. Received: image_size={image_size!r}")
    if image_size < spec.min_size:
        raise TransferError(
            f"Image size {image_size} px is too small for {spec.name}: it needs at least "
            f"{spec.min_size} px.",
            fix=f"Use an image size of {spec.min_size} or more ({spec.name}'s ImageNet weights were "
            f"trained at {spec.default_size} px).",
        )


def _build_imagenet(spec: BackboneSpec, image_size: int):
    cache = keras_cache_dir()
    name = imagenet_file_name(spec)
    before = _snapshot(cache)
    try:
        with warnings.catch_warnings():
            # MobileNetV3 warns that it loads its 224 px weights at other sizes:
            # expected, and said in our own message below.
            warnings.filterwarnings("ignore", message=r"[\s\S]*Weights for input shape \(224, 224\)")
            if spec.constructor in _SIZE_SPECIFIC_FILES and image_size != spec.default_size:
                size = spec.default_size
                reference = spec.instantiate("imagenet", (size, size, 3))
                model = spec.instantiate(None, (image_size, image_size, 3))
                model.set_weights(reference.get_weights())
            else:
                model = spec.instantiate("imagenet", (image_size, image_size, 3))
    except Exception as error:  # noqa: BLE001 - Keras raises a bare Exception when offline.
        translated = _imagenet_error(spec, error, cache, name, before)
        if translated is None:
            raise
        raise translated from error
    # A file that appeared or changed during the call was downloaded (Keras
    # also re-downloads a cached file whose checksum is wrong).
    changed = [n for n, stat in _snapshot(cache).items() if before.get(n) != stat]
    if name in changed or (changed and not (cache / name).exists()):
        path = cache / (name if name in changed else changed[0])
        info = WeightsInfo("imagenet-download", str(path), f"ImageNet weights downloaded to {path}")
    elif (cache / name).exists():
        path = cache / name
        info = WeightsInfo("imagenet-cache", str(path), f"ImageNet weights from {path} (Keras cache)")
    else:  # Keras found its file under a name this module does not know.
        info = WeightsInfo("imagenet-cache", None, f"ImageNet weights from the Keras cache in {cache}")
    if image_size != spec.default_size:
        logger.info(
            "%s: ImageNet weights trained at %d px, used at %d px.", spec.name, spec.default_size, image_size
        )
    return model, info


def _imagenet_error(spec, error, cache: Path, name: str, before: dict) -> TransferError | None:
    """A TransferError for the Keras failures a user can fix; None for the others (bugs)."""
    text = str(error)
    match = _URL_FETCH_FAILURE.search(text)
    if match:
        url, code, reason = match.groups()
        reason = reason.strip() or (code if code != "None" else "") or "no network"
        wanted = CACHE_NAME_FOR_DOWNLOAD.get(os.path.basename(url), os.path.basename(url))
        stale = (
            f" A file named {wanted} is in the cache but does not match Keras's checksum, "
            "so Keras tried to download it again."
            if wanted in before else ""
        )
        return TransferError(
            f"Could not download the ImageNet weights for {spec.name}: Keras wanted {wanted} "
            f"from {url} ({reason}) and looks for it in "
            f"{cache}.{stale}",
            fix=f"On a machine with internet access download {url}, then run "
            f"`transfer weights import {os.path.basename(url)}` here (it copies the file into "
            f"{cache}), or pass weights=None to start from random weights.",
        )
    if "file hash does not match" in text:
        return TransferError(
            f"The downloaded ImageNet weights for {spec.name} are corrupt ({text})",
            fix=f"Delete {cache / name} and try again, or import the file with `transfer weights import FILE`.",
        )
    if isinstance(error, (OSError, ValueError)) and (cache / name).exists():
        return TransferError(
            f"Keras could not load the cached ImageNet weights {cache / name} into {spec.name}: {text}",
            fix=f"Delete {cache / name} and import a fresh copy with `transfer weights import FILE`.",
        )
    return None


def _build_from_file(spec: BackboneSpec, path: Path, shape: tuple):
    if not path.exists():
        raise TransferError(
            f"Weights file not found: '{path}'.",
            fix="Pass an existing weights file (.weights.h5, .h5 or .keras), 'imagenet' or None.",
        )
    if path.is_dir():
        raise TransferError(
            f"Weights path '{path}' is a folder, not a file.",
            fix="Pass the weights file inside it (.weights.h5, .h5 or .keras).",
        )
    if not path.name.lower().endswith(_WEIGHT_SUFFIXES):
        raise TransferError(
            f"Weights file '{path}' has an unknown type: Keras reads .weights.h5, .h5 and .keras files.",
            fix="Pass a Keras weights file; if it is one, give it the right extension.",
        )
    valid = _is_zip(path) if path.name.lower().endswith(".keras") else is_hdf5(path)
    if not valid:
        raise TransferError(
            f"'{path}' is not a valid Keras weights file (it is not "
            f"{'a .keras archive' if path.suffix.lower() == '.keras' else 'HDF5'}).",
            fix="Pass a weights file saved by Keras (model.save_weights) or an official "
            "keras.applications file; an interrupted download is not one.",
        )
    if spec.family == "efficientnet":
        # Keras adds EfficientNet's ImageNet input rescaling only for weights="imagenet".
        logger.warning(
            "%s: Keras builds EfficientNet without its ImageNet input rescaling when weights come "
            "from a file; for the official file, import it (`transfer weights import`) and use "
            "weights='imagenet'.", spec.name,
        )
    try:
        # A mismatched file makes Keras warn once per layer before it raises;
        # keep those for a successful load only.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = spec.instantiate(str(path), shape)
    except Exception as error:  # noqa: BLE001 - Keras raises ValueError, OSError, KeyError... here.
        raise TransferError(
            f"Could not load weights from '{path}' into backbone {spec.name} "
            f"(keras.applications.{spec.constructor}): {_first_line(error)}",
            fix=f"Pass weights saved from the same backbone ({spec.name}, without classifier top), "
            "'imagenet', or None.",
        ) from error
    for message in dict.fromkeys(str(w.message) for w in caught):
        logger.warning("%s: while loading '%s': %s", spec.name, path, message)
    return model, WeightsInfo("file", str(path), f"Weights from {path}")


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    try:
        return {e.name: (e.stat().st_size, e.stat().st_mtime_ns) for e in os.scandir(folder) if e.is_file()}
    except OSError:
        return {}


def is_hdf5(path: Path) -> bool:
    """Whether ``path`` is an HDF5 file (Keras's ``.h5`` weights); False when it cannot be read."""
    import h5py

    try:
        return bool(h5py.is_hdf5(str(path)))
    except OSError:
        return False


def _is_zip(path: Path) -> bool:
    import zipfile

    return zipfile.is_zipfile(path)


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
