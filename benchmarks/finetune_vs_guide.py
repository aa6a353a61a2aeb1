"""Side by side: the Keras transfer-learning guide's recipe vs transfer's default recipe.

Both run in this one process on the same data, split, seed, weights, image
size and batch size, and the script prints, for each, the validation accuracy
and the wall time of every stage, then the accuracy difference and time ratio.

(a) "guide": what a Keras user writes after the official guide
    (keras.io/guides/transfer_learning), plainly: augmentation layers in the
    model, a frozen backbone called with training=False and a new head trained
    at 1e-3, then everything unfrozen and trained at 1e-5.
(b) "transfer": transfer's default recipe. ``--engine modules`` (the default)
    runs it with transfer's engine modules directly (cached-feature head,
    warmup + cosine AdamW fine-tune; the recipe is printed and can be changed
    with ``--set key=value``); ``--engine train`` runs ``transfer.train`` with
    ``--recipe`` (or its built-in default recipe).

Accuracy is the validation accuracy after the last epoch of each stage (no
pick of the best epoch on validation data, for either side); the best epoch's
value is shown next to it.

Example (about 6 minutes on two CPU cores):

    python benchmarks/finetune_vs_guide.py --data ../shared/fixtures/flowers5 \\
        --backbone mobilenet_0.25 \\
        --weights ../shared/fixtures/weights/mobilenet_2_5_224_tf_no_top.h5 \\
        --image-size 128 --seed 0 --batch-size 32 --json-out results.json

    # one fine-tune epoch in float32 vs mixed precision vs XLA (timed, extrapolated)
    python benchmarks/finetune_vs_guide.py --data ... --weights ... --only speed
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from transfer.backbones import get_backbone  # noqa: E402
from transfer.data import load_data  # noqa: E402
from transfer.data.pipelines.images import make_dataset, steps_per_epoch, targets_array  # noqa: E402
from transfer.engine.feature_cache import extract_features  # noqa: E402
from transfer.tasks.classify.head_fit import fit_head_on_features  # noqa: E402
from transfer.core.recipe import Recipe, Stage  # noqa: E402
from transfer.engine.schedules import make_optimizer, warmup_cosine, warmup_steps_for  # noqa: E402
from transfer.tasks.classify.model import build_classifier, loss_and_metrics  # noqa: E402
from transfer.engine.freezing import set_trainable  # noqa: E402
from transfer.backbones.weights import build_backbone  # noqa: E402


# --------------------------------------------------------------------------
# Results


@dataclass
class StageResult:
    name: str
    epochs: int
    seconds: float
    val_accuracy: float  # after the stage's last epoch
    best_val_accuracy: float
    val_curve: list[float] = field(default_factory=list)


@dataclass
class RunResult:
    name: str
    stages: list[StageResult]
    settings: dict

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.stages)

    @property
    def val_accuracy(self) -> float:
        return self.stages[-1].val_accuracy


class _Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start


# --------------------------------------------------------------------------
# (a) The guide's recipe, written plainly with Keras (no transfer code in the model or loop).


def guide_datasets(split, image_size: int, batch_size: int, seed: int):
    """Plain tf.data from the split's files: decode, resize, cache, shuffle, batch."""

    def load(data, label):
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
        image = tf.image.resize(image, (image_size, image_size))
        return image, label

    def make(samples, training):
        if samples.encoded is not None:  # in-memory sources (tfds:...)
            files = tf.data.Dataset.from_tensor_slices(list(samples.encoded))
        else:
            files = tf.data.Dataset.from_tensor_slices(list(samples.sources)).map(tf.io.read_file)
        ds = tf.data.Dataset.zip((files, tf.data.Dataset.from_tensor_slices(list(samples.targets))))
        ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE).cache()
        if training:
            ds = ds.shuffle(len(samples), seed=seed)
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)

    return make(split.train, True), make(split.val, False)


