"""The box and mask tasks against the keras.io guides: transfer's default and the guide, entry by entry.

For each entry (a task on one data set, issue 23 item 2) this runs, on the same
data, split, backbone (mobilenet_0.25), ImageNet weights (the fixture's file)
and image size (the task's default for the backbone unless the entry sets one):

(a) transfer  ``transfer.train`` with the task's default recipe (or ``--recipe``:
              a file, or ``benchmarks/recipes/`` for the pinned recipes of
              2026-12-07), then its best epoch (picked on the validation side)
              and its last epoch, both scored on the entry's scoring split by the
              task's evaluation (pycocotools mAP, mean IoU at the masks' own size);
(b) guide     the task's keras.io-style guide (``benchmarks/guides/``) for as
              many optimizer steps as (a) took, its last epoch scored the same way.

Each side runs in a child process of its own (``--one-side``; see
``task_panel_sides.py``), transfer first. It prints per entry the headline
metrics (detect: map and map50; segment: mean IoU, membrane also pixel
accuracy; localize: mean IoU) of transfer's best and last epoch and the
guide's last, the margin (transfer last - guide last), the wall seconds of
each side (training + one scoring pass, measured in the child) and their
ratio (transfer / guide); everything, per-epoch histories included, goes to
``--json-out`` after every entry.

Example (the whole panel takes hours on two CPU cores):

    python benchmarks/task_panel.py --json-out task-panel.json
    python benchmarks/task_panel.py --entries detect:raccoon,segment:balloon --json-out some.json
    python benchmarks/task_panel.py --recipe benchmarks/recipes --only transfer --json-out pinned.json
    python benchmarks/task_panel.py --only guide --steps-from some.json --entries detect:raccoon
    python benchmarks/task_panel.py --quick --entries localize:raccoon      # minutes: tiny subsets
    python benchmarks/task_panel.py --combine a.json b.json --json-out task-panel.json
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

from task_panel_sides import Entry, run_side  # noqa: E402

FIXTURES = Path(os.environ.get("TRANSFER_FIXTURES", REPO.parent / "shared" / "fixtures"))
WEIGHTS_FILE = "weights/mobilenet_2_5_224_tf_no_top.h5"
# Issue 23 item 2: the entries, in the order they run.
PANEL = (
    Entry("detect:raccoon", "detect", "raccoon/train_labels.csv", val="raccoon/test_labels.csv"),
    # Validated on val.txt (transfer's best epoch is picked there), every score on test.txt.
    Entry("detect:bccd", "detect", "bccd/ImageSets/Main/train.txt", val="bccd/ImageSets/Main/val.txt",
          score="bccd/ImageSets/Main/test.txt"),
    Entry("detect:face_masks", "detect", "face_masks", val_fraction=0.2, seed=0),
    Entry("detect:neu_det", "detect", "neu_det", val_fraction=0.2, seed=0),
    Entry("localize:raccoon", "localize", "raccoon/train_labels.csv", val="raccoon/test_labels.csv"),
    # CamVid's mask value 11 is "void" (fixtures README): ignored by the loss and every score.
    Entry("segment:camvid", "segment", "camvid/train", val="camvid/val", options={"ignore_index": 11}),
    Entry("segment:balloon", "segment", "balloon/train", val="balloon/val"),
    # README.md's measured membrane row: 5 of 30 held out, at the images' own 512 px.
    Entry("segment:membrane", "segment", "membrane/train", val_fraction=0.1667, seed=0, image_size=512,
          options={"class_names": "membrane,cell"}, extras=("pixel_accuracy",)),
)
SIDES = ("transfer", "guide")
PINNED_PREFIX = "# panel-settings: "
# TensorFlow's start-up lines that TF_CPP_MIN_LOG_LEVEL does not silence (absl logs before its init).
TF_CHATTER = ("WARNING: All log messages before absl::InitializeLog()", "I0000 ",
              "To enable the following instructions")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", default=None,
                        help="comma-separated entry names (detect:raccoon) or tasks (segment); default: all")
    parser.add_argument("--only", choices=SIDES, default=None, help="run one side only")
    parser.add_argument("--recipe", action="append", default=[],
                        help="transfer's recipe: a file, or a folder of pinned recipes (benchmarks/recipes); "
                             "a pinned file applies to its task's entries; repeatable")
    parser.add_argument("--steps-from", default=None,
                        help="with --only guide: a panel JSON whose transfer sides give the step counts")
    parser.add_argument("--quick", action="store_true", help="tiny subsets, 64 px, one epoch a stage (tests)")
    parser.add_argument("--backbone", default="mobilenet_0.25")
    parser.add_argument("--weights", default=None, help=f"default: $TRANSFER_FIXTURES/{WEIGHTS_FILE}")
    parser.add_argument("--work-dir", default=None, help="where the runs go (default: a temporary folder, removed)")
    parser.add_argument("--json-out", default=None)
    parser.add_argument("--combine", nargs="+", default=None, metavar="JSON", help="merge panel JSON files")
    parser.add_argument("--one-side", default=None, help=argparse.SUPPRESS)  # a child's side (JSON)
    parser.add_argument("--guide-module", default=None, help=argparse.SUPPRESS)  # a stand-in guide (tests)
    return parser.parse_args(argv)


def main(argv=None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.one_side:
        return run_side(json.loads(args.one_side))
    if args.combine:
        payload = combine([json.loads(Path(p).read_text(encoding="utf-8")) for p in args.combine],
                          sources=args.combine)
    else:
        payload = run_panel(args)
    print(table(payload["entries"]))
    write_json(payload, args.json_out)
    return payload


# --- choosing what runs ----------------------------------------------------------------------

def select_entries(text: str | None, panel=PANEL) -> list[Entry]:
    """The entries ``--entries`` names (an entry's name, or a task for all of its entries), in panel order.

    Example:
        >>> [e.name for e in select_entries("localize,segment:balloon")]
        ['localize:raccoon', 'segment:balloon']
    """
    if not text:
        return list(panel)
    wanted = [w.strip() for w in text.split(",") if w.strip()]
    known = {e.name for e in panel} | {e.task for e in panel}
    unknown = [w for w in wanted if w not in known]
    if unknown:
        raise SystemExit(f"--entries: unknown {unknown}; the entries are {[e.name for e in panel]} "
                         "(or a task name for all of its entries).")
    return [e for e in panel if e.name in wanted or e.task in wanted]


def pinned_settings(path: Path) -> dict[str, Any]:
    """The ``# panel-settings: {JSON}`` line of a pinned recipe file (``{}`` for a plain recipe)."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith(PINNED_PREFIX):
            return json.loads(line[len(PINNED_PREFIX):])
    return {}


def recipes_by_task(paths: list[str]) -> dict[str | None, Path]:
    """``--recipe``'s files by the task their pinned settings name (None: a plain file, for every task);
    a folder stands for its ``*.toml`` files. Two files for one task are refused.

    Example:
        >>> sorted(recipes_by_task(["benchmarks/recipes"]))
        ['detect', 'localize', 'segment']
    """
    files = []
    for text in paths:
        path = Path(text)
        if path.is_dir():
            files.extend(sorted(path.glob("*.toml")))
        elif path.is_file():
            files.append(path)
        else:
            raise SystemExit(f"--recipe {text}: no such file or folder.")
    chosen: dict[str | None, Path] = {}
    for path in files:
        tomllib.loads(path.read_text(encoding="utf-8"))  # a broken file stops here, not hours in
        task = pinned_settings(path).get("task")
        if task in chosen:
            raise SystemExit(f"--recipe: {chosen[task]} and {path} are both for {task or 'every task'}; give one.")
        chosen[task] = path
    return chosen


def steps_from(path: str | None) -> dict[str, dict[str, Any]]:
    """Entry name -> the transfer side of an earlier panel JSON (its ``steps`` and ``image_size``)."""
    if not path:
        return {}
    payload = json.loads(Path(path).read_text(encoding="utf-8"))
    return {row["entry"]["name"]: row["sides"]["transfer"] for row in payload["entries"]
            if "steps" in row.get("sides", {}).get("transfer", {})}


# --- running the sides -----------------------------------------------------------------------

def run_panel(args: argparse.Namespace) -> dict[str, Any]:
    """Every chosen entry, each side in a child process; the JSON is rewritten after each entry."""
    entries = select_entries(args.entries)
    recipes = recipes_by_task(args.recipe)
    weights = args.weights or str(FIXTURES / WEIGHTS_FILE)
    _check_inputs(entries, weights, args)
    earlier = steps_from(args.steps_from)
    temporary = args.work_dir is None
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="task-panel-"))
    payload = {"panel": "task_panel", "created": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(),
               "settings": {"backbone": args.backbone, "weights": weights, "quick": args.quick,
                            "only": args.only, "recipes": {str(k): str(v) for k, v in recipes.items()}},
               "entries": []}
    try:
        for entry in entries:
            recipe = recipes.get(entry.task) or recipes.get(None)
            base = {"entry": entry.to_dict(), "fixtures": str(FIXTURES), "backbone": args.backbone,
                    "weights": weights, "quick": args.quick, "guide_module": args.guide_module,
                    "recipe": None if recipe is None else str(recipe),
                    "settings": {} if recipe is None else pinned_settings(recipe)}
            sides = run_entry(entry, base, work / entry.slug, args.only, earlier.get(entry.name))
            payload["entries"].append(entry_row(entry, sides))
            print(table(payload["entries"][-1:]), flush=True)
            write_json(payload, args.json_out)
    finally:
        if temporary:
            shutil.rmtree(work, ignore_errors=True)
    return payload


