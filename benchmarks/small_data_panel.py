"""Small datasets: transfer's default against its own head stage and a linear probe, seed by seed.

Each entry is a shared classification set cut down by seeded subsampling to
``N`` training images per class (20, 50 and 100 by default) and a validation
set of ``--val-per-class`` images per class drawn from the rest (fewer where a
class has too few). Every entry runs over several split seeds (three by
default): on 100 to 500 training images a validation set of a few dozen images
moves by one image for 1 to 2 points, so one seed cannot tell a loss from noise.

Per seed it records transfer's last and best epoch, the best epoch of its head
stage(s), and the probe (logistic regression on frozen pooled features, as in
``panel.py``); per entry the mean and spread over seeds of each, and of the
margins "last - head best" and "last - probe", in accuracy and in validation
images. The verdict per entry: the mean margins are >= 0 and no seed ends more
than one validation image under either (issue 24).

Example (the full panel: 3 sets x 3 sizes x 3 seeds, an hour or more on two CPU cores):

    python benchmarks/small_data_panel.py --json-out small.json
    python benchmarks/small_data_panel.py --sets neu_steel --per-class 20 --seeds 1,2,3
    python benchmarks/small_data_panel.py --quick            # a few minutes: one set, 10 a class, 2 seeds
    python benchmarks/small_data_panel.py --combine a.json b.json --json-out small.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from panel import WEIGHTS_FILE, Entry, run_probe, run_transfer_side  # noqa: E402

from transfer.core.recipe import Recipe  # noqa: E402
from transfer.data import load_data  # noqa: E402
from transfer.data.samples import DataSplit, Samples  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# name -> (folder under the fixtures, image size): the classification panel's sizes.
SETS = {"flowers5": ("flowers5", 128), "neu_steel": ("neu_steel", 128), "busi": ("busi", 224)}
PER_CLASS = (20, 50, 100)
SEEDS = (1, 2, 3)


def per_class_split(samples: Samples, per_class: int, val_per_class: int, seed: int) -> DataSplit:
    """``per_class`` training and ``val_per_class`` validation images of each class, drawn without
    overlap by a seeded permutation of each class's images (a class with too few keeps 4 in 5 of them
    for training at most, the rest for validation).

    Example:
        >>> split = per_class_split(load_data("flowers5").train, 20, 25, seed=1)   # doctest: +SKIP
        >>> len(split.train), len(split.val)
        (100, 125)
    """
    rng = np.random.default_rng(seed)
    targets = np.array(samples.targets)
    train, val = [], []
    for label in range(len(samples.class_names)):
        rows = rng.permutation(np.flatnonzero(targets == label))
        n_train = min(per_class, len(rows) * 4 // 5)
        train.extend(rows[:n_train])
        val.extend(rows[n_train:n_train + val_per_class])
    origin = f"{per_class} a class (seed {seed}), {val_per_class} a class for validation"
    return DataSplit(samples.subset(sorted(train)), samples.subset(sorted(val)), origin)


def every_image(folder: str) -> Samples:
    """All of a folder-per-class set's images, in the reader's order (its split put back together)."""
    split = load_data(folder, val_fraction=0.2, seed=0)
    a, b = split.train, split.val
    return Samples(sources=a.sources + b.sources, targets=a.targets + b.targets, class_names=a.class_names)


def spread(values: list[float]) -> dict:
    """Mean, standard deviation (0 for one value), smallest and largest."""
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def summarize_entry(runs: list[dict]) -> dict:
    """Over an entry's seeds: each figure's spread, the margins in accuracy and in images, the verdict."""
    out = {key: spread([r[key] for r in runs]) for key in ("last", "best", "head_best", "probe")}
    for other in ("head_best", "probe"):
        margins = [r["last"] - r[other] for r in runs]
        images = [round(m * r["num_val"]) for m, r in zip(margins, runs)]
        out[f"last_minus_{other}"] = spread(margins)
        out[f"last_minus_{other}_images"] = spread([float(i) for i in images])
    # How many seeds ended as the head stage's model after the fine-tune check (runs from before it: 0).
    out["head_only_seeds"] = sum(r.get("final_model") == "head" for r in runs)
    # (-1e-6: the probe's accuracy is float64, Keras's float32; the same images right can differ by 1e-8.)
    out["holds"] = all(out[f"last_minus_{o}"]["mean"] >= -1e-6 and out[f"last_minus_{o}_images"]["min"] >= -1
                       for o in ("head_best", "probe"))
    return out


def run_seed(name: str, per_class: int, seed: int, samples: Samples, args, scratch: Path) -> dict:
    folder, size = SETS[name]
    split = per_class_split(samples, per_class, args.val_per_class, seed)
    entry = Entry(f"{name}-{per_class}-s{seed}", folder, size, seed)
    print(f"\n=== {entry.name}: {len(split.train)} train / {len(split.val)} val at {size} px ===", flush=True)
    transfer = run_transfer_side(split, args, entry, scratch)
    probe = run_probe(split, args, entry)
    row = {"set": name, "per_class": per_class, "seed": seed, "num_train": len(split.train),
           "num_val": len(split.val), "last": transfer.last, "best": transfer.best,
           "head_best": transfer.head_best, "probe": probe.last, "curve": transfer.curve,
           "transfer_seconds": round(transfer.seconds, 1), "probe_seconds": round(probe.seconds, 1),
           "final_model": transfer.final_model, "check": transfer.check}
    print(f"{entry.name}: last {row['last']:.4f} best {row['best']:.4f} head best {row['head_best']:.4f} "
          f"probe {row['probe']:.4f} ({transfer.seconds:.0f} s; final model: {row['final_model'] or 'unchecked'})",
          flush=True)
    return row


def group(rows: list[dict]) -> list[dict]:
    """Seeds of the same set and size together, with their summary."""
    keys = sorted({(r["set"], r["per_class"]) for r in rows}, key=lambda k: (list(SETS).index(k[0]), k[1]))
    return [{"set": s, "per_class": n, "seeds": [r for r in rows if (r["set"], r["per_class"]) == (s, n)],
             "summary": summarize_entry([r for r in rows if (r["set"], r["per_class"]) == (s, n)])}
            for s, n in keys]


def print_table(entries: list[dict]) -> None:
    header = (f"{'entry':<16} {'seeds':>5} {'val':>4} {'last':>13} {'head best':>13} {'probe':>13} "
              f"{'last-head (img)':>17} {'last-probe (img)':>17} {'head-only':>9} {'holds':>5}")
    print("\n" + header + "\n" + "-" * len(header))
    for e in entries:
        s, seeds = e["summary"], e["seeds"]

        def cell(key):
            return f"{s[key]['mean']:.3f}±{s[key]['std']:.3f}"

        def margin(other):
            images = s[f"last_minus_{other}_images"]
            return f"{s[f'last_minus_{other}']['mean']:+.3f} ({images['min']:+.0f})"

        print(f"{e['set'] + '-' + str(e['per_class']):<16} {len(seeds):>5} {seeds[0]['num_val']:>4} "
              f"{cell('last'):>13} {cell('head_best'):>13} {cell('probe'):>13} {margin('head_best'):>17} "
              f"{margin('probe'):>17} {s.get('head_only_seeds', 0):>9} {'yes' if s['holds'] else 'NO':>5}")
    print("-" * len(header) + "\n(img): the worst seed's margin in validation images; head-only: seeds whose "
          "fine-tune check kept the head stage's model")


def write_json(path: str, rows: list[dict], args, seconds: float) -> None:
    recipe = Recipe.load(args.recipe) if args.recipe else Recipe()
    payload = {"recipe_toml": recipe.to_toml(), "wall_seconds": round(seconds, 1), "rows": rows,
               "entries": group(rows)}
    tmp = Path(path).with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fixtures", default=os.environ.get("TRANSFER_FIXTURES", str(REPO.parent / "shared" / "fixtures")))
    parser.add_argument("--sets", default=",".join(SETS), help=f"comma-separated ({', '.join(SETS)})")
    parser.add_argument("--per-class", default=",".join(map(str, PER_CLASS)), help="training images a class")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="split seeds (3 at least to judge)")
    parser.add_argument("--val-per-class", type=int, default=25, help="validation images a class (default 25)")
    parser.add_argument("--quick", action="store_true", help="one set, 10 images a class, 2 seeds (tests)")
    parser.add_argument("--recipe", help="transfer's recipe TOML (default: the default recipe)")
    parser.add_argument("--backbone", default="mobilenet_0.25")
    parser.add_argument("--weights", help="default: the fixtures' MobileNet 0.25 ImageNet file")
    parser.add_argument("--json-out")
    parser.add_argument("--combine", nargs="+", metavar="JSON", help="run nothing: merge these JSONs")
    parser.add_argument("--verbose", type=int, default=0)
    args = parser.parse_args(argv)
    if args.combine:
        rows = [row for path in args.combine for row in json.loads(Path(path).read_text())["rows"]]
        print_table(group(rows))
        if args.json_out:
            write_json(args.json_out, rows, args, sum(json.loads(Path(p).read_text())["wall_seconds"]
                                                      for p in args.combine))
        return 0
    if args.quick:
        args.sets, args.per_class, args.seeds, args.val_per_class = "neu_steel", "10", "1,2", 10
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    unknown = sorted(set(sets) - set(SETS))
    if unknown:
        parser.error(f"--sets: unknown {unknown}; known: {', '.join(SETS)}")
    sizes, seeds = [int(n) for n in args.per_class.split(",")], [int(n) for n in args.seeds.split(",")]
    fixtures = Path(args.fixtures)
    args.weights = args.weights or str(fixtures / WEIGHTS_FILE)
    # What panel.run_transfer_side and run_probe read: the recipe's own batch size, seeds from the split.
    args.batch_size = (Recipe.load(args.recipe) if args.recipe else Recipe()).batch_size
    args.train_seed, args.keep_runs, args.cache_dir = None, None, None
    started, rows = time.perf_counter(), []
    with tempfile.TemporaryDirectory(prefix="transfer-small-") as scratch:
        for name in sets:
            folder = fixtures / SETS[name][0]
            if not folder.is_dir():
                parser.error(f"{folder} not found: set --fixtures or $TRANSFER_FIXTURES")
            samples = every_image(str(folder))
            for per_class in sizes:
                for seed in seeds:
                    rows.append(run_seed(name, per_class, seed, samples, args, Path(scratch)))
                    if args.json_out:  # after every run: a long panel killed late keeps what it measured
                        write_json(args.json_out, rows, args, time.perf_counter() - started)
    print_table(group(rows))
    if args.json_out:
        write_json(args.json_out, rows, args, time.perf_counter() - started)
        print(f"results written to {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
