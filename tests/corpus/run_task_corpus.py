"""Run the bad-input corpus of every task (``task_cases.py``) through the real CLI and judge each case.

Each case runs in a fresh process (``python -m transfer ...``) in its own tmp
folder, under a timeout and a memory cap, and comes out as one of:

- ``clear_error``: a non-zero exit the case allows, its paths named, no traceback;
- ``works``: exit 0 where the case allows it, its checks met;
- ``traceback``: a Python traceback in the output, or a crash by a signal;
- ``hang``: killed by the runner (past its timeout, or over its memory cap);
- ``silent_wrong``: no traceback, but an exit code, a named path or a check the case wants is missing;
- ``loss``: a path that must stay byte-identical changed or vanished (an input, a run, a user's file).

Evaluate/export/predict cases get a copy of one tiny run and export per task,
trained once per corpus run (smallcnn, 32 px, one epoch, ``--weights none``).

Usage::

    python tests/corpus/run_task_corpus.py [--only ID,...] [--task segment] [--command predict]
                                           [--workers 2] [--json OUT] [--base DIR] [--keep]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.corpus import task_inputs as inp  # noqa: E402
from tests.corpus.task_cases import CASES, COMMANDS, Case  # noqa: E402

OUTCOMES = ("clear_error", "works", "traceback", "hang", "silent_wrong", "loss")
BAD = ("traceback", "hang", "silent_wrong", "loss")
RECIPE = """batch_size = 4
augment = []
head_cache_views = 0
warmup_epochs = 0.0
ema_epochs = 0.0
[[stages]]
name = "all"
trainable = "all"
epochs = 1
"""


def environment(tmp: Path) -> dict:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "", "PYTHONUNBUFFERED": "1",
            "TRANSFER_CACHE_DIR": str(tmp / ".feature-cache"), "TRANSFER_MEMORY_CACHE_MB": "256",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def run_cli(argv: list[str], cwd: Path, timeout: float, max_rss_mb: int) -> dict:
    """``python -m transfer *argv``: exit code, output, seconds, peak RSS, and why it was killed (if it was)."""
    out_path = cwd / ".corpus-output.txt"
    started = time.monotonic()
    with open(out_path, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "transfer", *argv], cwd=cwd, env=environment(cwd),
                                   stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    killed, peak_kb, status, usage = None, 0, None, None
    while status is None:
        pid, raw, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            status = raw
            break
        peak_kb = max(peak_kb, _rss_kb(process.pid))
        if killed is None and time.monotonic() - started > timeout:
            killed = f"still running after {timeout:.0f} s"
        elif killed is None and peak_kb > max_rss_mb * 1024:
            killed = f"over its memory cap ({peak_kb // 1024} MB > {max_rss_mb} MB)"
        if killed:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    process.returncode = os.waitstatus_to_exitcode(status)
    output = out_path.read_bytes().decode("utf-8", "replace")
    out_path.unlink()
    return {"rc": process.returncode, "output": output, "seconds": round(time.monotonic() - started, 1),
            "peak_rss_mb": max(peak_kb, usage.ru_maxrss if usage else 0) // 1024, "killed": killed}


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


# --- the tiny run and export of each task, once per corpus run ----------------------------------

def build_base(task: str, base: Path) -> Path:
    """``base/task/{data,run,export}``: a tiny trained run (evaluated once) and its export."""
    folder = base / task
    if (folder / "export" / "assets").is_dir():
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / "tiny.toml").write_text(RECIPE)
    inp.data_of(task)(folder)
    task_flag = [] if task == "classification" else ["--task", task]
    steps = [["train", *task_flag, "--data", inp.src(task, str(folder / "data")), "--out", str(folder / "run"),
              "--backbone", "smallcnn", "--weights", "none", "--image-size", "32", "--recipe",
              str(folder / "tiny.toml")],
             ["evaluate", str(folder / "run")],
             ["export", str(folder / "run"), "--out", str(folder / "export")]]
    for argv in steps:
        result = run_cli(argv, folder, timeout=900, max_rss_mb=8000)
        if result["rc"] != 0:
            raise RuntimeError(f"building the {task} base failed: transfer {' '.join(argv)}\n"
                               f"{result['output'][-3000:]}")
    return folder


# --- one case ------------------------------------------------------------------------------------

def snapshot(path: Path) -> dict[str, str]:
    """Every file at or under ``path``: its sha256 (a FIFO or other special file: its kind, never opened)."""
    found: dict[str, str] = {}
    paths = [path] if not path.is_dir() or path.is_symlink() else sorted(path.rglob("*"))
    for p in paths:
        try:
            mode = os.lstat(p).st_mode
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(mode):
            continue
        rel = str(p.relative_to(path)) if p != path else "."
        found[rel] = hashlib.sha256(p.read_bytes()).hexdigest() if stat.S_ISREG(mode) else f"special {mode:o}"
    return found


def lost(before: dict[str, dict[str, str]]) -> list[str]:
    problems = []
    for root, files in before.items():
        after = snapshot(Path(root))
        for rel, digest in files.items():
            where = root if rel == "." else f"{root}/{rel}"
            if rel not in after:
                problems.append(f"{where} vanished")
            elif after[rel] != digest:
                problems.append(f"{where} changed")
    return problems


def judge(case: Case, tmp: Path, result: dict, losses: list[str]) -> tuple[str, str]:
    """(outcome, reason) of a finished case."""
    rc, output = result["rc"], result["output"]
    if losses:
        return "loss", "; ".join(losses[:5]) + (f" (+{len(losses) - 5} more)" if len(losses) > 5 else "")
    if result["killed"]:
        return "hang", f"killed: {result['killed']}"
    if "Traceback (most recent call last)" in output or rc < 0:
        last = [line for line in output.strip().splitlines() if line.strip()][-1:] or [""]
        return "traceback", f"exit {rc}: {last[0][:200]}"
    problems = []
    if rc not in case.exit:
        problems.append(f"exit {rc}, wanted {'/'.join(map(str, case.exit))}")
    for named in case.named:
        options = [named] if isinstance(named, str) else list(named)
        if not any(inp.expand(o, tmp) in output for o in options):
            problems.append(f"the output does not name {' or '.join(inp.expand(o, tmp) for o in options)}")
    if case.check is not None:
        try:
            problem = case.check(tmp, output, rc)
        except Exception as exc:  # a check that cannot read what the command left is a finding too
            problem = f"check failed: {type(exc).__name__}: {exc}"
        if problem:
            problems.append(problem)
    if problems:
        return "silent_wrong", "; ".join(problems)
    return ("works" if rc == 0 else "clear_error"), ""


def run_case(case: Case, base: Path, keep_tmp: bool = False) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix=case.id.replace(".", "_") + "-", dir=base / "cases"))
    try:
        (tmp / "tiny.toml").write_text(RECIPE)
        for need in case.needs:
            shutil.copytree(base / case.task / need, tmp / need, symlinks=True)
        case.build(tmp)
        before = {inp.expand(k, tmp): snapshot(Path(inp.expand(k, tmp))) for k in case.keep}
        argv = [inp.expand(a, tmp) for a in case.argv]
        thread = None
        if case.during is not None:
            thread = threading.Thread(target=case.during, args=(tmp,), daemon=True)
            thread.start()
        result = run_cli(argv, tmp, case.timeout, case.max_rss_mb)
        outcome, reason = judge(case, tmp, result, lost(before))
        return {"id": case.id, "task": case.task, "command": case.command, "what": case.what, "outcome": outcome,
                "wanted": case.outcome, "reason": reason, "rc": result["rc"], "seconds": result["seconds"],
                "peak_rss_mb": result["peak_rss_mb"], "argv": argv, "output_tail": result["output"][-1500:]}
    except Exception as exc:  # a builder that broke is the corpus's bug: say so, do not count it as the product's
        return {"id": case.id, "task": case.task, "command": case.command, "what": case.what, "outcome": "error",
                "wanted": case.outcome, "reason": f"the runner failed: {type(exc).__name__}: {exc}", "rc": None,
                "seconds": 0, "peak_rss_mb": 0, "argv": list(case.argv), "output_tail": ""}
    finally:
        if not keep_tmp:
            shutil.rmtree(tmp, ignore_errors=True)


# --- the whole corpus ----------------------------------------------------------------------------

def select(cases: list[Case], only=None, task=None, command=None) -> list[Case]:
    wanted = set(only.split(",")) if only else None
    return [c for c in cases if (wanted is None or c.id in wanted) and (task is None or c.task == task)
            and (command is None or c.command == command)]


def run_corpus(cases: list[Case], base: Path, workers: int = 2, keep_tmp: bool = False, say=print) -> dict:
    """Run ``cases`` (bases built first, as needed) and return the summary (see ``summarize``)."""
    (base / "cases").mkdir(parents=True, exist_ok=True)
    tasks = sorted({c.task for c in cases if c.needs})
    started = time.monotonic()
    with ThreadPoolExecutor(max(1, workers)) as pool:
        list(pool.map(lambda t: build_base(t, base), tasks))
    say(f"Bases ({', '.join(tasks) or 'none needed'}) ready in {time.monotonic() - started:.0f} s")
    results = []
    order = sorted(cases, key=lambda c: -c.timeout)  # the long ones first: the workers finish together

    def one(case: Case) -> dict:
        result = run_case(case, base, keep_tmp)
        say(f"{result['outcome']:>12}  {result['seconds']:6.1f} s  {case.id}"
            + (f"  ({result['reason'][:160]})" if result["reason"] else ""))
        return result

    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = list(pool.map(one, order))
    return summarize(results, time.monotonic() - started)


def summarize(results: list[dict], seconds: float) -> dict:
    def counts(key):
        table: dict[str, Counter] = {}
        for r in results:
            table.setdefault(r[key], Counter())[r["outcome"]] += 1
        return {k: {"cases": sum(v.values()), **{o: v.get(o, 0) for o in OUTCOMES + ("error",) if v.get(o) or
                                                  o in OUTCOMES}} for k, v in sorted(table.items())}
    total = Counter(r["outcome"] for r in results)
    return {"cases": len(results), "seconds": round(seconds, 1),
            "counts": {o: total.get(o, 0) for o in OUTCOMES + ("error",)},
            "per_task": counts("task"), "per_command": counts("command"),
            "failing": [{k: r[k] for k in ("id", "outcome", "reason")} for r in results
                        if r["outcome"] not in ("clear_error", "works")],
            "results": sorted(results, key=lambda r: r["id"])}


def table(summary: dict) -> str:
    columns = ("cases",) + OUTCOMES
    lines = []
    for title, key in (("task", "per_task"), ("command", "per_command")):
        lines.append(f"{title:<16}" + "".join(f"{c:>13}" for c in columns))
        for name, row in summary[key].items():
            lines.append(f"{name:<16}" + "".join(f"{row.get(c, 0):>13}" for c in columns))
        lines.append("")
    counts = summary["counts"]
    lines.append(f"{summary['cases']} cases in {summary['seconds']:.0f} s: "
                 + ", ".join(f"{counts[o]} {o}" for o in OUTCOMES + ("error",) if o != "error" or counts[o]))
    if summary["failing"]:
        lines.append("\nFailing cases:")
        lines += [f"  {f['outcome']:<13} {f['id']}: {f['reason']}" for f in summary["failing"]]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="Comma-separated case ids.")
    parser.add_argument("--task", choices=inp.TASKS)
    parser.add_argument("--command", choices=COMMANDS + ("demo",))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path, help="Write the summary (every case's outcome) here.")
    parser.add_argument("--base", type=Path, help="Keep the tiny runs and exports here (reused when present).")
    parser.add_argument("--keep", action="store_true", help="Keep each case's tmp folder (under BASE/cases).")
    parser.add_argument("--list", action="store_true", help="List the selected cases and exit.")
    args = parser.parse_args(argv)
    cases = select(CASES, args.only, args.task, args.command)
    if args.list:
        for c in cases:
            print(f"{c.id:<60} {c.what}")
        print(f"{len(cases)} cases")
        return 0
    if not cases:
        parser.error("no case matches")
    base = args.base or Path(tempfile.mkdtemp(prefix="task-corpus-"))
    try:
        summary = run_corpus(cases, base, args.workers, args.keep)
    finally:
        if args.base is None and not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    print(table(summary))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    return 1 if any(summary["counts"][o] for o in BAD + ("error",)) else 0


if __name__ == "__main__":
    sys.exit(main())
