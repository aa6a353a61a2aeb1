"""The bad-input corpus of every task (issue 21): the case table, and the whole corpus through the CLI.

``tests/corpus/task_cases.py`` is the table, ``tests/corpus/run_task_corpus.py``
runs and judges it (``python tests/corpus/run_task_corpus.py --task detect``
for a part). The full run is slow (a fresh process per case, four tiny
trainings and exports): ``pytest -m slow tests/test_task_corpus.py``.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest

from tests.corpus import run_task_corpus as corpus
from tests.corpus import task_inputs as inp
from tests.corpus.task_cases import CASES, COMMANDS, Case

OUTCOMES = ("clear_error", "works")


def test_case_table_is_complete_and_well_formed():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), [i for i, n in Counter(ids).items() if n > 1]
    assert len(CASES) >= 120
    assert {c.task for c in CASES} == set(inp.TASKS)
    assert {c.command for c in CASES} >= set(COMMANDS)
    for task in inp.TASKS:  # every command for every task
        assert {c.command for c in CASES if c.task == task} >= set(COMMANDS), task
    for c in CASES:
        assert c.id.startswith(f"{c.task}.{c.command}.") and c.argv[0] == c.command, c.id
        assert c.outcome in OUTCOMES and c.exit and all(code in (0, 1, 2) for code in c.exit), c.id
        assert c.outcome == "works" or c.exit != (0,), c.id  # a clear error exits non-zero
        assert set(c.needs) <= {"run", "export"} and callable(c.build), c.id
        for template in (*c.argv, *c.keep, *(n for group in c.named for n in ([group] if isinstance(group, str)
                                                                             else group))):
            assert "{" not in inp.expand(template, Path("/t")), (c.id, template)
            if "{run}" in template or "{export}" in template:
                assert template.split("}")[0][1:] in c.needs, (c.id, template)
    # The finds, for every task they apply to.
    def having(fragment):
        return {c.task for c in CASES if fragment in c.id}
    assert having("export.out-is-the-run") == having("export.out-is-a-dataset") == set(inp.TASKS)
    assert having("truncated-best-keras") == having("truncated-variables") == set(inp.TASKS)
    assert having("draw-into-input-folder") == having("draw-same-stems") == set(inp.DRAW)
    assert having("fifo") == set(inp.TASKS) and having("nul-in") >= set(inp.BOX) | {"classification"}
    assert having("overflow") == set(inp.DRAW) and having("hostile-xml") == set(inp.BOX)


def test_builders_write_what_the_cases_name(tmp_path):
    """Every builder runs (FIFOs included) without opening a FIFO; kept paths exist before the command."""
    made = 0
    for c in CASES:
        if c.needs or c.command == "demo" or "172k" in c.id or "300k" in c.id or "deleted" in c.id:
            continue  # those need the trained artifacts or are big; the slow test builds them
        tmp = tmp_path / c.id
        tmp.mkdir()
        c.build(tmp)
        for template in c.keep:
            assert Path(inp.expand(template, tmp)).exists(), (c.id, template)
        made += 1
    assert made >= 60
    assert any(p.is_fifo() for p in tmp_path.rglob("*"))


def test_judge_classifies_each_outcome(tmp_path):
    case = Case("t.predict.x", "t", "predict", "x", inp.nothing, ("predict",), (1,), "clear_error",
                named=("{tmp}/a.png",))
    def judged(rc, output, killed=None, losses=()):
        return corpus.judge(case, tmp_path, {"rc": rc, "output": output, "killed": killed}, list(losses))[0]
    assert judged(1, f"{tmp_path}/a.png: ERROR empty file") == "clear_error"
    assert judged(1, "Traceback (most recent call last):\n  ...\nValueError: x") == "traceback"
    assert judged(-9, "") == "traceback"
    assert judged(0, f"{tmp_path}/a.png") == "silent_wrong"
    assert judged(1, "ERROR: some file") == "silent_wrong"  # the file is not named
    assert judged(None, "", killed="still running after 60 s") == "hang"
    assert judged(1, f"{tmp_path}/a.png", losses=["x vanished"]) == "loss"


def test_snapshot_sees_changes_and_never_opens_a_fifo(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("a")
    os.mkfifo(tmp_path / "d" / "f")
    before = {str(tmp_path / "d"): corpus.snapshot(tmp_path / "d")}
    assert corpus.lost(before) == []
    (tmp_path / "d" / "a.txt").write_text("b")
    (tmp_path / "d" / "f").unlink()
    assert sorted(corpus.lost(before)) == [f"{tmp_path}/d/a.txt changed", f"{tmp_path}/d/f vanished"]


@pytest.mark.slow  # tens of minutes on two CPU cores: ~200 fresh processes and four tiny trainings and exports
def test_task_corpus_has_no_tracebacks_hangs_silent_wrong_results_or_losses(tmp_path):
    summary = corpus.run_corpus(CASES, tmp_path, workers=2, say=lambda line: None)
    print(corpus.table(summary))
    if os.environ.get("TRANSFER_CORPUS_JSON"):  # where to keep every case's outcome (CI, a closing note)
        Path(os.environ["TRANSFER_CORPUS_JSON"]).write_text(json.dumps(summary, indent=1, default=str))
    bad = [f"{f['id']} ({f['outcome']}: {f['reason']})" for f in summary["failing"]]
    assert not bad, f"{len(bad)} failing case(s):\n" + "\n".join(bad)