def run_entry(entry: Entry, base: dict[str, Any], work: Path, only: str | None,
              earlier: dict[str, Any] | None) -> dict[str, Any]:
    """The entry's sides: transfer first (unless ``only`` is the guide), then the guide for the
    steps transfer took (or ``earlier``'s, from ``--steps-from``)."""
    work.mkdir(parents=True, exist_ok=True)
    sides: dict[str, Any] = {}
    if only in (None, "transfer"):
        sides["transfer"] = run_child({**base, "side": "transfer", "work": str(work),
                                       "result": str(work / "transfer.json")})
    if only in (None, "guide"):
        source = sides.get("transfer") if only is None else earlier
        if not source or "steps" not in source:
            sides["guide"] = {"side": "guide", "error": "no step count: transfer's side failed"
                              if only is None else "no step count: pass --steps-from with this entry's transfer side"}
        else:
            sides["guide"] = run_child({**base, "side": "guide", "work": str(work), "steps": source["steps"],
                                        "image_size": source.get("image_size"), "result": str(work / "guide.json")})
    return sides


def run_child(spec: dict[str, Any], echo=None) -> dict[str, Any]:
    """``spec``'s side in a child process (this script, ``--one-side``), its lines echoed as they come;
    the side's JSON, or ``{"error": ..., "log_tail": [...]}`` when the child fails."""
    echo = echo or _say
    result = Path(spec["result"])
    result.unlink(missing_ok=True)
    command = [sys.executable, str(Path(__file__).resolve()), "--one-side", json.dumps(spec)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3")}
    tail: collections.deque = collections.deque(maxlen=40)
    echo(f"--- {spec['entry']['name']}: {spec['side']} ---")
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                          cwd=REPO) as child:
        for line in child.stdout:
            if not line.startswith(TF_CHATTER):  # kept in the tail, not shown
                echo(f"  [{spec['side']}] {line.rstrip()}")
            tail.append(line.rstrip())
    if child.returncode != 0 or not result.is_file():
        return {"side": spec["side"], "error": f"the child exited with code {child.returncode}",
                "log_tail": list(tail)}
    return json.loads(result.read_text(encoding="utf-8"))


