"""A panel of classification datasets: the Keras guide, a linear probe and transfer's default recipe.

For each entry (a folder-per-class dataset at one image size and one seeded
split, or its own ``train/`` + ``val/`` folders) this runs, in one process,
on the same split, weights, image size and batch size:

(a) guide     the Keras transfer-learning guide's recipe, as in
              ``finetune_vs_guide.py`` (head 10 epochs at 1e-3, then all
              layers 5 epochs at 1e-5, Adam);
(b) probe     a linear probe: logistic regression (scikit-learn, C chosen by
              5-fold cross-validation on the training images) on the frozen
              backbone's pooled features: the strong, cheap baseline;
(c) transfer  ``transfer.train`` with the default ``Recipe()`` (or
              ``--recipe FILE``).

It prints per entry the last-epoch and best-epoch validation accuracy of each
side, the head stage's best, the wall times and the ratio to the guide (and
records CPU seconds too: on a shared machine wall time says little); then a
summary (mean accuracy per side, the smallest margin of transfer's last epoch
over the probe and over the guide's last epoch, the smallest "last epoch minus
head-stage best") and writes everything to ``--json-out``.

Example (the full panel: about an hour on two CPU cores):

    python benchmarks/panel.py --json-out panel.json
    python benchmarks/panel.py --quick                      # a few minutes: small subsets
    python benchmarks/panel.py --only transfer --recipe r.toml --reuse panel.json   # a recipe variant
    python benchmarks/panel.py --combine a.json b.json --json-out panel.json         # entries run apart
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from finetune_vs_guide import run_guide  # noqa: E402

from transfer.backbones import get_backbone  # noqa: E402
from transfer.data import load_data  # noqa: E402
from transfer.data.samples import DataSplit  # noqa: E402
from transfer.engine.feature_cache import extract_features  # noqa: E402
from transfer.core.recipe import Recipe  # noqa: E402
from transfer.tasks.classify.model import build_classifier  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
WEIGHTS_FILE = "weights/mobilenet_2_5_224_tf_no_top.h5"
# name, folder under the fixtures, image size, split seed
DEFAULT_PANEL = (
    ("flowers5-s1", "flowers5", 128, 1),
    ("flowers5-s2", "flowers5", 128, 2),
    ("flowers5-s3", "flowers5", 128, 3),
    ("neu_steel", "neu_steel", 128, 0),
    ("busi", "busi", 224, 0),
)
QUICK_PANEL = (("flowers5-s1", "flowers5", 128, 1), ("neu_steel", "neu_steel", 128, 0), ("busi", "busi", 224, 0))
SIDES = ("guide", "probe", "transfer")


@dataclass(frozen=True)
class Entry:
    name: str
    data: str
    image_size: int
    seed: int

    @classmethod
    def parse(cls, text: str, fixtures: Path) -> "Entry":
        """``NAME=PATH@SIZE:SEED`` (PATH relative to the fixtures folder, or absolute)."""
        try:
            name, rest = text.split("=", 1)
            path, rest = rest.rsplit("@", 1)
            size, seed = rest.split(":") if ":" in rest else (rest, "0")
            return cls(name, str(fixtures / path), int(size), int(seed))
        except ValueError:
            raise SystemExit(f"--entry {text!r}: expected NAME=PATH@SIZE:SEED, e.g. cars=/data/cars@224:0") from None


@dataclass
class SideResult:
    side: str
    last: float  # validation accuracy after the last epoch
    best: float  # best epoch's validation accuracy
    seconds: float
    head_best: float | None = None  # transfer / guide: best epoch of the head stage
    curve: list | None = None
    final_model: str | None = None  # transfer: "head" or "finetune" after its fine-tune check, None without one
    check: dict | None = None  # transfer: the fine-tune check's held-out scores (run.json "stage_choice")


def subsample(split: DataSplit, max_train: int, max_val: int, seed: int) -> DataSplit:
    """At most ``max_train`` / ``max_val`` images, every class kept in proportion (for --quick)."""

    def pick(samples, limit):
        if len(samples) <= limit:
            return samples
        rng = np.random.default_rng(seed)
        targets = np.array(samples.targets)
        keep = []
        for label in np.unique(targets):
            rows = np.flatnonzero(targets == label)
            keep.extend(rng.permutation(rows)[: max(1, round(limit * len(rows) / len(samples)))])
        return samples.subset(sorted(keep))

    return DataSplit(pick(split.train, max_train), pick(split.val, max_val), split.origin + " (subsampled)")


def train_seed(entry: Entry, args) -> int:
    """The seed of a side's training randomness (shuffling, augmentation, initialization): the
    entry's split seed unless --train-seed gives one."""
    return entry.seed if args.train_seed is None else args.train_seed