def run_guide(split, args) -> RunResult:
    keras.utils.set_random_seed(args.seed)
    stages = []
    with _Timer() as t:
        train_ds, val_ds = guide_datasets(split, args.image_size, args.batch_size, args.seed)
        spec = get_backbone(args.backbone)
        # The guide calls keras.applications.<Model>(weights="imagenet", include_top=False, ...)
        # directly; build_backbone is that call with a weights file allowed.
        base_model, _ = build_backbone(spec, args.weights, args.image_size)
        base_model.trainable = False
        augmentation = keras.Sequential(
            [keras.layers.RandomFlip("horizontal"), keras.layers.RandomRotation(0.1)], name="augmentation"
        )
        inputs = keras.Input((args.image_size, args.image_size, 3))
        x = augmentation(inputs)
        x = _guide_scaling(spec.preprocessing)(x)
        x = base_model(x, training=False)
        x = keras.layers.GlobalAveragePooling2D()(x)
        x = keras.layers.Dropout(0.2)(x)
        outputs = keras.layers.Dense(split.train.num_classes)(x)
        model = keras.Model(inputs, outputs)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss, metrics=["accuracy"])
        head = model.fit(train_ds, epochs=args.guide_head_epochs, validation_data=val_ds, verbose=args.verbose)
    stages.append(_stage("head", args.guide_head_epochs, t.seconds, head.history["val_accuracy"]))
    with _Timer() as t:
        base_model.trainable = True
        model.compile(optimizer=keras.optimizers.Adam(1e-5), loss=loss, metrics=["accuracy"])
        tune = model.fit(
            train_ds, epochs=args.guide_finetune_epochs, validation_data=val_ds, verbose=args.verbose
        )
    stages.append(_stage("finetune", args.guide_finetune_epochs, t.seconds, tune.history["val_accuracy"]))
    settings = {"head": f"{args.guide_head_epochs} epochs, Adam 1e-3, backbone frozen",
                "finetune": f"{args.guide_finetune_epochs} epochs, Adam 1e-5, all layers",
                "augment": "RandomFlip(horizontal), RandomRotation(0.1)"}
    return RunResult("guide", stages, settings)


def _guide_scaling(mode: str):
    """The guide's preprocessing, as the layer a user would write for the family."""
    if mode == "tf":
        return keras.layers.Rescaling(scale=1 / 127.5, offset=-1)
    if mode == "torch":
        return keras.layers.Normalization(
            mean=[0.485 * 255, 0.456 * 255, 0.406 * 255], variance=[(s * 255) ** 2 for s in (0.229, 0.224, 0.225)]
        )
    if mode == "caffe":
        return keras.layers.Lambda(lambda x: x[..., ::-1] - np.array([103.939, 116.779, 123.68], "float32"))
    return keras.layers.Identity()


# --------------------------------------------------------------------------
# (b) transfer's default recipe through the engine modules.