def _check_inputs(entries: list[Entry], weights: str, args: argparse.Namespace) -> None:
    """Stop before anything runs when a fixture, the weights file or --steps-from is missing."""
    paths = [FIXTURES / p for e in entries for p in (e.data, e.val, e.score) if p]
    if weights.lower() not in ("none", "imagenet"):
        paths.append(Path(weights))
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise SystemExit(f"Not found: {missing}. Set TRANSFER_FIXTURES to the fixtures folder (now {FIXTURES}).")
    if args.only == "guide" and not args.steps_from:
        raise SystemExit("--only guide needs --steps-from PANEL.json (the steps transfer took on each entry).")
    if args.work_dir and any((Path(args.work_dir) / e.slug).exists() for e in entries):
        raise SystemExit(f"--work-dir {args.work_dir} already holds runs of these entries; pick another folder.")


# --- the figures -----------------------------------------------------------------------------

def entry_row(entry: Entry, sides: dict[str, Any]) -> dict[str, Any]:
    """The entry's JSON row: what it is, both sides as they came, and ``summary`` (see ``summarize``)."""
    return {"entry": entry.to_dict(), "sides": sides, "summary": summarize(entry, sides)}


def summarize(entry: Entry, sides: dict[str, Any]) -> dict[str, Any]:
    """Per metric transfer's best and last and the guide's last with the margin (transfer last -
    guide last); both wall times and their ratio (transfer / guide). None where a side is missing.

    Example:
        >>> s = summarize(entry, {"transfer": {"best": {"score": {"mean_iou": 0.8}}, "last": {"score":
        ...     {"mean_iou": 0.78}}, "wall_seconds": 300}, "guide": {"score": {"mean_iou": 0.7},
        ...     "wall_seconds": 600}})
        >>> s["margin"], s["time_ratio"]
        (0.08, 0.5)
    """
    t, g = sides.get("transfer") or {}, sides.get("guide") or {}
    metrics = {}
    for name in entry.metrics:
        best, last = _score(t.get("best"), name), _score(t.get("last"), name)
        guide = _score(g, name)
        metrics[name] = {"transfer_best": best, "transfer_last": last, "guide_last": guide,
                         "margin": None if last is None or guide is None else round(last - guide, 4)}
    seconds = t.get("wall_seconds"), g.get("wall_seconds")
    return {"headline": entry.metrics[0], "metrics": metrics, "margin": metrics[entry.metrics[0]]["margin"],
            "transfer_seconds": seconds[0], "guide_seconds": seconds[1],
            "time_ratio": None if None in seconds or not seconds[1] else round(seconds[0] / seconds[1], 3),
            "steps": t.get("steps", g.get("steps")),
            "errors": {side: sides[side]["error"] for side in sides if "error" in (sides[side] or {})}}


