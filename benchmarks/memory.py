"""Peak memory and epoch time of ``transfer.train`` on many images, and the disk cache's cost.

Scale: builds a folder of ``--images`` symlinks to the flowers5 fixture
images (class folders kept), then runs ``transfer.train`` in a child process
with a one-epoch head stage (on cached backbone features) and a one-epoch
fine-tune of every layer, at ``--image-size`` px, with the image cache chosen
by ``transfer.data.pipelines.cache_policy``. The parent reads the child's peak RSS
(``os.wait4``'s ``ru_maxrss``) and the epoch times from its history.csv.

Compare: on flowers5 itself, the same recipe with two fine-tune epochs, run
once per ``--compare-modes`` entry with the image cache forced to that mode
(memory, disk, none); the second fine-tune epoch (reading the cache, not
filling it) is compared with the first mode's: e.g. the disk / memory ratio.

Example:
    nice -n 15 python benchmarks/memory.py --images 100000 --image-size 224 --json-out memory.json
    nice -n 15 python benchmarks/memory.py --images 5000 --image-size 128 --compare-modes ""   # scale only
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def fixtures_dir() -> Path:
    return Path(os.environ.get("TRANSFER_FIXTURES", REPO.parent / "shared" / "fixtures"))


def symlink_folder(source: Path, dest: Path, count: int) -> Path:
    """``count`` symlinks to the images of ``source`` (class folders kept), cycling through them."""
    files = sorted(p for p in source.glob("*/*") if p.is_file())
    if not files:
        raise SystemExit(f"No images under {source}: set TRANSFER_FIXTURES to the fixtures folder.")
    for index in range(count):
        src = files[index % len(files)]
        folder = dest / src.parent.name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{index:07d}_{src.name}").symlink_to(src.resolve())
    return dest


def run_child(args, data: Path, out: Path, finetune_epochs: int, cache: str = "auto") -> dict:
    """Train in a child process; returns its peak RSS, wall time, epoch rows and image cache."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    command = [sys.executable, __file__, "--child", str(data), "--out", str(out), "--image-size",
               str(args.image_size), "--batch-size", str(args.batch_size), "--finetune-epochs", str(finetune_epochs),
               "--cache", cache]
    started = time.perf_counter()
    log_path = out.parent / f"{out.name}.log"
    with open(log_path, "w") as log:
        child = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    log_text = log_path.read_text()
    if child.returncode != 0:
        raise SystemExit(f"Training failed (exit {child.returncode}):\n{log_text[-3000:]}")
    rows = list(csv.DictReader(open(out / "history.csv")))
    config = json.loads((out / "run.json").read_text())
    cache_line = next((line for line in log_text.splitlines() if line.startswith("Image cache:")), "")
    leftover = [str(p) for p in out.glob(".image-cache-*")]
    return {
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # Linux: kilobytes
        "wall_seconds": round(seconds, 1),
        "num_train": config["num_train"], "num_val": config["num_val"],
        "image_cache": config.get("image_cache"), "image_cache_line": cache_line,
        "epochs": [{"stage": r["stage"], "seconds": float(r["seconds"]),
                    "val_accuracy": float(r.get("val_accuracy") or "nan")} for r in rows],
        "cache_folders_left": leftover,
    }


def child_main(args) -> int:
    """The training itself (in the child process)."""
    sys.path.insert(0, str(REPO))
    import transfer.engine.stage_runner
    from transfer.data import load_data
    from transfer.data.pipelines.cache_policy import choose_image_cache
    from transfer.core.recipe import Recipe, Stage
    from transfer.engine.train import train

    if args.cache != "auto":  # forced, as make_dataset(cache=...) would be; the reason says so
        transfer.engine.stage_runner.choose_image_cache = lambda n, size, **kw: choose_image_cache(n, size, cache=args.cache, **kw)

    weights = fixtures_dir() / "weights" / "mobilenet_2_5_224_tf_no_top.h5"
    recipe = Recipe(stages=(Stage("head", "head", 3e-3, 1), Stage("finetune", "all", 1e-4, args.finetune_epochs)),
                    batch_size=args.batch_size)
    train(load_data(args.child), args.out, backbone="mobilenet_0.25", weights=str(weights),
          image_size=args.image_size, recipe=recipe, feature_cache=False, verbose=2)
    return 0


def summary(result: dict) -> str:
    fine = [e["seconds"] for e in result["epochs"] if e["stage"] == "finetune"]
    return (f"{result['num_train'] + result['num_val']} images: peak RSS {result['peak_rss_mb'] / 1024:.2f} GB, "
            f"fine-tune epoch(s) {', '.join(f'{s:.1f}' for s in fine)} s, wall {result['wall_seconds']:.0f} s; "
            f"{result['image_cache_line']}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=100_000, help="images in the symlink folder (0: skip)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--compare-modes", default="memory,disk",
                        help='modes timed on flowers5 ("memory,disk,none" or "" to skip); the first is the baseline')
    parser.add_argument("--workdir", type=Path, help="where folders and runs go (default: a new temp folder, removed)")
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--finetune-epochs", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--cache", default="auto", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args)

    flowers = fixtures_dir() / "flowers5"
    work = args.workdir or Path(tempfile.mkdtemp(prefix="transfer-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    report: dict = {"image_size": args.image_size, "batch_size": args.batch_size, "cpus": os.cpu_count()}
    try:
        if args.images:
            data = symlink_folder(flowers, work / f"images-{args.images}", args.images)
            print(f"Scale: {args.images} symlinks to flowers5 at {args.image_size} px (head 1 epoch + fine-tune 1)",
                  flush=True)
            report["scale"] = run_child(args, data, work / f"run-{args.images}", 1)
            print("  " + summary(report["scale"]), flush=True)
            shutil.rmtree(data)
        modes = [m for m in args.compare_modes.split(",") if m]
        if modes:
            print(f"Compare on flowers5 at {args.image_size} px, 2 fine-tune epochs, cache forced: {modes}", flush=True)
            report["compare"] = {}
            for mode in modes:
                result = run_child(args, flowers, work / f"run-{mode}", 2, mode)
                report["compare"][mode] = result
                print(f"  {mode}: " + summary(result), flush=True)
            base = _second_finetune(report["compare"][modes[0]])
            for mode in modes[1:]:
                ratio = _second_finetune(report["compare"][mode]) / base
                report["compare"][f"{mode}_vs_{modes[0]}"] = round(ratio, 3)
                print(f"  second fine-tune epoch, {mode} / {modes[0]}: {ratio:.3f} (target <= 1.05)", flush=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2))
        print(f"Wrote {args.json_out}")
    return 0


def _second_finetune(result: dict) -> float:
    return [e["seconds"] for e in result["epochs"] if e["stage"] == "finetune"][-1]


if __name__ == "__main__":
    sys.exit(main())
