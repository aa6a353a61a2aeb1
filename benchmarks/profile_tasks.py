"""Where a box or mask task's training time goes: input pipeline, the step and its parts, evaluation.

For one entry (a task on a real fixture, at the default recipe's image size and
batch size), each phase is timed on its own, so one can tell which lever
matters before tuning anything:

- ``decode``: a pass over the training set's ``tf.data`` pipeline as the first
  epoch runs it (read, decode, resize, augment; nothing cached), per batch;
- ``augment``: the same pipeline once its decoded images are cached (every
  later epoch), per batch;
- ``step_finetune`` / ``step_head``: one optimizer step of the compiled model
  (``train_on_batch`` on a fixed batch: no input cost) with everything
  trainable, and with the backbone frozen (the head stage);
- ``forward_eval``: the model's inference pass on a batch (validation and
  evaluation cost one of these per batch);
- ``backbone_fwd_bwd``: the nested backbone's forward and backward pass alone
  (the gradient of the sum of its feature maps), the part the task's head
  cannot change;
- ``val_pass``: ``model.evaluate`` over the validation set (Keras runs one per
  epoch), and ``epoch_estimate``: what one epoch costs from the parts.

Ablations (``--ablate``) rebuild the model with one piece changed and time the
fine-tune step again: ``nearest`` (segmentation decoder upsampling by
nearest neighbour instead of bilinear), ``no_dice`` (cross-entropy alone),
``size=N`` (another input side).

Usage (from the repo root; a quiet machine gives the figures that matter):

    python benchmarks/profile_tasks.py --entry segment:balloon --json out.json
    python benchmarks/profile_tasks.py --entry detect:raccoon
    python benchmarks/profile_tasks.py --entry segment:balloon --ablate nearest,no_dice,size=256
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FIXTURES = Path(os.environ.get("TRANSFER_FIXTURES", ROOT.parent / "shared" / "fixtures"))
WEIGHTS = FIXTURES / "weights" / "mobilenet_2_5_224_tf_no_top.h5"

ENTRIES = {
    "segment:balloon": ("segment", {}, "balloon/train", "balloon/val"),
    "segment:membrane": ("segment", {"class_names": ("membrane", "cell")}, "membrane/train", None),
    "segment:camvid": ("segment", {"ignore_index": 11}, "camvid/train", "camvid/val"),
    "detect:raccoon": ("detect", {}, "raccoon/train_labels.csv", "raccoon/test_labels.csv"),
    "localize:raccoon": ("localize", {}, "raccoon/train_labels.csv", "raccoon/test_labels.csv"),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entry", default="segment:balloon", choices=sorted(ENTRIES))
    parser.add_argument("--image-size", type=int, default=None, help="default: the task's default for the backbone")
    parser.add_argument("--batches", type=int, default=8, help="batches timed per phase (after one warm-up)")
    parser.add_argument("--ablate", default="", help="comma separated: nearest, no_dice, size=N")
    parser.add_argument("--json", default=None, help="write the figures to this file")
    return parser.parse_args(argv)


def timed(fn, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls, after one warm-up call (tracing, caches)."""
    import statistics

    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def pipeline_seconds(dataset, batches: int) -> float:
    """Mean seconds per batch of iterating ``dataset`` for ``batches`` batches (one warm-up batch)."""
    iterator = iter(dataset.repeat())
    next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return (time.perf_counter() - start) / batches


def setup(args, size_override=None, decoder_upsampling=None, loss=None):
    """``(task, data, recipe, config, spec, size, model, info)`` for the entry, as training builds them."""
    from transfer.backbones import get_backbone
    from transfer.tasks import get_task

    name, options, train, val = ENTRIES[args.entry]
    if loss is not None:
        options = {**options, "loss": loss}
    task = get_task(name).with_options(**options) if options else get_task(name)
    data = task.load_data(str(FIXTURES / train), val_source=str(FIXTURES / val) if val else None,
                          val_fraction=0.1667, echo=None)
    recipe = task.default_recipe()
    spec = get_backbone("mobilenet_0.25")
    size = size_override or args.image_size or task.default_image_size(spec)
    config = task.run_config(data, recipe)
    config["image_size"] = size
    if decoder_upsampling:
        import keras

        # The ablation swaps the decoder's bilinear upsampling for nearest neighbour, layer by layer.
        original = keras.layers.Resizing.__init__

        def nearest_init(self, *a, **kw):
            kw["interpolation"] = decoder_upsampling
            original(self, *a, **kw)

        keras.layers.Resizing.__init__ = nearest_init
        try:
            model, info = task.build_model(spec, config, size, str(WEIGHTS), recipe)
        finally:
            keras.layers.Resizing.__init__ = original
    else:
        model, info = task.build_model(spec, config, size, str(WEIGHTS), recipe)
    return task, data, recipe, config, spec, size, model, info


def compiled_step(task, model, spec, recipe, config, info, stage_index: int):
    """A ``train_on_batch``-ready model for the recipe's stage ``stage_index`` (head 0, fine-tune 1)."""
    from transfer.engine.freezing import set_trainable
    from transfer.engine.schedules import stage_optimizer

    stage = recipe.stages[min(stage_index, len(recipe.stages) - 1)]
    set_trainable(model, spec, stage, freeze_batchnorm=info.source != "random")
    objective = task.objective(config, recipe)
    model.compile(optimizer=stage_optimizer(recipe, stage, 10, model), loss=objective.loss,
                  metrics=objective.metrics)
    return model


