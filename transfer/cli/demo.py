"""The demo: a small procedurally drawn dataset and a train -> evaluate -> export -> predict tour.

The dataset (``data/shapes``) is drawn by ``make_shapes_dataset`` with a fixed
seed, so the committed copy can always be rebuilt bit for bit:
``python -m transfer.cli.demo data/shapes``.

With ImageNet weights the demo fine-tunes MobileNet 0.25 on the 120 training
images with a short form of the default recipe. Without them (offline, nothing
imported) it trains a small network from scratch instead: 120 images are too
few for that (measured: 0.39-0.5 validation accuracy), so it first draws
``SCRATCH_TRAIN_PER_CLASS`` more shapes per class with another seed and
validates on the same committed ``data/shapes/val``.

Example:
    >>> make_shapes_dataset("data/shapes")          # circle / square / triangle PNGs
    >>> summary = run_demo("runs/demo")              # what `transfer demo` does
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import random
import re
import shutil
import sys
import time
from pathlib import Path

SHAPES = ("circle", "square", "triangle")
DEMO_BACKBONE = "mobilenet_0.25"
DEMO_IMAGE_SIZE = 96
DEMO_TRAIN_PER_CLASS = 40
DEMO_VAL_PER_CLASS = 12
DEMO_SEED = 7
# From scratch (no ImageNet weights), measured on 900 drawn shapes: the registry's small
# keras.applications backbones learn them slowly (MobileNetV3-Small minimalistic, the
# fastest: 0.97 after 10 epochs at 128 px, 154-171 s of demo; MobileNet 0.25, MobileNetV2
# 0.35, MobileNetV3-Small under 0.7 after 15 epochs at 64 px). transfer.backbones.scratch_cnn's plain
# CNN reaches 1.0 after 6 epochs at 64 px, about 56 s for the whole demo. 120 images are
# too few: 0.39-0.5.
SCRATCH_BACKBONE = "smallcnn"
SCRATCH_TRAIN_PER_CLASS = 300
SCRATCH_SEED = DEMO_SEED + 1
SCRATCH_IMAGE_SIZE = 64
SCRATCH_LEARNING_RATE = 3e-3
# 8 epochs ended at 0.972 (epoch 8's val loss still falling, circle_val_000 called a square);
# 12 reach 1.000 from epoch 7 on (2026-12-07, two CPU cores). Cosine decay over the stage.
SCRATCH_EPOCHS = 12


def make_shapes_dataset(
    root: str | Path,
    *,
    train_per_class: int = DEMO_TRAIN_PER_CLASS,
    val_per_class: int = DEMO_VAL_PER_CLASS,
    size: int = 64,
    seed: int = DEMO_SEED,
) -> Path:
    """Draw ``root/{train,val}/{circle,square,triangle}/*.png``; returns ``root``."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    root = Path(root)
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        if not count:
            continue
        for shape in SHAPES:
            folder = root / split / shape
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                background = tuple(rng.randrange(0, 256) for _ in range(3))
                color = tuple((c + rng.randrange(80, 176)) % 256 for c in background)
                image = Image.new("RGB", (size, size), background)
                draw = ImageDraw.Draw(image)
                radius = rng.uniform(0.18, 0.36) * size
                cx = rng.uniform(radius, size - radius)
                cy = rng.uniform(radius, size - radius)
                angle = rng.uniform(0, 2 * math.pi)
                if shape == "circle":
                    draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=color)
                else:
                    corners = 4 if shape == "square" else 3
                    points = [
                        (cx + radius * math.cos(angle + 2 * math.pi * k / corners),
                         cy + radius * math.sin(angle + 2 * math.pi * k / corners))
                        for k in range(corners)
                    ]
                    draw.polygon(points, fill=color)
                image.save(folder / f"{shape}_{split}_{i:03d}.png", optimize=True)
    return root


def find_demo_data() -> Path | None:
    """The committed ``data/shapes`` next to the package (source checkout) or in the cwd."""
    candidates = (Path(__file__).resolve().parents[1] / "data" / "shapes", Path.cwd() / "data" / "shapes")
    for candidate in candidates:
        if (candidate / "train").is_dir():
            return candidate
    return None


def demo_settings(pretrained: bool):
    """``(backbone, recipe, image_size)`` for the demo.

    Pretrained: a short form of the default recipe on MobileNet 0.25 at 96 px.
    From scratch (frozen random features are useless, so everything trains,
    BatchNorm included): ``SCRATCH_BACKBONE`` at ``SCRATCH_IMAGE_SIZE`` px,
    plain Adam at 3e-3 with cosine decay, no warmup, weight decay, label
    smoothing or dropout, batch 16, validated on a one-epoch weight average,
    on drawn shapes (``scratch_data``).
    """
    from transfer.core.recipe import Recipe, Stage

    if pretrained:
        # The default recipe, shortened: head on cached features, then everything.
        # Without label smoothing: measured 1.000 vs 0.944 val accuracy on these 36 images.
        # Without the small-data head and fine-tune check (120 images would get both): the
        # check would double the demo's time, and this recipe scored 1.000 as it is.
        stages = (Stage("head", "head", 3e-3, 10), Stage("finetune", "all", 1e-3, 4))
        recipe = Recipe(stages=stages, batch_size=16, augment=("flip", "rotate"), seed=DEMO_SEED,
                        label_smoothing=0.0, small_data_max_images=0)
        return DEMO_BACKBONE, recipe, DEMO_IMAGE_SIZE
    stages = (Stage("scratch", "all", SCRATCH_LEARNING_RATE, SCRATCH_EPOCHS),)
    recipe = Recipe(stages=stages, batch_size=16, dropout=0.0, augment=("flip", "rotate"), seed=DEMO_SEED,
                    optimizer="adam", weight_decay=0.0, label_smoothing=0.0, warmup_epochs=0.0, ema_epochs=1.0)
    return SCRATCH_BACKBONE, recipe, SCRATCH_IMAGE_SIZE


def scratch_data(root: str | Path, data_dir: str | Path, *, per_class: int = SCRATCH_TRAIN_PER_CLASS) -> Path:
    """``root/train``: ``per_class`` freshly drawn shapes per class (another seed than
    ``data_dir``'s); ``root/val``: a copy of ``data_dir/val``, so the score is on the
    committed validation images. Returns ``root``."""
    root = Path(root)
    make_shapes_dataset(root, train_per_class=per_class, val_per_class=0, seed=SCRATCH_SEED)
    shutil.copytree(Path(data_dir) / "val", root / "val", dirs_exist_ok=True)
    return root


def imagenet_fallback_line(backbone: str, error) -> str:
    """The one line the demo prints when ImageNet weights cannot be had."""
    from transfer.backbones import get_backbone
    from transfer.backbones.weights import imagenet_file_name, keras_cache_dir

    name = imagenet_file_name(get_backbone(backbone))
    cached = (keras_cache_dir() / name).exists()
    why = "the cached file does not load" if cached else "none cached, download failed"
    return (f"No ImageNet weights ({why}): training from scratch, as --weights none does. "
            f"To use them: transfer weights import {name}")


DEMO_OUTPUTS = ("run", "export", "drawn-shapes", "data")  # what run_demo writes in its folder


def prepare_demo_dir(out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Make ``out_dir`` ready for a demo and mark it as one (``transfer.core.artifacts``); returns it.

    A new or empty folder is used as it is. An earlier demo's folder (its
    marker, or the layout earlier versions wrote: ``legacy_demo_entries``)
    needs ``overwrite``, and then only what that demo wrote is removed (other
    files stay). Anything else is refused: the demo never deletes or mixes
    with a folder it did not make, nor writes into its committed data.

    Example:
        >>> prepare_demo_dir("runs/demo-20250101-120000")
        PosixPath('runs/demo-20250101-120000')
    """
    from transfer.core.artifacts import MARKER, artifact_kind, check_outside, owned_entries, write_marker
    from transfer.core.errors import TransferError

    out = Path(out_dir)
    committed = find_demo_data()
    check_outside(out, [(committed, "the demo's committed data")] if committed else [])
    if out.exists() and not out.is_dir():
        raise TransferError(f"--out {out} is a file, not a folder.", fix="Choose a folder path.")
    held = sorted(set(os.listdir(out)) - {MARKER}) if out.is_dir() else []
    if held:
        if artifact_kind(out, {"demo": legacy_demo_entries}) != "demo":
            shown = ", ".join(f"'{n}'" for n in held[:3]) + (f" and {len(held) - 3} more" if len(held) > 3 else "")
            raise TransferError(
                f"--out {out} is not a demo folder (it holds {shown}); transfer demo writes into a new or empty "
                "folder, and --overwrite replaces only an earlier demo's.",
                fix="Choose another --out, or leave --out out for a new runs/demo-YYYYmmdd-HHMMSS folder.",
            )
        # Only what that demo wrote; other files in its folder are kept.
        present = [n for n in sorted(owned_entries(out, "demo", legacy_demo_entries(out)) & set(DEMO_OUTPUTS))
                   if (out / n).exists() or (out / n).is_symlink()]
        if present and not overwrite:
            raise TransferError(f"{out} already holds a demo run.",
                                fix="Pass --overwrite to replace it, another --out, or no --out for a new folder.")
        for name in present:
            path = out / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    # data/ is drawn into the folder only when the committed copy is missing (run_demo).
    write_marker(out, "demo", [n for n in DEMO_OUTPUTS if n != "data" or committed is None])
    return out


def legacy_demo_entries(folder: str | Path) -> list[str] | None:
    """What a demo written before markers existed holds of ``DEMO_OUTPUTS``; None if ``folder`` is not one.

    Its ``run/run.json`` names a demo backbone and the demo's data (the
    committed shapes, or ``drawn-shapes``/``data`` beside it), ``export`` is an
    export and ``drawn-shapes``/``data`` hold only drawn shapes.
    """
    from transfer.core.artifacts import artifact_kind
    from transfer.core.regular_files import read_regular

    folder = Path(folder)
    try:
        config = json.loads(read_regular(folder / "run" / "run.json", max_bytes=1 << 20))
    except (OSError, ValueError):  # missing, not a regular file (TransferError is an OSError here), not JSON
        return None
    if not isinstance(config, dict) or config.get("backbone") not in (DEMO_BACKBONE, SCRATCH_BACKBONE):
        return None
    sources = [folder / "drawn-shapes", folder / "data", *([find_demo_data()] if find_demo_data() else [])]
    source = config.get("data_source")
    if not isinstance(source, str) or Path(source).resolve() not in {p.resolve() for p in sources}:
        return None
    present = [n for n in DEMO_OUTPUTS if (folder / n).exists()]
    if "export" in present and artifact_kind(folder / "export") != "export":
        return None
    if not all(_drawn_shapes_only(folder / n) for n in ("drawn-shapes", "data") if n in present):
        return None
    return present


def _drawn_shapes_only(root: Path) -> bool:
    """``root`` holds nothing but ``make_shapes_dataset`` output (``{train,val}/SHAPE/SHAPE_SPLIT_NNN.png``)."""
    name = re.compile(rf"({'|'.join(SHAPES)})_(train|val)_\d{{3}}\.png")
    try:
        for split in os.scandir(root):
            if split.name not in ("train", "val") or not split.is_dir(follow_symlinks=False):
                return False
            for shape in os.scandir(split.path):
                if shape.name not in SHAPES or not shape.is_dir(follow_symlinks=False):
                    return False
                if not all(f.is_file(follow_symlinks=False) and name.fullmatch(f.name) for f in os.scandir(shape.path)):
                    return False
    except OSError:
        return False
    return True


def new_demo_dir(base: str | Path = "runs") -> Path:
    """A folder name no run uses yet: ``runs/demo-YYYYmmdd-HHMMSS`` (``-2``, ``-3`` ... on a clash)."""
    stem = Path(base) / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    candidate, n = stem, 1
    while candidate.exists():
        n += 1
        candidate = stem.with_name(f"{stem.name}-{n}")
    return candidate


def demo_answer_text(answer: dict) -> str:
    """One demo prediction in words, saying whether it is right (the true class is the file's folder).

    Example:
        >>> demo_answer_text({"predictions": [{"class": "square", "score": 0.73}], "true_class": "circle"})
        'square 0.730 (wrong: it is a circle)'
    """
    if "error" in answer:
        return answer["error"]
    best = answer["predictions"][0]
    verdict = "right" if best["class"] == answer["true_class"] else f"wrong: it is a {answer['true_class']}"
    return f"{best['class']} {best['score']:.3f} ({verdict})"


def recipe_text(recipe) -> str:
    """The recipe in a few words: ``head 10 ep @ 3e-3, then all 4 ep @ 1e-3; adamw, batch 16``."""
    stages = ", then ".join(f"{s.trainable} {s.epochs} ep @ {s.learning_rate:g}" for s in recipe.stages)
    return f"{stages}; {recipe.optimizer}, batch {recipe.batch_size}"


def run_demo(out_dir: str | Path, *, weights: str | None = "imagenet", verbose: int = 1,
             epochs: int | None = None, drawn_per_class: int = SCRATCH_TRAIN_PER_CLASS) -> dict:
    """Train, evaluate, export and predict on the shapes data; returns what went where.

    Without ImageNet weights (``weights=None``, or none to be had offline: it
    says so in one line) it trains ``SCRATCH_BACKBONE`` from scratch on drawn
    shapes (see the module doc). ``epochs`` overrides every stage's epochs and
    ``drawn_per_class`` the number of drawn shapes (for quick tests). Writes
    ``out_dir/run``, ``out_dir/export`` and, from scratch, ``out_dir/drawn-shapes``.
    """
    from transfer.backbones import get_backbone
    from transfer.data import load_data
    from transfer.core.errors import TransferError
    from transfer.engine.evaluate import evaluate_run
    from transfer.serving.export import export_run
    from transfer.tasks.classify.reader import ExportedClassifier
    from transfer.engine.train import train
    from transfer.backbones.weights import build_backbone

    started = time.perf_counter()
    out_dir = prepare_demo_dir(out_dir)  # a new, empty or just-cleared demo folder: refuses any other
    data_dir = find_demo_data() or make_shapes_dataset(out_dir / "data")
    say = print if verbose else (lambda *a, **k: None)
    say(f"Demo data: {data_dir}")
    if weights is not None:
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # Keras's "Downloading data from ..." line
                build_backbone(get_backbone(DEMO_BACKBONE), weights, DEMO_IMAGE_SIZE)
        except TransferError as exc:
            say(imagenet_fallback_line(DEMO_BACKBONE, exc))
            weights = None
    backbone, recipe, image_size = demo_settings(weights is not None)
    if epochs is not None:
        recipe = recipe.with_epochs(epochs)
    train_dir = data_dir
    if weights is None:
        train_dir = scratch_data(out_dir / "drawn-shapes", data_dir, per_class=drawn_per_class)
        say(f"From scratch: {backbone} at {image_size} px on {drawn_per_class * len(SHAPES)} drawn shapes "
            f"({train_dir / 'train'}), validated on {data_dir / 'val'}")
    run_dir = out_dir / "run"
    result = train(
        load_data(train_dir, seed=DEMO_SEED), run_dir, backbone=backbone, weights=weights,
        image_size=image_size, recipe=recipe, data_source=str(train_dir), verbose=verbose,
    )
    report = evaluate_run(run_dir)
    export_dir = export_run(run_dir, out_dir / "export", overwrite=True)
    # The first validation image of each class, in a fixed order (not the ones it gets right).
    examples = sorted((data_dir / "val").glob("*/*.png"))[:: DEMO_VAL_PER_CLASS][: len(SHAPES)]
    predictions = ExportedClassifier.load(export_dir).predict_files([str(p) for p in examples], top_k=1)
    for example, answer in zip(examples, predictions):
        answer["true_class"] = example.parent.name  # the class folder it is in
        if "predictions" in answer:
            answer["correct"] = answer["predictions"][0]["class"] == answer["true_class"]
    return {
        "data": train_dir,
        "run": result.run_dir,
        "backbone": backbone,
        "image_size": image_size,
        "recipe": recipe,
        "recipe_text": recipe_text(recipe),
        "accuracy": report.accuracy,
        "evaluation": run_dir / "evaluation",
        "export": export_dir,
        "predictions": predictions,
        "weights": "imagenet" if weights is not None else "random",
        "seconds": time.perf_counter() - started,
    }


if __name__ == "__main__":  # rebuild the committed demo data: python -m transfer.cli.demo data/shapes
    print(make_shapes_dataset(sys.argv[1] if len(sys.argv) > 1 else "data/shapes"))
