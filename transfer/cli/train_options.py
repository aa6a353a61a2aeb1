"""The options of ``transfer train``, declared once (Typer reads each parameter's default).

Kept apart so the command itself (``transfer.cli.train.train_command``) reads as what it
does; each name is the parameter it declares, upper-cased.

Example:
    >>> DATA.param_decls
    ('--data',)
"""

from __future__ import annotations

import typer

DATA = typer.Option(
    None, "--data",
    help="classify: class folders (optionally train/ val/), a CSV, or tfds:NAME; "
         "localize/detect: a box CSV, a Pascal VOC folder (one of its lists: "
         "FOLDER/ImageSets/Main/NAME.txt) or a COCO JSON file; segment: a folder of images/ + masks/ "
         "(or image/ + label/), VIA or COCO polygon JSON, or tfds:NAME with masks.",
)
VAL_DATA = typer.Option(
    None, "--val-data", help="Validate on this source (same kinds as --data) instead of splitting --data."
)
TASK_NAME = typer.Option(
    "classify", "--task",
    help="classify, localize (one box and class per image), detect (every box of every class) or "
         "segment (a class for every pixel).",
)
IGNORE_INDEX = typer.Option(
    None, "--ignore-index",  # range checked by the task, with check-data's rule and words (0..65535)
    help="segment: the mask value of unlabelled pixels (e.g. CamVid's void 11; 0-65535), left out of the loss "
         "and metrics (default: the recipe's ignore_index, else none).",
)
CLASS_NAMES = typer.Option(
    None, "--class-names",
    help="segment: the class of each mask value, in value order (e.g. background,cell); default: the "
         "classes.txt beside the masks.",
)
DECODER = typer.Option(
    None, "--decoder", help="segment: unet (skip connections from strides 2-32, the default) or fcn."
)
DECODER_STRIDE = typer.Option(
    None, "--decoder-stride", help="segment: the U-Net's finest stage, 1 (full resolution, the default), 2 or 4 "
                                   "(its logits upsampled x4: a CPU step several times shorter)."
)
LOSS = typer.Option(
    None, "--loss", help="segment: ce, dice, focal or a sum of them (default ce+dice; ce alone favours pixel "
                         "accuracy, the Dice term rare classes)."
)
OUT = typer.Option(None, "--out", help="Run folder to create.")
RESUME = typer.Option(
    None, "--resume", help="Continue this killed or interrupted run (no other options needed)."
)
BACKBONE = typer.Option("mobilenet_0.25", "--backbone", help="See `transfer backbones`.")
WEIGHTS = typer.Option("imagenet", "--weights", help='"imagenet", "none", or a weights file.')
IMAGE_SIZE = typer.Option(None, "--image-size", help="Input side in pixels.")
RECIPE = typer.Option(None, "--recipe", help="Recipe TOML file.")
EPOCHS = typer.Option(None, "--epochs", help="Set every stage to this many epochs.")
RESIZE = typer.Option(None, "--resize", help="How images meet the square input, in training, evaluation and the export alike: stretch (the default) or letterbox (aspect ratio kept, padded with grey). Overrides the recipe's resize.")
VAL_FRACTION = typer.Option(0.2, "--val-fraction", help="Used when the data has no val split.")
ALLOW_OUTSIDE_ROOT = typer.Option(
    False, "--allow-outside-root", help="Let CSV paths point outside the CSV's folder (trusted CSVs only)."
)
PRECISION = typer.Option(
    "float32", "--precision",
    help="float32, mixed (float16 on a GPU, bfloat16 on a CPU with native support, else float32), "
         "float16 or bfloat16.",
)
XLA = typer.Option(
    None, "--xla/--no-xla", help="Compile training steps with XLA (default: on for GPUs, off on CPUs)."
)
FEATURE_CACHE = typer.Option(
    None, "--feature-cache",
    help="Folder for cached backbone features of head stages (default: $TRANSFER_CACHE_DIR or "
         "~/.cache/transfer/features).",
)
NO_FEATURE_CACHE = typer.Option(
    False, "--no-feature-cache", help="Keep head-stage features in memory only."
)
CHECKPOINT_EVERY = typer.Option(
    None, "--checkpoint-every", min=0.0, metavar="SECONDS",
    help="Seconds of training between resumable checkpoints (default 30; always one after each stage; 0: "
         "after every epoch). A kill loses at most this much.",
)
DISTRIBUTE = typer.Option(
    "auto", "--distribute",
    help="auto (TF_CONFIG with several workers: multi_worker; several GPUs: mirrored; else none), "
         "none, mirrored or multi_worker. The batch size is global.",
)