def backbone_seconds(model, images, repeats: int) -> float:
    """Median seconds of the nested backbone's forward + backward pass on ``images``."""
    import tensorflow as tf

    backbone = model.get_layer("backbone")
    preprocess = model.get_layer("preprocess")
    inputs = preprocess(images)

    @tf.function
    def fwd_bwd():
        with tf.GradientTape() as tape:
            outputs = backbone(inputs, training=True)
            outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
            total = tf.add_n([tf.reduce_sum(o) for o in outputs])
        return tape.gradient(total, backbone.trainable_variables)

    backbone.trainable = True
    return timed(lambda: [g.numpy() for g in fwd_bwd() if g is not None][:1], repeats)


def profile(args, *, size=None, upsampling=None, loss=None, parts=True) -> dict:
    import keras

    keras.utils.set_random_seed(0)
    task, data, recipe, config, spec, size, model, info = setup(args, size, upsampling, loss)
    batch = recipe.batch_size
    make = lambda samples, training, cache: task.make_dataset(  # noqa: E731
        samples, size, batch, training=training, recipe=recipe, cache=cache, config=config)
    images, targets = next(iter(make(data.train, True, "none")))
    figures = {"entry": args.entry, "image_size": size, "batch_size": batch, "train_images": len(data.train),
               "val_images": len(data.val), "upsampling": upsampling or "bilinear", "loss": loss or "default"}
    steps_per_epoch = -(-len(data.train) // batch)
    model = compiled_step(task, model, spec, recipe, config, info, 1)
    figures["step_finetune"] = timed(lambda: model.train_on_batch(images, targets), args.batches)
    if not parts:
        return figures
    figures["decode"] = pipeline_seconds(make(data.train, True, "none"), min(args.batches, steps_per_epoch))
    cached = make(data.train, True, "memory")
    for _ in cached:  # fill the cache: the first epoch
        pass
    figures["augment"] = pipeline_seconds(cached, args.batches)
    figures["forward_eval"] = timed(lambda: model.predict_on_batch(images), args.batches)
    figures["backbone_fwd_bwd"] = backbone_seconds(model, images, args.batches)
    val = make(data.val, False, "memory")
    model.evaluate(val, verbose=0)  # fill the cache, trace
    start = time.perf_counter()
    model.evaluate(val, verbose=0)
    figures["val_pass"] = time.perf_counter() - start
    head = compiled_step(task, model, spec, recipe, config, info, 0)
    figures["step_head"] = timed(lambda: head.train_on_batch(images, targets), args.batches)
    # The input pipeline runs in tf.data's threads beside the step, so an epoch costs about the
    # larger of the two per batch, plus one validation pass.
    per_batch = max(figures["step_finetune"], figures["augment"])
    figures["epoch_estimate"] = steps_per_epoch * per_batch + figures["val_pass"]
    figures["steps_per_epoch"] = steps_per_epoch
    return figures


def main(argv=None) -> dict:
    args = parse_args(argv)
    import tensorflow as tf

    result = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "tensorflow": tf.__version__, "cpu_flags": cpu_flags()},
              "default": profile(args)}
    print(table(result["default"]))
    for ablation in [a.strip() for a in args.ablate.split(",") if a.strip()]:
        kwargs = {"nearest": {"upsampling": "nearest"}, "no_dice": {"loss": "ce"}}.get(ablation)
        if ablation.startswith("size="):
            kwargs = {"size": int(ablation.split("=", 1)[1])}
        if kwargs is None:
            raise SystemExit(f"unknown ablation {ablation!r}: use nearest, no_dice or size=N")
        figures = profile(args, parts=False, **kwargs)
        result[ablation] = figures
        ratio = figures["step_finetune"] / result["default"]["step_finetune"]
        print(f"ablation {ablation:12s} step_finetune {figures['step_finetune']:.3f} s ({ratio:.2f}x the default)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return result


def cpu_flags() -> str:
    """The SIMD flags that decide TensorFlow's CPU kernels (AVX2, AVX-512, AMX), from /proc/cpuinfo."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "")
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    simd = sorted({f for f in flags if f.startswith(("avx", "amx", "fma"))})
    return f"{model}: {' '.join(simd)}"


def table(figures: dict) -> str:
    rows = [f"{figures['entry']} at {figures['image_size']} px, batch {figures['batch_size']}, "
            f"{figures['train_images']} train / {figures['val_images']} val images"]
    for key, what in (("decode", "input, first epoch (read+decode+resize+augment) / batch"),
                      ("augment", "input, cached epochs (augment) / batch"),
                      ("step_finetune", "optimizer step, all trainable"),
                      ("step_head", "optimizer step, backbone frozen"),
                      ("backbone_fwd_bwd", "backbone forward + backward alone"),
                      ("forward_eval", "inference forward / batch"),
                      ("val_pass", "validation pass (one per epoch)"),
                      ("epoch_estimate", "one fine-tune epoch, estimated")):
        if key in figures:
            rows.append(f"  {what:58s} {figures[key]:8.3f} s")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