@dataclass
class Candidate:
    """The recipe run by ``--engine modules``; the defaults are the proposed default recipe.

    Stage 1 "head" (trainable = "head"): the head is trained on cached
    features of ``head_cache_views`` views per image (view 0 plain, the others
    augmented). Then the ``finetune`` stages train their layers through the
    whole model with augmentation, each with a linear warmup for
    ``warmup_epochs`` then cosine decay. ``batchnorm``: "frozen" (inference
    mode, nothing trains), "affine" (inference mode with the ImageNet
    statistics, but scale and offset train) or "train" (batch statistics).
    """

    head_epochs: int = 10
    head_learning_rate: float = 3e-3
    head_cache_views: int = 1
    # The stages after the head, comma-separated "trainable@learning_rate@epochs"
    # (e.g. "top:7@0.001@3,all@0.0005@5" unfreezes gradually by named blocks).
    finetune: str = "all@0.001@8"
    warmup_epochs: float = 1.0
    optimizer: str = "adamw"
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    dropout: float = 0.2
    augment: str = "flip,zoom"  # comma-separated, as the recipe's augment list
    batchnorm: str = "frozen"  # frozen | affine (scale/offset train, statistics frozen) | train
    early_stopping_patience: int = 0  # 0: off
    validate_each_epoch: bool = True  # False: only after each stage (saves a val pass per epoch)
    translate: float = 0.0  # experimental: random shifts up to this fraction of the side (reflect padding)

    def finetune_stages(self) -> list[Stage]:
        stages = []
        for i, item in enumerate(s for s in self.finetune.split(",") if s.strip()):
            trainable, lr, epochs = item.strip().split("@")
            stages.append(Stage(f"finetune{i + 1}" if "," in self.finetune else "finetune", trainable,
                                float(lr), int(epochs)))
        return stages

    def recipe_toml(self, batch_size: int, seed: int) -> str:
        """The candidate in recipe TOML form (new fields marked)."""
        return "\n".join([
            f"batch_size = {batch_size}",
            f"dropout = {self.dropout}",
            f"label_smoothing = {self.label_smoothing}",
            f'optimizer = "{self.optimizer}"',
            f"weight_decay = {self.weight_decay}",
            f"augment = {json.dumps(self.augment.split(','))}",
            f"seed = {seed}",
            f"head_cache_views = {self.head_cache_views}        # new",
            f"warmup_epochs = {self.warmup_epochs}           # new",
            f'batchnorm = "{self.batchnorm}"     # new',
            f"early_stopping_patience = {self.early_stopping_patience}  # new",
            f"validate_each_epoch = {str(self.validate_each_epoch).lower()}  # new",
            *([f"translate = {self.translate}  # new, experimental"] if self.translate else []),
            "",
            "[[stages]]",
            'name = "head"',
            'trainable = "head"',
            f"learning_rate = {self.head_learning_rate}",
            f"epochs = {self.head_epochs}",
            "",
        ] + [
            line for st in self.finetune_stages() for line in (
                "", "[[stages]]", f'name = "{st.name}"', f'trainable = "{st.trainable}"',
                f"learning_rate = {st.learning_rate}", f"epochs = {st.epochs}")
        ])


def parse_overrides(pairs: list[str]) -> Candidate:
    candidate = Candidate()
    types = {f.name: f.type for f in dataclasses.fields(Candidate)}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in types:
            raise SystemExit(f"--set {pair!r}: expected key=value with key in {sorted(types)}")
        kind = {"int": int, "float": float, "str": str, "bool": lambda v: v.lower() in ("1", "true", "yes")}[types[key]]
        candidate = dataclasses.replace(candidate, **{key: kind(value)})
    return candidate