def _score(side: dict[str, Any] | None, name: str) -> float | None:
    value = ((side or {}).get("score") or {}).get(name)
    return None if value is None else float(value)


def table(rows: list[dict[str, Any]]) -> str:
    """One line per entry and metric: transfer best / last, guide last, margin; seconds and ratio
    on the entry's first line."""
    head = (f"{'entry':<20} {'metric':<15} {'t.best':>7} {'t.last':>7} {'guide':>7} {'margin':>7} "
            f"{'t.sec':>8} {'g.sec':>8} {'ratio':>6} {'steps':>6}")
    lines = [head, "-" * len(head)]
    for row in rows:
        summary, name = row["summary"], row["entry"]["name"]
        for i, (metric, m) in enumerate(summary["metrics"].items()):
            cells = [_cell(m["transfer_best"]), _cell(m["transfer_last"]), _cell(m["guide_last"]),
                     _cell(m["margin"], signed=True)]
            tail = ([_cell(summary["transfer_seconds"], 1), _cell(summary["guide_seconds"], 1),
                     _cell(summary["time_ratio"], 2), str(summary["steps"] or "-")] if i == 0 else [])
            lines.append(f"{name if i == 0 else '':<20} {metric:<15} " + " ".join(
                f"{c:>7}" for c in cells) + (" " + " ".join(f"{c:>{w}}" for c, w in zip(tail, (8, 8, 6, 6)))
                                             if tail else ""))
        lines.extend(f"{'':<20} {side} failed: {error}" for side, error in summary["errors"].items())
    return "\n".join(lines)


def _cell(value, digits: int = 3, *, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def combine(payloads: list[dict[str, Any]], *, sources: list[str] | None = None) -> dict[str, Any]:
    """Panels run apart as one: entries in panel order, an entry's sides merged (a later file's side
    replaces an earlier one's), every summary recomputed.

    Example:
        >>> merged = combine([transfer_only, guide_only])   # the same entry, one side in each
        >>> sorted(merged["entries"][0]["sides"])
        ['guide', 'transfer']
    """
    merged: dict[str, dict[str, Any]] = {}
    for payload in payloads:
        for row in payload["entries"]:
            name = row["entry"]["name"]
            kept = merged.setdefault(name, {"entry": row["entry"], "sides": {}})
            kept["entry"] = row["entry"]
            kept["sides"].update({k: v for k, v in row["sides"].items() if v})
    order = {e.name: i for i, e in enumerate(PANEL)}
    names = sorted(merged, key=lambda n: (order.get(n, len(order)), n))
    return {"panel": "task_panel", "created": time.strftime("%Y-%m-%d %H:%M:%S"), "combined_from": sources or [],
            "settings": [p.get("settings") for p in payloads],
            "entries": [entry_row(Entry.from_dict(merged[n]["entry"]), merged[n]["sides"]) for n in names]}


def _say(line: str) -> None:
    print(line, flush=True)  # a long run's log file shows each line as it comes


def machine() -> dict[str, Any]:
    return {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "processor": platform.processor()}


def write_json(payload: dict[str, Any], path: str | None) -> None:
    if not path:
        return
    target = Path(path)
    staging = target.with_name(target.name + ".partial")
    staging.write_text(json.dumps(payload, indent=1), encoding="utf-8")
    staging.replace(target)
    print(f"Wrote {target}")


if __name__ == "__main__":
    main()
