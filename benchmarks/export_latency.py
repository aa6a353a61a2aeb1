"""Per-image CPU latency of an export's byte signature, against its own Keras model.

Any task's export (classification, localization, detection, segmentation):
each file is served alone (batch 1) through ``serving_default`` (decode,
resize, model, the task's post-processing: argmax, box mapping, NMS, mask
resize), after warm-up calls; the baseline, measured in the same run, is the
export's ``model.keras`` (as a ``tf.function``) called on one already-resized
``S x S`` image, so the
ratio is what serving adds to the network itself.

    python benchmarks/export_latency.py exports/raccoon-det ../shared/fixtures/raccoon/images --limit 40

Prints median / 90th percentile milliseconds per image for both and their
ratio; ``--json-out`` writes them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif"}


def _files(paths: list[str], limit: int) -> list[Path]:
    found: list[Path] = []
    for name in paths:
        path = Path(name)
        found.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if path.is_dir()
                     else [path])
    if not found:
        raise SystemExit(f"No image files in {paths} (looked for {sorted(IMAGE_SUFFIXES)}).")
    return found[:limit]


def _summary(milliseconds: list[float]) -> dict[str, float]:
    ordered = sorted(milliseconds)
    return {"median_ms": statistics.median(ordered), "p90_ms": ordered[int(0.9 * (len(ordered) - 1))],
            "images": len(ordered)}


def measure(export_dir: Path, files: list[Path], warmup: int = 3) -> dict[str, dict[str, float]]:
    import keras
    import numpy as np
    import tensorflow as tf

    from transfer.tasks.custom_objects import register_custom_objects

    meta = json.loads((export_dir / "assets" / "transfer.json").read_text(encoding="utf-8"))
    size = int(meta["image_size"])
    serve = tf.saved_model.load(str(export_dir)).signatures["serving_default"]
    register_custom_objects()
    model = keras.saving.load_model(export_dir / "model.keras", compile=False)
    encoded = [f.read_bytes() for f in files]
    resized = [tf.image.resize(tf.io.decode_image(b, channels=3, expand_animations=False), (size, size))
               for b in encoded]
    resized = [np.asarray(tf.cast(tf.round(r), tf.uint8))[None] for r in resized]

    def timed(call, items) -> list[float]:
        for item in items[:warmup]:
            call(item)
        out = []
        for item in items:
            start = time.perf_counter()
            call(item)
            out.append(1000 * (time.perf_counter() - start))
        return out

    export_ms = timed(lambda b: serve(image_bytes=tf.constant([b])), encoded)
    # Traced once like the export's graph: an eager Keras call would time Python dispatch instead.
    forward = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    model_ms = timed(forward, resized)
    return {"task": meta.get("task"), "image_size": size, "export": _summary(export_ms),
            "keras_model": _summary(model_ms)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export", type=Path, help="a `transfer export` folder")
    parser.add_argument("images", nargs="+", help="image files or folders")
    parser.add_argument("--limit", type=int, default=50, help="serve at most this many files")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    result = measure(args.export, _files(args.images, args.limit))
    e, k = result["export"], result["keras_model"]
    print(f"{result['task']} export at {result['image_size']} px, batch 1, {e['images']} images:")
    print(f"  export (bytes in, answers out)  median {e['median_ms']:.1f} ms  p90 {e['p90_ms']:.1f} ms")
    print(f"  Keras model (resized image in)  median {k['median_ms']:.1f} ms  p90 {k['p90_ms']:.1f} ms")
    print(f"  ratio export / model (median)   {e['median_ms'] / k['median_ms']:.2f}x")
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