def run_transfer_modules(split, args, c: Candidate) -> RunResult:
    keras.utils.set_random_seed(args.seed)
    spec = get_backbone(args.backbone)
    augment = tuple(a for a in c.augment.split(",") if a)
    y_train, y_val = targets_array(split.train), targets_array(split.val)
    steps = steps_per_epoch(split.train, args.batch_size)
    # A fresh folder by default, so the head stage is timed with a cold cache.
    scratch = None if args.cache_dir else tempfile.TemporaryDirectory(prefix="transfer-features-")
    cache_dir = args.cache_dir or scratch.name
    stages = []
    with _Timer() as t:
        model, info = build_classifier(spec, split.train.num_classes, args.image_size, weights=args.weights,
                                       dropout=c.dropout)
        # Random weights have no statistics to keep: their BatchNorm trains (as in transfer.train).
        freeze_batchnorm = info.source != "random" and c.batchnorm != "train"
        if not freeze_batchnorm:
            model, _ = build_classifier(spec, split.train.num_classes, args.image_size, weights=args.weights,
                                        dropout=c.dropout, freeze_batchnorm=False)
        if c.head_epochs:
            feats = extract_features(model, split.train, args.image_size, 64, views=c.head_cache_views,
                                     augment=augment, seed=args.seed, cache_dir=cache_dir)
            val_feats = extract_features(model, split.val, args.image_size, 64, cache_dir=cache_dir)
            total = steps * c.head_epochs
            optimizer = make_optimizer(c.optimizer, warmup_cosine(c.head_learning_rate, total),
                                       weight_decay=c.weight_decay, model=model)
            head = fit_head_on_features(
                model, feats, y_train, epochs=c.head_epochs, optimizer=optimizer, batch_size=args.batch_size,
                label_smoothing=c.label_smoothing, validation=(val_feats, y_val), seed=args.seed,
            )
            curve = head.history["val_accuracy"]
        else:
            curve = [0.0]  # no head stage: only the model build is timed here
    stages.append(_stage("head (cached)" if c.head_epochs else "build", c.head_epochs, t.seconds, curve))
    train_ds = make_dataset(split.train, args.image_size, args.batch_size, training=True,
                            augment=augment, seed=args.seed)
    if c.translate:
        # Shifts keep the objects' scale as validation sees it (zoom crops enlarge them).
        shift = keras.layers.RandomTranslation(c.translate, c.translate, fill_mode="reflect", seed=args.seed)
        train_ds = train_ds.map(lambda x, y: (tf.cast(tf.round(shift(tf.cast(x, "float32"), training=True)),
                                                      tf.uint8), y), num_parallel_calls=tf.data.AUTOTUNE)
    val_ds = make_dataset(split.val, args.image_size, args.batch_size, training=False)
    loss, _ = loss_and_metrics(False, c.label_smoothing)
    epoch = 0
    for stage in c.finetune_stages():
        with _Timer() as t:
            set_trainable(model, spec, stage, freeze_batchnorm=freeze_batchnorm)
            if c.batchnorm == "affine":
                _train_batchnorm_affine(model.get_layer("backbone"))
            total = steps * stage.epochs
            schedule = warmup_cosine(stage.learning_rate, total, warmup_steps_for(steps, c.warmup_epochs, total))
            _, metrics = loss_and_metrics(False, c.label_smoothing)
            model.compile(optimizer=make_optimizer(c.optimizer, schedule, weight_decay=c.weight_decay, model=model),
                          loss=loss, metrics=metrics, jit_compile=args.xla)
            callbacks = []
            if c.early_stopping_patience and c.validate_each_epoch:
                callbacks.append(keras.callbacks.EarlyStopping(
                    "val_accuracy", patience=c.early_stopping_patience, restore_best_weights=True))
            tune = model.fit(train_ds, validation_data=val_ds if c.validate_each_epoch else None,
                             epochs=epoch + stage.epochs, initial_epoch=epoch, verbose=args.verbose,
                             callbacks=callbacks)
            if c.validate_each_epoch:
                curve = tune.history["val_accuracy"]
            else:
                curve = [model.evaluate(val_ds, verbose=0, return_dict=True)["accuracy"]]
        epoch += stage.epochs
        stages.append(_stage(f"{stage.name} {stage.trainable}", len(tune.epoch), t.seconds, curve))
    if scratch is not None:
        scratch.cleanup()
    settings = {"engine": "modules", "recipe_toml": c.recipe_toml(args.batch_size, args.seed),
                "precision": args.precision, "xla": args.xla}
    return RunResult("transfer", stages, settings)


def _train_batchnorm_affine(backbone) -> None:
    """BatchNorm scale/offset trainable while normalizing with the frozen ImageNet statistics.

    Keras has no switch for it (trainable=False freezes both, trainable=True
    in fit uses batch statistics), so each layer's call is pinned to
    inference mode. Benchmark-only: the pin is not saved with the model.
    """
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = True
            original = layer.call

            def call(inputs, training=None, mask=None, _original=original):
                return _original(inputs, training=False, mask=mask)

            layer.call = call


def run_transfer_train(split, args) -> RunResult:
    """transfer.train() with --recipe or its default recipe: total time and final accuracy."""
    import transfer
    from transfer.engine.train import train

    recipe = Recipe.load(args.recipe) if args.recipe else Recipe()
    recipe = dataclasses.replace(recipe, seed=args.seed, batch_size=args.batch_size)
    scratch = Path(tempfile.mkdtemp(prefix="transfer-bench-"))
    out = scratch / "run"
    # A fresh feature cache unless --cache-dir: the head stage is timed cold.
    cache_dir = args.cache_dir or scratch / "features"
    with _Timer() as t:
        train(split, out, backbone=args.backbone, weights=args.weights, image_size=args.image_size,
              recipe=recipe, verbose=args.verbose, feature_cache=cache_dir)
    import csv

    rows = list(csv.DictReader(open(out / "history.csv")))
    stages = []
    for name in dict.fromkeys(r["stage"] for r in rows):  # in order
        own = [r for r in rows if r["stage"] == name]
        curve = [float(r["val_accuracy"]) for r in own]
        # Epoch wall times (history.csv); setup, feature extraction and the final evaluation are in TOTAL only.
        stages.append(_stage(f"{name} (epochs)", len(own), sum(float(r["seconds"]) for r in own), curve))
    # The rest of the wall time: data check, model build, feature extraction, final evaluation.
    rest = t.seconds - sum(st.seconds for st in stages)
    stages.append(StageResult("other (setup, eval)", 0, rest, stages[-1].val_accuracy,
                              stages[-1].best_val_accuracy, []))
    return RunResult("transfer", stages, {"engine": "train", "recipe_toml": recipe.to_toml(),
                                          "transfer_version": transfer.__version__})


