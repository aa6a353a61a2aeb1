"""The training recipe: what trains, how fast, for how long.

A ``Recipe`` is a few global settings plus an ordered tuple of ``Stage``s. Each
stage says what is trainable (``"head"``, ``"top:N"`` backbone blocks plus the
head, or ``"all"``), its learning rate and its epochs. Recipes read and write
TOML, and the exact recipe is saved with every run and export.

The default recipe (chosen on a panel of datasets against the Keras
transfer-learning guide's recipe and a linear probe, ``benchmarks/panel.py``):
the head trains for 30 epochs (and at least 600 steps) at 3e-3 on cached
backbone features (seconds, not minutes), then the whole network fine-tunes
for 8 epochs with AdamW (weight decay 0.05, kept off biases and normalization weights), a 1-epoch
linear warmup to 1e-3 for the head and 3e-4 for the backbone, then cosine
decay; validation, checkpoints and the final model use a moving average of
the weights over about one epoch and at least 100 steps; label smoothing
0.1 and flip + zoom augmentation; a pretrained backbone's BatchNorm stays in
inference mode throughout. On 60-300 training images the head is a logistic
regression, and from 80 the fine-tune must beat it on held-out training images.

Example:
    >>> recipe = Recipe(stages=(Stage("head", "head", 3e-3, 10),
    ...                         Stage("finetune", "all", 1e-3, 8)))
    >>> Recipe.from_toml(recipe.to_toml()) == recipe
    True

The file form::

    batch_size = 32
    [[stages]]
    name = "head"
    trainable = "head"
    learning_rate = 0.001
    epochs = 5
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transfer.core.errors import TransferError
from transfer.core.resize import ResizePolicy

_TRAINABLE = re.compile(r"^(head|all|top:[1-9]\d*|from:[\w.\-]+)$")
OPTIMIZERS = ("adam", "adamw", "sgd")
CLASS_WEIGHTS = ("none", "balanced")
AUGMENTATIONS = ("flip", "zoom", "rotate", "color")


@dataclass(frozen=True)
class Stage:
    """One phase of training.

    Attributes:
        name: shown in logs and history (``"head"``, ``"finetune"``).
        trainable: ``"head"`` (backbone frozen), ``"top:N"`` (the top N
            backbone blocks and the head), ``"from:NAME"`` (the backbone from
            the block holding layer NAME, e.g. ``"from:conv5_block1"``, up) or
            ``"all"``. Stages that unfreeze more and more blocks give gradual
            unfreezing.
        learning_rate: peak learning rate of this stage.
        epochs: number of passes over the training data.
        patience: stop the stage after this many epochs without a better
            validation accuracy (0: never stop early).
        backbone_lr_scale: backbone layers train at this fraction of
            ``learning_rate`` (the head at the full rate); see
            ``transfer.engine.rates``.
        layer_decay: each backbone block below the top one trains at this
            fraction of the rate of the block above it (1: no decay).
        min_steps: the stage trains for at least this many optimizer steps:
            on a training set too small to give them in ``epochs`` epochs,
            its epochs grow to ``ceil(min_steps / steps per epoch)`` and the
            run says so (0: exactly ``epochs``; ``--epochs`` sets it to 0).
    """

    name: str
    trainable: str = "head"
    learning_rate: float = 1e-3
    epochs: int = 5
    patience: int = 0
    backbone_lr_scale: float = 1.0
    layer_decay: float = 1.0
    min_steps: int = 0

    def __post_init__(self):
        if not (isinstance(self.name, str) and self.name.strip()):
            raise TransferError(f"A stage has name={self.name!r}.", fix='Give every stage a name such as "head".')
        if not _TRAINABLE.match(str(self.trainable)):
            raise TransferError(
                f"Stage {self.name!r} has trainable={self.trainable!r}.",
                fix='Use "head", "all", "top:N" (N backbone blocks) or "from:LAYER_NAME".',
            )
        if not (
            isinstance(self.learning_rate, (int, float))
            and not isinstance(self.learning_rate, bool)
            and math.isfinite(self.learning_rate)
            and self.learning_rate > 0
        ):
            raise TransferError(
                f"Stage {self.name!r} has learning_rate={self.learning_rate!r}.",
                fix="Use a positive number such as 0.001.",
            )
        for key in ("backbone_lr_scale", "layer_decay"):
            value = getattr(self, key)
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 1):
                raise TransferError(f"Stage {self.name!r} has {key}={value!r}.",
                                    fix="Use a number in (0, 1], e.g. 0.1 (1 means the stage's own rate).")
        for key in ("epochs", "patience", "min_steps"):
            value = getattr(self, key)
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
                raise TransferError(f"Stage {self.name!r} has {key}={value!r}.", fix="Use a whole number >= 0.")

    @property
    def top_blocks(self) -> int | None:
        """N for ``"top:N"``, else None."""
        return int(self.trainable.split(":")[1]) if self.trainable.startswith("top:") else None

    @property
    def from_layer(self) -> str | None:
        """NAME for ``"from:NAME"``, else None."""
        return self.trainable.split(":", 1)[1] if self.trainable.startswith("from:") else None


def default_stages() -> tuple[Stage, ...]:
    # Linear probe, then fine-tune (LP-FT): the head first, to convergence on
    # cached features (10 epochs ended under a logistic regression on the
    # same features), so the new head stops sending large gradients into the
    # backbone; then everything, the backbone at 0.3x the head's rate. On the
    # panel (benchmarks/README.md) the backbone at the full 1e-3 collapsed for
    # two epochs on neu_steel and a flowers5 split (training accuracy 0.69 ->
    # 0.43), at 0.1x it learnt too little in 8 epochs; the guide's 1e-5
    # barely moves at all. The head stage takes at least 600 steps: on 100
    # images (4 steps an epoch) its 30 epochs were 120 steps, and it ended
    # under the probe (benchmarks/small_data_panel.py); on cached features
    # the extra steps cost seconds. Sets of 600+ images (busi's 624, 20 steps
    # an epoch) get 30 epochs as before.
    return (
        Stage("head", trainable="head", learning_rate=3e-3, epochs=30, min_steps=600),
        Stage("finetune", trainable="all", learning_rate=1e-3, epochs=8, backbone_lr_scale=0.3),
    )


@dataclass(frozen=True)
class Recipe:
    """Everything about training that is not the data, the backbone or the image size.

    Attributes:
        stages: the training phases, run in order.
        batch_size: images per step.
        dropout: dropout rate before the classification layer.
        label_smoothing: 0 for none; 0.1 is a common choice.
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"`` (momentum 0.9).
        weight_decay: decoupled weight decay (``adamw`` only).
        augment: random augmentations applied while training, any of
            ``flip``, ``zoom``, ``rotate``, ``color``.
        class_weight: ``"balanced"`` weighs each class's loss by
            ``N / (C * count)`` so rare classes count as much as common ones
            (single-label only); ``"none"`` for plain averaging.
        seed: seeds shuffling, augmentation and weight init.
        head_cache_views: ``"head"`` stages train on backbone features
            computed once and cached (``transfer.engine.feature_cache``) for this many
            views per image (view 1 plain, the others augmented); 0 runs the
            head stage through the whole model every epoch instead.
        warmup_epochs: stages that train backbone layers ramp the learning
            rate up linearly over this many epochs (fractions allowed), then
            decay it along a cosine; 0 for cosine decay only.
        ema_epochs: stages that train backbone layers validate, checkpoint
            and keep an exponential moving average of the weights over about
            this many epochs (0: the raw weights).
        ema_min_steps: ... and over at least this many optimizer steps: one
            epoch of a small training set is only a few steps to average.
        ignore_index: segmentation only: the mask value (0-65535) of pixels that
            are not labelled (CamVid's void), left out of the loss and the
            metrics; ``--ignore-index`` overrides it. None: every value is a class.
        resize: how images meet the square input (``transfer.core.resize``):
            ``"stretch"`` or ``"letterbox"``; ``--resize`` overrides it. The run
            records it and its training, evaluation and export all follow it.
        small_data_max_images: classification on 60 (80) to this many training images
            fits its head as a cross-validated logistic regression (and keeps the fine-tune
            only if it beats that head on held-out training images); 0: never.
    """

    stages: tuple[Stage, ...] = field(default_factory=default_stages)
    batch_size: int = 32
    dropout: float = 0.2
    label_smoothing: float = 0.1
    optimizer: str = "adamw"
    weight_decay: float = 0.05
    augment: tuple[str, ...] = ("flip", "zoom")
    class_weight: str = "none"
    seed: int = 0
    head_cache_views: int = 1
    warmup_epochs: float = 1.0
    # The weight average keeps validation (and so the best checkpoint) from
    # the dip right after unfreezing, where the raw weights lose ground.
    ema_epochs: float = 1.0
    # busi (624 training images, 20 steps an epoch): a 1-epoch average ended the
    # fine-tune 4 images under the head stage (0.769 < 0.795), over 100 steps
    # (5 epochs) it ended at 0.827; neu_steel unchanged, flowers5 (108 steps) untouched.
    ema_min_steps: int = 100
    ignore_index: int | None = None
    resize: str = "stretch"
    small_data_max_images: int = 300  # at 500-624 images it lost more than it won (benchmarks/README.md)

    def __post_init__(self):
        object.__setattr__(self, "stages", tuple(self.stages))
        object.__setattr__(self, "augment", tuple(self.augment))
        if not self.stages:
            raise TransferError("The recipe has no stages.", fix="Add at least one [[stages]] table.")
        if not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise TransferError(f"Recipe batch_size={self.batch_size!r}.", fix="Use a whole number >= 1.")
        if not 0.0 <= self.dropout < 1.0:
            raise TransferError(f"Recipe dropout={self.dropout!r}.", fix="Use a number in [0, 1).")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise TransferError(
                f"Recipe label_smoothing={self.label_smoothing!r}.", fix="Use a number in [0, 1)."
            )
        if self.optimizer not in OPTIMIZERS:
            raise TransferError(f"Recipe optimizer={self.optimizer!r}.", fix=f"Use one of {OPTIMIZERS}.")
        if self.weight_decay < 0:
            raise TransferError(f"Recipe weight_decay={self.weight_decay!r}.", fix="Use a number >= 0.")
        if self.class_weight not in CLASS_WEIGHTS:
            raise TransferError(f"Recipe class_weight={self.class_weight!r}.", fix=f"Use one of {CLASS_WEIGHTS}.")
        if not (isinstance(self.head_cache_views, int) and 0 <= self.head_cache_views <= 64):
            raise TransferError(
                f"Recipe head_cache_views={self.head_cache_views!r}.",
                fix="Use 1 (plain images), a few more for augmented views, or 0 to not cache.",
            )
        if not (math.isfinite(self.warmup_epochs) and self.warmup_epochs >= 0):
            raise TransferError(f"Recipe warmup_epochs={self.warmup_epochs!r}.", fix="Use a number >= 0 such as 1.")
        if not (isinstance(self.ema_epochs, (int, float)) and math.isfinite(self.ema_epochs) and self.ema_epochs >= 0):
            raise TransferError(f"Recipe ema_epochs={self.ema_epochs!r}.", fix="Use a number >= 0 such as 1 (0: off).")
        if not (isinstance(self.ema_min_steps, int) and not isinstance(self.ema_min_steps, bool)
                and self.ema_min_steps >= 0):
            raise TransferError(f"Recipe ema_min_steps={self.ema_min_steps!r}.",
                                fix="Use a whole number >= 0 such as 100 (0: ema_epochs alone).")
        if self.ignore_index is not None and not (
            isinstance(self.ignore_index, int) and not isinstance(self.ignore_index, bool)
            and 0 <= self.ignore_index <= 65535  # the rule of --ignore-index (16-bit PNG masks)
        ):
            raise TransferError(
                f"Recipe ignore_index={self.ignore_index!r}.",
                fix="Use the mask value of unlabelled pixels, a whole number 0-65535 (or leave it out).")
        if type(self.small_data_max_images) is not int or self.small_data_max_images < 0:
            raise TransferError(f"Recipe small_data_max_images={self.small_data_max_images!r}.",
                                fix="Use a whole number of images >= 0 such as 300 (0: never check).")
        ResizePolicy(self.resize)  # a TransferError naming the modes for another
        unknown = [a for a in self.augment if a not in AUGMENTATIONS]
        if unknown:
            raise TransferError(f"Recipe augment has unknown {unknown}.", fix=f"Use any of {AUGMENTATIONS}.")

    def stage_index(self, ref: str | None) -> int:
        """Index of the stage named ``ref`` (exactly, else case-insensitively) or numbered ``ref`` (1-based).

        None means the first stage.

        Example:
            >>> Recipe().stage_index("finetune"), Recipe().stage_index("1")
            (1, 0)
        """
        names = [s.name for s in self.stages]
        if ref is None:
            return 0
        if ref in names:
            return names.index(ref)
        folded = [n.lower() for n in names]
        if folded.count(ref.strip().lower()) == 1:
            return folded.index(ref.strip().lower())
        if ref.strip().isdigit() and 1 <= int(ref) <= len(names):
            return int(ref) - 1
        listing = ", ".join(f"{i} {n!r}" for i, n in enumerate(names, 1))
        raise TransferError(f"The recipe has no stage {ref!r}; its stages are {listing}.",
                            fix="Pass --stage with one of those names or numbers.")

    @property
    def total_epochs(self) -> int:
        return sum(stage.epochs for stage in self.stages)

    def with_epochs(self, epochs: int) -> "Recipe":
        """The same recipe with every stage set to exactly ``epochs`` epochs (the CLI's ``--epochs``:
        no ``min_steps`` floor raises them)."""
        return dataclasses.replace(
            self, stages=tuple(dataclasses.replace(s, epochs=epochs, min_steps=0) for s in self.stages)
        )

    def with_step_floor(self, steps_per_epoch: int) -> tuple["Recipe", list[str]]:
        """The recipe with each stage's epochs raised to reach its ``min_steps`` at ``steps_per_epoch``
        optimizer steps an epoch, and one line per raised stage saying so.

        Schedules counted in steps rather than epochs are the usual practice for
        segmentation (mmsegmentation trains for 20k-160k iterations): 25 images
        at batch 8 are 4 steps an epoch, so 30 epochs teach a fresh decoder
        for only 120 steps.

        Example:
            >>> recipe = Recipe(stages=(Stage("all", "all", epochs=30, min_steps=600),))
            >>> recipe.with_step_floor(4)[0].stages[0].epochs
            150
        """
        if steps_per_epoch < 1:
            return self, []
        stages, notes = [], []
        for stage in self.stages:
            needed = math.ceil(stage.min_steps / steps_per_epoch)
            if stage.epochs == 0 or needed <= stage.epochs:
                stages.append(stage)
                continue
            stages.append(dataclasses.replace(stage, epochs=needed))
            notes.append(f"Stage {stage.name!r}: {needed} epochs instead of {stage.epochs}, to train at least "
                         f"min_steps = {stage.min_steps} optimizer steps at {steps_per_epoch} per epoch (a small "
                         "training set); --epochs N sets exact epochs.")
        return dataclasses.replace(self, stages=tuple(stages)), notes

    # --- TOML round trip -------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["augment"] = list(self.augment)
        data["stages"] = [dataclasses.asdict(s) for s in self.stages]
        if data["ignore_index"] is None:  # TOML has no null: an unset key is left out
            del data["ignore_index"]
        return data

    def to_toml(self) -> str:
        import tomli_w

        data = self.to_dict()
        stages = data.pop("stages")
        # [[stages]] tables (tomli_w would write one long inline array).
        parts = ["# transfer recipe (see transfer.core.recipe)\n", tomli_w.dumps(data)]
        parts += ["\n[[stages]]\n" + tomli_w.dumps(stage) for stage in stages]
        return "".join(parts)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, origin: str = "recipe") -> "Recipe":
        """Build from a dict, naming any unknown or mistyped key."""
        allowed = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise TransferError(
                f"{origin}: unknown key(s) {unknown}.", fix=f"Known keys are {sorted(allowed)}."
            )
        kwargs = dict(data)
        if "stages" in kwargs:
            if not isinstance(kwargs["stages"], list):
                raise TransferError(f"{origin}: stages must be a list of tables.", fix="Use [[stages]] tables.")
            stage_keys = {f.name for f in dataclasses.fields(Stage)}
            stages = []
            for i, raw in enumerate(kwargs["stages"]):
                if not isinstance(raw, dict):
                    raise TransferError(f"{origin}: stages[{i}] is not a table.", fix="Use [[stages]] tables.")
                bad = sorted(set(raw) - stage_keys)
                if bad:
                    raise TransferError(
                        f"{origin}: stages[{i}] has unknown key(s) {bad}.",
                        fix=f"Known stage keys are {sorted(stage_keys)}.",
                    )
                if "name" not in raw:
                    raise TransferError(f"{origin}: stages[{i}] has no name.", fix='Add name = "...".')
                stages.append(Stage(**raw))
            kwargs["stages"] = tuple(stages)
        _check_types(kwargs, origin)
        return cls(**kwargs)

    @classmethod
    def from_toml(cls, text: str, *, origin: str = "recipe") -> "Recipe":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise TransferError(f"{origin} is not valid TOML: {exc}.", fix="Fix the syntax at that line.") from None
        return cls.from_dict(data, origin=origin)

    @classmethod
    def load(cls, path: str | Path) -> "Recipe":
        """Read a recipe TOML file."""
        path = Path(path)
        if not path.is_file():
            raise TransferError(f"Recipe file not found: {path}.", fix="Pass --recipe with an existing .toml file.")
        return cls.from_toml(path.read_text(encoding="utf-8"), origin=str(path))

    def save(self, path: str | Path) -> None:
        """Write this recipe as TOML (atomically)."""
        from transfer.core.atomic import atomic_write_text

        atomic_write_text(Path(path), self.to_toml())


_EXPECTED_TYPES = {
    "batch_size": int,
    "dropout": (int, float),
    "label_smoothing": (int, float),
    "optimizer": str,
    "class_weight": str,
    "weight_decay": (int, float),
    "seed": int,
    "head_cache_views": int,
    "warmup_epochs": (int, float),
    "ema_epochs": (int, float),
    "ignore_index": int,
    "resize": str,
    "small_data_max_images": int,
}


def _check_types(kwargs: dict[str, Any], origin: str) -> None:
    for key, expected in _EXPECTED_TYPES.items():
        if key in kwargs and (not isinstance(kwargs[key], expected) or isinstance(kwargs[key], bool)):
            raise TransferError(
                f"{origin}: {key} = {kwargs[key]!r} has the wrong type.",
                fix=f"Expected {getattr(expected, '__name__', 'a number')}.",
            )
    if "augment" in kwargs and not (
        isinstance(kwargs["augment"], (list, tuple)) and all(isinstance(a, str) for a in kwargs["augment"])
    ):
        raise TransferError(f"{origin}: augment must be a list of names.", fix=f"Use any of {AUGMENTATIONS}.")
