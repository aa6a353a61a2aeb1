"""The bad-input corpus of every task (issue 21): one row per case, judged by ``run_task_corpus.py``.

A case is data: its task, command, what it tries, a builder that writes its
inputs into a fresh tmp folder, the argv, and what must happen (exit codes,
the paths the output must name, the paths that must stay byte-identical, the
class of outcome the issue wants). FIFOs and big annotation files are made
at run time, never committed. ``{tmp}``, ``{run}`` and ``{export}`` in argv,
``named`` and ``keep`` are the case's folder and its copies of the task's
tiny trained run and export (``needs``).

Example:
    >>> from tests.corpus.task_cases import CASES
    >>> len({c.id for c in CASES}) == len(CASES)
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from tests.corpus import task_inputs as inp
from tests.corpus.task_inputs import BOX, DRAW, TASKS, src

COMMANDS = ("check-data", "train", "evaluate", "export", "predict")
TRAIN = ("--weights", "none", "--image-size", "32", "--recipe", "{tmp}/tiny.toml", "--backbone", "smallcnn")


@dataclass(frozen=True)
class Case:
    """One bad input through one command; ``run_task_corpus.judge`` says how it went."""

    id: str
    task: str  # classification, localize, detect, segment
    command: str  # check-data, train, evaluate, export, predict (demo: the --overwrite rule)
    what: str
    build: Callable[[Path], None]
    argv: tuple[str, ...]
    exit: tuple[int, ...]  # acceptable exit codes
    outcome: str  # what the issue wants: "clear_error" or "works"
    named: tuple = ()  # each: a path template, or a tuple of alternatives, the output must contain
    keep: tuple[str, ...] = ()  # path templates that must stay byte-identical (folders: every file in them)
    needs: tuple[str, ...] = ()  # "run", "export": the task's tiny artifacts copied into the case folder
    check: Optional[Callable[[Path, str, int], Optional[str]]] = None  # (tmp, output, rc) -> problem or None
    during: Optional[Callable[[Path], None]] = None  # runs in a thread while the command runs
    timeout: float = 120.0
    max_rss_mb: int = 4000


def _task_flag(task: str) -> tuple[str, ...]:
    return () if task == "classification" else ("--task", {"localize": "localize", "detect": "detect",
                                                            "segment": "segment"}[task])


def train_argv(task: str, data: str, *extra: str, out: str = "{tmp}/newrun") -> tuple[str, ...]:
    return ("train", *_task_flag(task), "--data", data, "--out", out, *TRAIN, *extra)


def cases() -> list[Case]:
    """The whole table (built fresh: builders are closures over their task)."""
    out: list[Case] = []

    def add(id, task, command, what, build, argv, exit, outcome, **kw):
        out.append(Case(f"{task}.{command}.{id}", task, command, what, build, tuple(argv), tuple(exit),
                        outcome, **kw))

    run_keep = ("{run}/run.json", "{run}/split.json", "{run}/checkpoints", "{run}/history.csv")
    for t in TASKS:
        data = src(t, "{tmp}/data")
        # 1. --overwrite replaces only transfer's own artifact of that kind.
        add("out-is-the-run", t, "export", "export RUN --out RUN --overwrite", inp.nothing,
            ("export", "{run}", "--out", "{run}", "--overwrite"), (2,), "clear_error",
            named=("{run}",), keep=run_keep, needs=("run",))
        add("out-is-a-dataset", t, "export", "export --out DATASET --overwrite", inp.data_of(t),
            ("export", "{run}", "--out", "{tmp}/data", "--overwrite"), (2,), "clear_error",
            named=("{tmp}/data",), keep=("{tmp}/data",), needs=("run",))
        add("out-is-an-ancestor", t, "export", "export --out PARENT_OF_RUN --overwrite", inp.notes("keep.txt"),
            ("export", "{run}", "--out", "{tmp}", "--overwrite"), (2,), "clear_error",
            named=("{tmp}",), keep=run_keep + ("{tmp}/keep.txt",), needs=("run",))
        add("out-holds-other-files", t, "export", "export --out FOLDER_OF_NOTES --overwrite",
            inp.notes("notes/a.txt"), ("export", "{run}", "--out", "{tmp}/notes", "--overwrite"), (2,),
            "clear_error", named=("{tmp}/notes",), keep=("{tmp}/notes",), needs=("run",))
        if t in ("detect", "segment"):  # the positive control (an export takes a minute): two tasks
            add("out-is-an-export", t, "export", "export --out EXISTING_EXPORT --overwrite replaces it", inp.nothing,
                ("export", "{run}", "--out", "{export}", "--overwrite"), (0,), "works", keep=run_keep,
                needs=("run", "export"), check=inp.exists("{export}/assets/transfer.json"), timeout=300)
        # 6. Corrupt artifacts are errors naming the file.
        add("truncated-best-keras", t, "export", "best.keras cut in half", inp.truncate("{run}/checkpoints/best.keras"),
            ("export", "{run}", "--out", "{tmp}/exp"), (2,), "clear_error", named=("best.keras",),
            needs=("run",), check=inp.absent("{tmp}/exp"))
        add("garbled-best-keras", t, "evaluate", "best.keras with garbled bytes",
            inp.garble("{run}/checkpoints/best.keras"), ("evaluate", "{run}"), (2,), "clear_error",
            named=("best.keras",), needs=("run",))
        add("garbled-resume-checkpoint", t, "train", "train --resume with a garbled epoch checkpoint",
            inp.garbled_resume, ("train", "--resume", "{run}"), (2,), "clear_error",
            named=("epoch-001.keras",), needs=("run",), timeout=180)
        add("truncated-variables", t, "predict", "export variables cut in half",
            inp.both(inp.photos(2), inp.truncate("{export}/variables/variables.data-00000-of-00001")),
            ("predict", "{export}", "{tmp}/photos/p0.png"), (1, 2), "clear_error", named=("variables",),
            needs=("export",))
        # Train's --out: never into data or a folder of other things.
        add("out-is-the-data", t, "train", "train --out DATA", inp.data_of(t),
            train_argv(t, data, out="{tmp}/data"), (2,), "clear_error",
            named=("{tmp}/data",), keep=("{tmp}/data",))
        if t in ("classification", "segment"):
            add("out-holds-other-files", t, "train", "train --out FOLDER_OF_NOTES", inp.both(inp.data_of(t),
            inp.notes("notes/a.txt")), train_argv(t, data, out="{tmp}/notes"),
                (2,), "clear_error", named=("{tmp}/notes",), keep=("{tmp}/notes",))
        # 5. evaluate --data OTHER: its own folder, the run's evaluation kept, the data recorded.
        add("data-other", t, "evaluate", "evaluate --data OTHER keeps the run's own evaluation",
            inp.other_data(t), ("evaluate", "{run}", "--data", src(t, "{tmp}/other")), (0,), "works",
            keep=("{run}/evaluation",), needs=("run",), check=inp.records_other(src(t, "{tmp}/other")),
            timeout=180)
        add("data-unknown-class", t, "evaluate", "evaluate --data OTHER with a class the run lacks",
            inp.other_data(t, extra_class=True), ("evaluate", "{run}", "--data", src(t, "{tmp}/other")), (2,),
            "clear_error", named=(("{tmp}/other", "zebra"),), keep=("{run}/evaluation",), needs=("run",))
        # Predict: a FIFO, an empty file among good ones (per file, exit 1).
        add("fifo-input", t, "predict", "a FIFO among the images", inp.both(inp.photos(1), inp.fifo("photos/f.png")),
            ("predict", "{export}", "{tmp}/photos/p0.png", "{tmp}/photos/f.png"), (1,), "clear_error",
            named=("{tmp}/photos/f.png",), needs=("export",), timeout=90)
        add("empty-input", t, "predict", "a 0-byte image among the images",
            inp.both(inp.photos(1), inp.empty("photos/e.png")),
            ("predict", "{export}", "{tmp}/photos/p0.png", "{tmp}/photos/e.png"), (1,), "clear_error",
            named=("{tmp}/photos/e.png",), needs=("export",), check=inp.says("empty"))

    # 2. predict --draw / --out never write over inputs or over each other.
    for t in DRAW:
        add("draw-into-input-folder", t, "predict", "predict photos/ --draw photos/", inp.photos(2),
            ("predict", "{export}", "{tmp}/photos", "--draw", "{tmp}/photos"), (2,), "clear_error",
            named=("{tmp}/photos",), keep=("{tmp}/photos",), needs=("export",), check=inp.no_new("photos"))
        if t == "segment":
            add("draw-into-folder-of-an-input", t, "predict", "predict photos/p0.png --draw photos/", inp.photos(2),
                ("predict", "{export}", "{tmp}/photos/p0.png", "--draw", "{tmp}/photos"), (2,), "clear_error",
                named=("{tmp}/photos",), keep=("{tmp}/photos",), needs=("export",), check=inp.no_new("photos"))
        add("draw-keeps-existing-file", t, "predict", "--draw DIR already holding p0.png",
            inp.both(inp.photos(1), inp.notes("drawn/p0.png")),
            ("predict", "{export}", "{tmp}/photos/p0.png", "--draw", "{tmp}/drawn"), (0, 1, 2), "works",
            keep=("{tmp}/drawn/p0.png", "{tmp}/photos"), needs=("export",))
        add("draw-same-stems", t, "predict", "a/x.png b/x.png --draw: two drawings", inp.same_stems,
            ("predict", "{export}", "{tmp}/a/x.png", "{tmp}/b/x.png", "--draw", "{tmp}/drawn", "--json"), (0,),
            "works", keep=("{tmp}/a", "{tmp}/b"), needs=("export",), check=inp.distinct_outputs("drawn", 2))
        if t == "localize":  # the same loop for every task; 300 images take a while
            add("draw-file-deleted-mid-run", t, "predict", "300 images, one deleted while drawing",
                inp.photos(300, size=24), ("predict", "{export}", "{tmp}/photos", "--draw", "{tmp}/drawn"), (1,),
                "clear_error", named=("p299.png",), needs=("export",),
                during=inp.delete_when("drawn", "photos/p299.png"), check=inp.answered(299), timeout=240)
    add("out-into-input-folder", "segment", "predict", "predict photos/ --out photos/", inp.photos(2),
        ("predict", "{export}", "{tmp}/photos", "--out", "{tmp}/photos"), (2,), "clear_error",
        named=("{tmp}/photos",), keep=("{tmp}/photos",), needs=("export",), check=inp.no_new("photos"))
    add("out-is-draw", "segment", "predict", "--out D --draw D: mask and drawing would share a name",
        inp.photos(2), ("predict", "{export}", "{tmp}/photos", "--out", "{tmp}/d", "--draw", "{tmp}/d", "--json"),
        (0, 2), "works", keep=("{tmp}/photos",), needs=("export",), check=inp.distinct_outputs("d", 4, rc0=True))
    add("out-keeps-existing-file", "segment", "predict", "--out DIR already holding p0.png",
        inp.both(inp.photos(1), inp.notes("masks/p0.png")),
        ("predict", "{export}", "{tmp}/photos/p0.png", "--out", "{tmp}/masks"), (0, 1, 2), "works",
        keep=("{tmp}/masks/p0.png",), needs=("export",))
    add("out-stems-collide", "segment", "predict", "a.jpg a.png a-2.png --out: JSON names each file's own mask",
        inp.colliding_stems, ("predict", "{export}", "{tmp}/in/a.jpg", "{tmp}/in/a.png", "{tmp}/in/a-2.png",
                              "--out", "{tmp}/masks", "--json"), (0,), "works", keep=("{tmp}/in",),
        needs=("export",), check=inp.masks_match_inputs)
    add("draw-on-classification", "classification", "predict", "--draw on a classification export", inp.photos(1),
        ("predict", "{export}", "{tmp}/photos/p0.png", "--draw", "{tmp}/photos"), (2,), "clear_error",
        named=("--draw",), keep=("{tmp}/photos",), needs=("export",))

    # 1. demo --overwrite: only a demo folder.
    for id, target, keep in (("out-is-a-dataset", "{tmp}/data", ("{tmp}/data",)),):
        add(id, "classification", "demo", f"demo --out {id[7:]} --overwrite", inp.data_of("classification"),
            ("demo", "--out", target, "--overwrite", "--weights", "none"), (2,), "clear_error", named=(target,),
            keep=keep, timeout=150)

    out += box_cases() + mask_cases() + classification_cases()
    return out


def box_cases() -> list[Case]:
    """3. and 4. for box sources (CSV, VOC, COCO), check-data and train, localize and detect.

    check-data reads a box source the same way whatever the task, so each source case is checked
    once (under the task named first) and trained for the tasks listed.
    """
    out: list[Case] = []
    csv, voc, coco = "{tmp}/data/boxes.csv", "{tmp}/data", "{tmp}/data/annotations.json"
    L, D, LD = ("localize",), ("detect",), ("localize", "detect")

    def source(id, what, builder, data, named, checks, trains, *, check_exit=(1,), train_exit=(0, 2), check=None,
               outcome="clear_error", train_named=None):
        for t in checks:
            out.append(Case(f"{t}.check-data.{id}", t, "check-data", what, builder(t), ("check-data", data),
                            check_exit, outcome, named=named, keep=("{tmp}/data",), check=check, timeout=90))
        for t in trains:
            out.append(Case(f"{t}.train.{id}", t, "train", what, builder(t), train_argv(t, data), train_exit,
                            outcome, named=named if train_named is None else train_named, keep=("{tmp}/data",),
                            check=check, timeout=180))

    source("fifo-image-in-csv", "a FIFO named in the box CSV", lambda t: inp.box_csv(t, fifo="f.png"), csv,
           ("f.png",), L, LD)
    source("fifo-csv", "the box CSV is a FIFO", lambda t: inp.fifo("data/boxes.csv"), csv, ("boxes.csv",), L, D,
           check_exit=(2,), train_exit=(2,))
    source("fifo-image-in-voc", "a FIFO image in a VOC folder", lambda t: inp.voc(t, fifo_image=True), voc,
           ("f.png",), D, L)
    source("fifo-xml-in-voc", "a FIFO annotation in a VOC folder", lambda t: inp.voc(t, fifo_xml=True), voc,
           ("f.xml",), D, D, check_exit=(1, 2))
    source("fifo-image-in-coco", "a FIFO image in a COCO file", lambda t: inp.coco(t, fifo="f.png"), coco,
           ("f.png",), L, D)
    source("fifo-coco-json", "the COCO file is a FIFO", lambda t: inp.fifo("data/annotations.json"), coco,
           ("annotations.json",), D, (), check_exit=(2,))
    source("nul-in-csv-name", "a NUL byte in a CSV file name", lambda t: inp.box_csv(t, nul=True), csv,
           ("boxes.csv",), L, LD, check_exit=(1, 2))
    source("nul-in-coco-name", "a NUL byte in a COCO file_name", lambda t: inp.coco(t, nul=True), coco,
           ("annotations.json",), D, L, check_exit=(1, 2))
    source("coco-overflow-bbox", "a 400-digit integer in a COCO bbox", lambda t: inp.coco(t, overflow="bbox"),
           coco, ("annotations.json",), D, LD, check_exit=(1, 2), train_exit=(2,))
    source("coco-overflow-width", "a 400-digit integer as a COCO width", lambda t: inp.coco(t, overflow="width"),
           coco, ("annotations.json",), L, D, check_exit=(1, 2))
    source("hostile-xml-among-bad", "entity-bomb and external-entity XML with a garbage image",
           lambda t: inp.voc(t, hostile=True), voc, ("bomb.xml", "external.xml", "garbage.png"), D, L,
           train_exit=(2,), train_named=(("bomb.xml", "external.xml"),))  # train stops at the first stop
    source("csv-missing-ymax", "a box CSV without its ymax column", lambda t: inp.box_csv(t, drop="ymax"), csv,
           ("boxes.csv",), L, D, check_exit=(2,), train_exit=(2,), check=inp.task_words("ymax"))
    source("missing-imagesets-list", "a VOC list that is not there", lambda t: inp.voc(t, imagesets=True),
           "{tmp}/data/ImageSets/Main/test.txt", ("test.txt",), D, L, check_exit=(2,), train_exit=(2,),
           check=inp.task_words(None))
    source("empty-image-in-csv", "a 0-byte image named in the box CSV", lambda t: inp.box_csv(t, empty="e.png"),
           csv, ("e.png",), L, D, check=inp.says("empty"))
    source("val-without-boxes", "a VOC val/ whose images hold no box (nothing to score)", inp.voc_empty_val, voc,
           ("v0.png",), D, D, train_exit=(2,), train_named=("{tmp}/data",))
    source("exif-rotated-photos", "phone photos (EXIF 6) annotated on the displayed image",
           lambda t: inp.box_csv(t, exif=True), csv, (), L, L, check_exit=(0, 1), train_exit=(0,),
           check=inp.exif_boxes_kept, outcome="works")
    for t in BOX:
        out.append(Case(f"{t}.check-data.voc-parent-of-train-val", t, "check-data", "a parent of VOC train/ and val/",
                        inp.voc_parent(t), ("check-data", "{tmp}/data", "--json"), (0, 1), "works",
                        keep=("{tmp}/data",), check=inp.checked_images(8)))
        out.append(Case(f"{t}.train.wrong-task-class-folders", t, "train", "box task on class folders",
                        inp.data_of("classification"), train_argv(t, "{tmp}/data"), (2,), "clear_error",
                        named=("{tmp}/data",), keep=("{tmp}/data",), check=inp.task_words("box")))
    # 3. Bounded memory whatever the annotation count.
    out.append(Case("detect.check-data.voc-172k-boxes", "detect", "check-data", "one image with 172k boxes (20 MB XML)",
                    inp.many_boxes_voc(172_000), ("check-data", "{tmp}/data"), (1, 2), "clear_error",
                    named=(("many.xml", "many.png"),), keep=("{tmp}/data",), timeout=180, max_rss_mb=3000))
    out.append(Case("localize.check-data.voc-6000-boxes", "localize", "check-data", "one image with 6,000 boxes",
                    inp.many_boxes_voc(6000), ("check-data", "{tmp}/data"), (0, 1, 2), "works",
                    keep=("{tmp}/data",), timeout=120, max_rss_mb=1500))
    out.append(Case("detect.train.voc-6000-boxes", "detect", "train", "train on one image with 6,000 boxes",
                    inp.many_boxes_voc(6000, extra=4), train_argv("detect", "{tmp}/data"), (0, 2), "works",
                    keep=("{tmp}/data",), timeout=240, max_rss_mb=3000))
    out.append(Case("detect.check-data.coco-300k-annotations", "detect", "check-data", "a COCO file with 300k boxes",
                    inp.many_boxes_coco(300_000), ("check-data", "{tmp}/data/annotations.json"), (0, 1, 2), "works",
                    keep=("{tmp}/data",), timeout=240, max_rss_mb=3000))
    out.append(Case("segment.train.wrong-task-box-csv", "segment", "train", "segment on a box CSV",
                    inp.box_csv("detect"), train_argv("segment", "{tmp}/data/boxes.csv"), (2,), "clear_error",
                    named=("boxes.csv",), keep=("{tmp}/data",), check=inp.task_words("mask")))
    out.append(Case("localize.train.wrong-task-mask-folder", "localize", "train", "localize on a mask folder",
                    inp.data_of("segment"), train_argv("localize", "{tmp}/data"), (2,), "clear_error",
                    named=("{tmp}/data",), keep=("{tmp}/data",), check=inp.task_words("box")))
    return out


def mask_cases() -> list[Case]:
    """3. and 4. for mask sources (folders, COCO polygons), check-data and train."""
    out: list[Case] = []
    t, folder, coco = "segment", "{tmp}/data", "{tmp}/data/annotations.json"

    def pair(id, what, build, data, named, *, check_exit=(1,), train_exit=(0, 2), check=None, train_check=None,
             extra=(), timeout=90, outcome="clear_error", train=True):
        out.append(Case(f"{t}.check-data.{id}", t, "check-data", what, build, ("check-data", data, *extra),
                        check_exit, outcome, named=named, keep=("{tmp}/data",), check=check, timeout=timeout))
        if train:
            out.append(Case(f"{t}.train.{id}", t, "train", what, build, train_argv(t, data, *extra), train_exit,
                            outcome, named=named, keep=("{tmp}/data",), check=train_check or check,
                            timeout=max(timeout, 180)))

    pair("fifo-image", "a FIFO in images/", inp.mask_folder(fifo="images/img1.png"), folder, ("img1.png",))
    pair("fifo-mask", "a FIFO in masks/", inp.mask_folder(fifo="masks/img1.png"), folder, ("img1.png",), train=False)
    pair("fifo-classes-txt", "classes.txt is a FIFO", inp.mask_folder(fifo="classes.txt"), folder,
         ("classes.txt",), check_exit=(1, 2), train_exit=(2,))
    pair("fifo-coco-json", "the COCO polygon file is a FIFO", inp.fifo("data/annotations.json"), coco,
         ("annotations.json",), check_exit=(2,), train_exit=(2,), train=False)
    pair("empty-mask", "a 0-byte mask", inp.mask_folder(empty="masks/img1.png"), folder, ("img1.png",),
         check=inp.says("empty"), train=False)
    pair("value-outside-classes-unscanned", "value 9 in masks the sample scan skips (3 classes, 200 masks)",
         inp.mask_folder(count=200, bad_values={1: 9, 2: 9}), folder, ("img1.png", "img2.png"),
         train_exit=(2,), train_check=inp.no_half_run)
    pair("value-outside-classes-val", "value 7 in one validation mask", inp.mask_split(bad_val=7),
         folder, ("img101.png",), train_exit=(2,), train_check=inp.no_half_run)
    pair("all-ignore-masks", "every mask entirely the ignored value", inp.mask_folder(all_value=3), folder,
         (), check_exit=(1, 2), train_exit=(0, 2), extra=("--ignore-index", "3"), check=inp.nothing_to_score)
    out.append(Case(f"{t}.train.all-ignore-val", t, "train", "validation masks entirely the ignored value",
                    inp.mask_split(val_all=3), train_argv(t, folder, "--ignore-index", "3"), (0, 2), "clear_error",
                    keep=("{tmp}/data",), check=inp.nothing_to_score, timeout=180))
    # Garbled polygons leave their image out (named, as a bad image is): train goes on without it.
    pair("coco-bad-polygons", "odd-length, text and far-outside polygons", inp.coco_masks(bad="polygons"), coco,
         ("annotations.json",), check_exit=(1, 2), train_exit=(0, 2))
    pair("coco-overflow-polygon", "a 400-digit coordinate in a polygon", inp.coco_masks(bad="overflow"), coco,
         ("annotations.json",), check_exit=(1, 2), train_exit=(2,), train=False)
    pair("coco-nul-name", "a NUL byte in a COCO file_name", inp.coco_masks(bad="nul"), coco,
         ("annotations.json",), check_exit=(1, 2), train_exit=(2,), train=False)
    pair("exif-rotated-photos", "EXIF-6 photos with masks drawn on the displayed image", inp.mask_folder(exif=True),
         folder, (), check_exit=(0, 1), train_exit=(0, 2), check=inp.exif_masks_kept, outcome="works")
    out.append(Case(f"{t}.evaluate.data-swapped-classes", t, "evaluate", "evaluate --data OTHER whose classes.txt "
                    "swaps two names", inp.other_data(t, swapped=True), ("evaluate", "{run}", "--data", "{tmp}/other"),
                    (0, 2), "clear_error", named=("{tmp}/other",), keep=("{run}/evaluation",), needs=("run",),
                    check=inp.swapped_named, timeout=180))
    out.append(Case(f"{t}.check-data.ignore-index-300", t, "check-data",
                    "--ignore-index 300: check-data and train agree", inp.mask_folder(),
                    ("check-data", folder, "--ignore-index", "300"), (0, 1, 2), "clear_error",
                    keep=("{tmp}/data",), check=inp.ignore_index_agrees))
    return out


def classification_cases() -> list[Case]:
    """The finds that apply to classification's path too."""
    out: list[Case] = []
    t = "classification"
    for id, what, build, data, named, check_exit, train_exit in (
        ("fifo-image-in-folder", "a FIFO in a class folder", inp.class_folder(fifo="cat/f.jpg"), "{tmp}/data",
         ("f.jpg",), (1,), (0,)),
        ("fifo-image-in-csv", "a FIFO named in a path,label CSV", inp.class_csv(fifo=True), "{tmp}/data/labels.csv",
         ("f.jpg",), (1,), (0, 2)),
        ("fifo-csv", "the CSV is a FIFO", inp.fifo("data/labels.csv"), "{tmp}/data/labels.csv", ("labels.csv",),
         (2,), (2,)),
        ("nul-in-csv-name", "a NUL byte in a CSV path", inp.class_csv(nul=True), "{tmp}/data/labels.csv",
         ("labels.csv",), (1, 2), (2,)),
    ):
        out.append(Case(f"{t}.check-data.{id}", t, "check-data", what, build, ("check-data", data), check_exit,
                        "clear_error", named=named, keep=("{tmp}/data",), timeout=90))
        out.append(Case(f"{t}.train.{id}", t, "train", what, build, train_argv(t, data), train_exit,
                        "works" if train_exit == (0,) else "clear_error",
                        named=named, keep=("{tmp}/data",), timeout=180))
    return out


CASES: list[Case] = cases()