# --------------------------------------------------------------------------
# Speed of one fine-tune epoch: float32 vs mixed precision vs XLA.


def speed_test(split, args, steps_timed: int) -> list[dict]:
    """Seconds per training step of a full fine-tune (BatchNorm frozen), extrapolated to one epoch."""
    results = []
    steps = steps_per_epoch(split.train, args.batch_size)
    mixed = "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"
    for name, policy, xla in (("float32", "float32", False), (mixed, mixed, False), ("float32 + XLA", "float32", True)):
        keras.mixed_precision.set_global_policy(policy)
        keras.utils.set_random_seed(args.seed)
        model, _ = build_classifier(get_backbone(args.backbone), split.train.num_classes, args.image_size,
                                    weights=args.weights)
        set_trainable(model, get_backbone(args.backbone), Stage("all", "all"))
        loss, metrics = loss_and_metrics(False)
        model.compile(optimizer=make_optimizer("adamw", 1e-4, weight_decay=0.05, model=model), loss=loss,
                      metrics=metrics, jit_compile=xla)
        ds = make_dataset(split.train, args.image_size, args.batch_size, training=True, augment=("flip",),
                          seed=args.seed).take(steps_timed + 2).cache()
        for _ in ds:  # decode outside the timing
            pass
        with _Timer() as warm:
            model.fit(ds.take(2), epochs=1, verbose=0)  # traces / compiles
        with _Timer() as t:
            model.fit(ds.skip(2), epochs=1, verbose=0)
        per_step = t.seconds / steps_timed
        results.append({"setting": name, "seconds_per_step": per_step, "epoch_seconds": per_step * steps,
                        "compile_seconds": warm.seconds})
        print(f"  {name:<16} {per_step * 1000:8.1f} ms/step  ~{per_step * steps:7.1f} s/epoch "
              f"(first 2 steps incl. compile {warm.seconds:.1f} s)", flush=True)
    keras.mixed_precision.set_global_policy("float32")
    base = results[0]["seconds_per_step"]
    for r in results:
        r["speedup_vs_float32"] = base / r["seconds_per_step"]
    return results


# --------------------------------------------------------------------------


def _stage(name, epochs, seconds, curve) -> StageResult:
    curve = [float(v) for v in curve]
    return StageResult(name, epochs, seconds, curve[-1], max(curve), curve)