def run_probe(split: DataSplit, args, entry: Entry) -> SideResult:
    """Logistic regression on frozen pooled features, C by 5-fold cross-validation."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    started = time.perf_counter()
    keras.utils.set_random_seed(train_seed(entry, args))
    model, _ = build_classifier(get_backbone(args.backbone), split.train.num_classes, entry.image_size,
                                weights=args.weights)
    train = extract_features(model, split.train, entry.image_size)[0]
    val = extract_features(model, split.val, entry.image_size)[0]
    probe = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=np.logspace(-4, 2, 7).tolist(), cv=5,
                                                                  max_iter=3000))
    probe.fit(train, np.array(split.train.targets))
    accuracy = float(np.mean(probe.predict(val) == np.array(split.val.targets)))
    return SideResult("probe", accuracy, accuracy, time.perf_counter() - started)


def run_guide_side(split: DataSplit, args, entry: Entry) -> SideResult:
    guide_args = argparse.Namespace(seed=train_seed(entry, args), image_size=entry.image_size,
                                    batch_size=args.batch_size, backbone=args.backbone, weights=args.weights,
                                    verbose=args.verbose, guide_head_epochs=10, guide_finetune_epochs=5)
    result = run_guide(split, guide_args)
    curve = [v for stage in result.stages for v in stage.val_curve]
    return SideResult("guide", curve[-1], max(curve), result.seconds, head_best=result.stages[0].best_val_accuracy,
                      curve=curve)


def run_transfer_side(split: DataSplit, args, entry: Entry, scratch: Path) -> SideResult:
    from transfer.engine.train import train

    recipe = Recipe.load(args.recipe) if args.recipe else Recipe()
    if recipe.batch_size != args.batch_size:
        # Every side trains at the panel's batch size; a recipe's own would silently not be measured.
        print(f"{entry.name} transfer: the recipe's batch_size {recipe.batch_size} is replaced by the panel's "
              f"--batch-size {args.batch_size} (the same for every side).", flush=True)
    recipe = dataclasses.replace(recipe, seed=train_seed(entry, args), batch_size=args.batch_size)
    out = Path(args.keep_runs or scratch) / f"{entry.name}-run"
    started = time.perf_counter()
    # A fresh feature cache per run unless --cache-dir: the head stage is timed cold.
    train(split, out, backbone=args.backbone, weights=args.weights, image_size=entry.image_size, recipe=recipe,
          verbose=args.verbose, feature_cache=args.cache_dir or scratch / f"{entry.name}-features")
    seconds = time.perf_counter() - started
    with open(out / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    head_stages = {s.name for s in recipe.stages if s.trainable == "head"}
    curve = [float(r["val_accuracy"]) for r in rows]
    head = [float(r["val_accuracy"]) for r in rows if r["stage"] in head_stages]
    choice = json.loads((out / "run.json").read_text()).get("stage_choice") or {}
    return SideResult("transfer", curve[-1], max(curve), seconds, head_best=max(head) if head else None, curve=curve,
                      final_model=choice.get("final_model"),
                      check={k: choice[k] for k in ("head_score", "finetune_score", "held_out", "seconds")
                             if k in choice} or None)


def run_entry(entry: Entry, args, scratch: Path, reused: dict) -> dict:
    split = load_data(entry.data, val_fraction=0.2, seed=entry.seed)
    if args.quick:
        split = subsample(split, 400, 200, entry.seed)
    print(f"\n=== {entry.name}: {entry.data} at {entry.image_size} px, {len(split.train)} train / "
          f"{len(split.val)} val, {split.train.num_classes} classes ({split.origin}) ===", flush=True)
    results = {}
    for side in SIDES:
        if side in reused:
            results[side] = reused[side]
            continue
        if side not in args.only:
            continue
        print(f"--- {entry.name}: {side} ---", flush=True)
        keras.backend.clear_session()
        cpu_started = time.process_time()
        if side == "guide":
            results[side] = dataclasses.asdict(run_guide_side(split, args, entry))
        elif side == "probe":
            results[side] = dataclasses.asdict(run_probe(split, args, entry))
        else:
            results[side] = dataclasses.asdict(run_transfer_side(split, args, entry, scratch))
        # CPU seconds of all threads: fairer than wall time when the machine is shared.
        results[side]["cpu_seconds"] = round(time.process_time() - cpu_started, 1)
        print(f"{entry.name} {side}: last {results[side]['last']:.4f} best {results[side]['best']:.4f} "
              f"in {results[side]['seconds']:.0f} s", flush=True)
    return {"entry": dataclasses.asdict(entry), "num_train": len(split.train), "num_val": len(split.val),
            "sides": results}


def summarize(rows: list[dict]) -> dict:
    """The panel's summary row; margins are over transfer's last epoch."""
    summary: dict = {}
    for side in SIDES:
        values = [r["sides"][side]["last"] for r in rows if side in r["sides"]]
        if values:
            summary[f"mean_{side}_last"] = statistics.mean(values)
    with_transfer = [r for r in rows if "transfer" in r["sides"]]

    def smallest(other, key="last"):
        margins = [r["sides"]["transfer"]["last"] - r["sides"][other][key]
                   for r in with_transfer if other in r["sides"] and r["sides"][other].get(key) is not None]
        return min(margins) if margins else None

    summary["min_margin_over_probe"] = smallest("probe")
    summary["min_margin_over_guide_last"] = smallest("guide")
    heads = [r["sides"]["transfer"]["last"] - r["sides"]["transfer"]["head_best"] for r in with_transfer
             if r["sides"]["transfer"].get("head_best") is not None]
    summary["min_last_minus_head_best"] = min(heads) if heads else None
    ratios = [r["sides"]["transfer"]["seconds"] / r["sides"]["guide"]["seconds"] for r in with_transfer
              if "guide" in r["sides"]]
    summary["max_time_ratio_to_guide"] = max(ratios) if ratios else None
    cpu = [r["sides"]["transfer"]["cpu_seconds"] / r["sides"]["guide"]["cpu_seconds"] for r in with_transfer
           if "cpu_seconds" in r["sides"]["transfer"] and "cpu_seconds" in r["sides"].get("guide", {})]
    summary["max_cpu_time_ratio_to_guide"] = max(cpu) if cpu else None
    return summary


def print_table(rows: list[dict], summary: dict) -> None:
    def cell(side, key, row):
        value = row["sides"].get(side, {}).get(key)
        return f"{value:.3f}" if isinstance(value, float) else "-"

    header = (f"{'entry':<13} {'guide last/best':>15} {'probe':>6} {'transfer last/best':>18} {'head best':>9} "
              f"{'last-head':>9} {'guide s':>8} {'transfer s':>10} {'ratio':>6}")
    print("\n" + header + "\n" + "-" * len(header))
    for row in rows:
        t, g = row["sides"].get("transfer", {}), row["sides"].get("guide", {})
        gap = f"{t['last'] - t['head_best']:+.3f}" if t.get("head_best") is not None else "-"
        ratio = f"{t['seconds'] / g['seconds']:.2f}" if t and g else "-"
        print(f"{row['entry']['name']:<13} {cell('guide', 'last', row):>7}/{cell('guide', 'best', row):<7} "
              f"{cell('probe', 'last', row):>6} {cell('transfer', 'last', row):>9}/{cell('transfer', 'best', row):<8} "
              f"{cell('transfer', 'head_best', row):>9} {gap:>9} {g.get('seconds', 0):>8.0f} "
              f"{t.get('seconds', 0):>10.0f} {ratio:>6}")
    print("-" * len(header))
    for key, value in summary.items():
        style = ".4f" if key.startswith(("mean_", "max_time", "max_cpu")) else "+.4f"  # margins get a sign
        print(f"{key:<28} {value:{style}}" if isinstance(value, float) else f"{key:<28} -")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fixtures", default=os.environ.get("TRANSFER_FIXTURES", str(REPO.parent / "shared" / "fixtures")),
                        help="folder holding the panel's datasets and weights (default $TRANSFER_FIXTURES)")
    parser.add_argument("--entry", action="append", default=[], metavar="NAME=PATH@SIZE:SEED",
                        help="a dataset entry (repeatable; replaces the default panel)")
    parser.add_argument("--entries", help="comma-separated names: run only these entries of the panel")
    parser.add_argument("--quick", action="store_true",
                        help="development form: 3 entries, at most 400 train / 200 val images each")
    parser.add_argument("--only", default=",".join(SIDES), help=f"comma-separated sides to run ({', '.join(SIDES)})")
    parser.add_argument("--recipe", help="transfer side: recipe TOML (default: transfer's default recipe)")
    parser.add_argument("--reuse", help="an earlier panel JSON: take the sides not run now from it")
    parser.add_argument("--combine", nargs="+", metavar="JSON",
                        help="run nothing: print the table and summary of these panel JSONs together "
                             "(entries run as separate processes) and write them to --json-out")
    parser.add_argument("--backbone", default="mobilenet_0.25")
    parser.add_argument("--weights", help="weights for every side (default: the fixtures' MobileNet 0.25 file)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--train-seed", type=int,
                        help="seed of every side's training (shuffling, augmentation, initialization) on the same "
                             "split; default: each entry's split seed. Vary it to see how far a result moves "
                             "between runs")
    parser.add_argument("--cache-dir", help="transfer side: feature cache (default: a fresh folder per run)")
    parser.add_argument("--json-out", help="write all results to this JSON file")
    parser.add_argument("--keep-runs",
                        help="transfer side: write each entry's run folder under this folder (kept; e.g. for "
                             "flip_tta.py) instead of a temporary one")
    parser.add_argument("--verbose", type=int, default=2, help="Keras fit verbosity (0, 1, 2)")
    args = parser.parse_args(argv)
    if args.combine:
        rows = [row for path in args.combine for row in json.loads(Path(path).read_text())["rows"]]
        summary = summarize(rows)
        print_table(rows, summary)
        if args.json_out:
            args.only, args.weights = set(SIDES), None
            _write(args, rows, summary, sum(json.loads(Path(p).read_text())["wall_seconds"] for p in args.combine))
        return 0
    fixtures = Path(args.fixtures)
    args.weights = args.weights or str(fixtures / WEIGHTS_FILE)
    args.only = {s.strip() for s in args.only.split(",") if s.strip()}
    if not args.only <= set(SIDES):
        parser.error(f"--only takes {', '.join(SIDES)}; received {sorted(args.only)}")
    entries = ([Entry.parse(e, fixtures) for e in args.entry] if args.entry else
               [Entry(n, str(fixtures / p), s, seed) for n, p, s, seed in (QUICK_PANEL if args.quick else DEFAULT_PANEL)])
    if args.entries:
        wanted = set(args.entries.split(","))
        entries = [e for e in entries if e.name in wanted]
    if args.keep_runs and "transfer" in args.only:
        # Before any side runs: an entry's old run folder would otherwise stop the panel after its guide side.
        from transfer.core.errors import TransferError
        from transfer.engine.run_config import check_out_dir

        for entry in entries:
            try:
                check_out_dir(Path(args.keep_runs) / f"{entry.name}-run")
            except TransferError as error:
                parser.error(f"--keep-runs: {error}")
    previous = {}
    if args.reuse:
        for row in json.loads(Path(args.reuse).read_text())["rows"]:
            previous[row["entry"]["name"]] = row["sides"]
    print(f"panel: {len(entries)} entries, sides {sorted(args.only)}, backbone {args.backbone}, weights "
          f"{args.weights}; {os.cpu_count()} CPUs, {len(tf.config.list_physical_devices('GPU'))} GPUs", flush=True)
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="transfer-panel-") as scratch:
        for entry in entries:
            reused = {k: v for k, v in previous.get(entry.name, {}).items() if k not in args.only}
            rows.append(run_entry(entry, args, Path(scratch), reused))
            if args.json_out:  # after every entry: a long panel killed late keeps what it measured
                _write(args, rows, summarize(rows), time.perf_counter() - started)
    summary = summarize(rows)
    print_table(rows, summary)
    if args.json_out:
        _write(args, rows, summary, time.perf_counter() - started)
        print(f"results written to {args.json_out}")
    return 0


def _write(args, rows, summary, seconds) -> None:
    recipe = Recipe.load(args.recipe) if args.recipe else Recipe()
    payload = {
        "args": {k: (sorted(v) if isinstance(v, set) else v) for k, v in vars(args).items()},
        "recipe_toml": recipe.to_toml(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0],
                    "tensorflow": tf.__version__, "keras": keras.__version__},
        "wall_seconds": round(seconds, 1),
        "rows": rows,
        "summary": summary,
    }
    tmp = Path(args.json_out).with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(args.json_out)


if __name__ == "__main__":
    sys.exit(main())