def print_table(results: list[RunResult]) -> None:
    print()
    print(f"{'recipe':<10} {'stage':<20} {'epochs':>6} {'val acc':>8} {'(best)':>7} {'seconds':>8}")
    print("-" * 64)
    for r in results:
        for s in r.stages:
            print(f"{r.name:<10} {s.name:<20} {s.epochs:>6} {s.val_accuracy:>8.4f} {s.best_val_accuracy:>7.4f} "
                  f"{s.seconds:>8.1f}")
        print(f"{r.name:<10} {'TOTAL':<20} {'':>6} {r.val_accuracy:>8.4f} {'':>7} {r.seconds:>8.1f}")
        print("-" * 64)
    by_name = {r.name: r for r in results}
    if {"guide", "transfer"} <= set(by_name):
        g, t = by_name["guide"], by_name["transfer"]
        print(f"accuracy difference (transfer - guide): {t.val_accuracy - g.val_accuracy:+.4f}")
        print(f"time ratio (transfer / guide):          {t.seconds / g.seconds:.3f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="folder with one subfolder per class (or CSV / tfds:NAME)")
    parser.add_argument("--backbone", default="mobilenet_0.25")
    parser.add_argument("--weights", default="imagenet", help="'imagenet', a weights file, or 'none'")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--only", choices=("guide", "transfer", "both", "speed"), default="both",
                        help="which side to run ('speed': only the float32/mixed/XLA epoch timing)")
    parser.add_argument("--engine", choices=("modules", "train"), default="train",
                        help="how to run transfer's recipe: transfer.train() (the default Recipe() or --recipe), "
                             "or the engine modules with the --set candidate (the pre-panel recipe, for experiments)")
    parser.add_argument("--recipe", help="recipe TOML for --engine train (default: transfer's default)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a field of the --engine modules recipe (repeatable); "
                             f"keys: {', '.join(f.name for f in dataclasses.fields(Candidate))}")
    parser.add_argument("--guide-head-epochs", type=int, default=10)
    parser.add_argument("--guide-finetune-epochs", type=int, default=5)
    parser.add_argument("--precision", choices=("float32", "mixed"), default="float32",
                        help="transfer side: mixed = bfloat16 on CPU, float16 on GPU")
    parser.add_argument("--xla", action="store_true", help="transfer side: compile the fine-tune with XLA")
    parser.add_argument("--speed-test", action="store_true",
                        help="also time one fine-tune epoch in float32, mixed precision and with XLA")
    parser.add_argument("--speed-steps", type=int, default=10, help="training steps timed per setting")
    parser.add_argument("--cache-dir", help="feature cache folder (default: a fresh temporary folder)")
    parser.add_argument("--json-out", help="write all results to this JSON file")
    parser.add_argument("--verbose", type=int, default=2, help="Keras fit verbosity (0, 1, 2)")
    args = parser.parse_args(argv)

    split = load_data(args.data, val_fraction=args.val_fraction, seed=args.seed)
    print(f"data: {args.data}: {len(split.train)} train / {len(split.val)} val images, "
          f"{split.train.num_classes} classes ({split.origin})")
    print(f"backbone {args.backbone}, weights {args.weights}, {args.image_size} px, batch {args.batch_size}, "
          f"seed {args.seed}; {os.cpu_count()} CPUs, {len(tf.config.list_physical_devices('GPU'))} GPUs",
          flush=True)
    results: list[RunResult] = []
    speed = None
    if args.only in ("guide", "both"):
        print("\n== guide recipe ==", flush=True)
        results.append(run_guide(split, args))
    if args.only in ("transfer", "both"):
        print("\n== transfer recipe ==", flush=True)
        if args.precision == "mixed":
            keras.mixed_precision.set_global_policy(
                "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16")
        if args.engine == "train":
            results.append(run_transfer_train(split, args))
        else:
            candidate = parse_overrides(args.set)
            print(candidate.recipe_toml(args.batch_size, args.seed), flush=True)
            results.append(run_transfer_modules(split, args, candidate))
        keras.mixed_precision.set_global_policy("float32")
    if args.speed_test or args.only == "speed":
        print("\n== one fine-tune epoch: float32 vs mixed precision vs XLA ==", flush=True)
        speed = speed_test(split, args, args.speed_steps)
    print_table(results)
    if args.json_out:
        payload = {
            "args": vars(args),
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0],
                        "tensorflow": tf.__version__, "keras": keras.__version__},
            "results": [{**dataclasses.asdict(r), "total_seconds": r.seconds, "val_accuracy": r.val_accuracy}
                        for r in results],
            "speed": speed,
        }
        by_name = {r.name: r for r in results}
        if {"guide", "transfer"} <= set(by_name):
            payload["accuracy_difference"] = by_name["transfer"].val_accuracy - by_name["guide"].val_accuracy
            payload["time_ratio"] = by_name["transfer"].seconds / by_name["guide"].seconds
        Path(args.json_out).write_text(json.dumps(payload, indent=2) + "\n")
        print(f"results written to {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
