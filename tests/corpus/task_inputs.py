"""What the cases of ``task_cases.py`` are made of: input builders and outcome checks.

A builder takes the case's tmp folder and writes its inputs (small generated
images, box CSV / VOC XML / COCO JSON, mask folders; FIFOs with ``os.mkfifo``).
A check takes ``(tmp, output, exit code)`` and returns what went wrong, or
None. Paths in templates: ``{tmp}``, ``{run}`` (tmp/run), ``{export}``
(tmp/export), see ``expand``.

Example:
    >>> box_csv("detect", fifo="f.png")(tmp)   # tmp/data/img0..5.png, tmp/data/f.png (a FIFO), boxes.csv
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from tests.imagefactory import write_image, write_image_folder
from tests.segmentfactory import write_mask_folder

TASKS = ("classification", "localize", "detect", "segment")
BOX = ("localize", "detect")
DRAW = ("localize", "detect", "segment")
SIZE = (48, 40)  # box images, (width, height)
BIG = 10 ** 400  # overflows a float and a C integer


def expand(template: str, tmp: Path) -> str:
    return template.replace("{run}", str(tmp / "run")).replace("{export}", str(tmp / "export")).replace(
        "{tmp}", str(tmp))


def src(task: str, root: str) -> str:
    """The --data argument for a task's usual source written at ``root`` (see ``data_of``)."""
    return f"{root}/boxes.csv" if task in BOX else root


# --- builders -------------------------------------------------------------------------------------

def nothing(tmp: Path) -> None:
    pass


def both(*builders):
    def build(tmp: Path) -> None:
        for b in builders:
            b(tmp)
    return build


def notes(rel: str):
    def build(tmp: Path) -> None:
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_bytes(b"the user's own file, not transfer's\n")
    return build


def fifo(rel: str):
    def build(tmp: Path) -> None:
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        if (tmp / rel).exists():
            (tmp / rel).unlink()
        os.mkfifo(tmp / rel)
    return build


def empty(rel: str):
    def build(tmp: Path) -> None:
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_bytes(b"")
    return build


def truncate(template: str):
    def build(tmp: Path) -> None:
        path = Path(expand(template, tmp))
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return build


def garble(template: str):
    def build(tmp: Path) -> None:
        path = Path(expand(template, tmp))
        data = bytearray(path.read_bytes())
        for k in range(len(data) // 4, len(data) * 3 // 4, 7):
            data[k] ^= 0xA5
        path.write_bytes(bytes(data))
    return build


def garbled_resume(tmp: Path) -> None:
    """The copied run as if killed after its first epoch, whose resumable checkpoint is garbled."""
    run = tmp / "run"
    config = json.loads((run / "run.json").read_text())
    config["status"] = "interrupted"
    (run / "run.json").write_text(json.dumps(config))
    (run / "checkpoints" / "epoch-001.keras").write_bytes((run / "checkpoints" / "best.keras").read_bytes())
    garble("{run}/checkpoints/epoch-001.keras")(tmp)
    state = {"stage_index": 0, "stage_epochs_done": 0, "epoch": 1, "best_value": "-inf", "best_epoch": 1,
             "checkpoint": "epoch-001.keras", "history": []}
    (run / "checkpoints" / "state.json").write_text(json.dumps(state))


def photos(count: int, size: int = 32, folder: str = "photos"):
    def build(tmp: Path) -> None:
        for i in range(count):
            write_image(tmp / folder / f"p{i}.png", i % 3, i, size)
    return build


def same_stems(tmp: Path) -> None:
    write_image(tmp / "a" / "x.png", 0, 0, (40, 30))
    write_image(tmp / "b" / "x.png", 1, 1, (30, 44))


def colliding_stems(tmp: Path) -> None:
    write_image(tmp / "in" / "a.jpg", 0, 0, (40, 30))
    write_image(tmp / "in" / "a.png", 1, 1, (50, 20))
    write_image(tmp / "in" / "a-2.png", 2, 2, (24, 36))


def box_image(index: int, count: int = 1, size=SIZE) -> tuple[np.ndarray, list]:
    """Dark pixels with ``count`` bright rectangles; their (class, xmin, ymin, xmax, ymax)."""
    rng = np.random.default_rng(index)
    pixels = np.full((size[1], size[0], 3), 20, np.uint8)
    boxes = []
    for k in range(count):
        w, h = rng.integers(size[0] // 4, size[0] // 2), rng.integers(size[1] // 4, size[1] // 2)
        x, y = int(rng.integers(0, size[0] - w)), int(rng.integers(0, size[1] - h))
        name = ("red", "blue")[(index + k) % 2]
        pixels[y:y + h, x:x + w] = (230, 40, 40) if name == "red" else (40, 40, 230)
        boxes.append((name, x, y, x + int(w), y + int(h)))
    return pixels, boxes


def _boxes_per_image(task: str, i: int) -> int:
    return 1 if task == "localize" else 1 + i % 2


def box_csv(task: str, *, count: int = 6, fifo: str | None = None, nul: bool = False, drop: str | None = None,
            empty: str | None = None, exif: bool = False, root: str = "data", classes=("red", "blue")):
    """``tmp/root/imgN.png`` and ``boxes.csv`` (filename,width,height,class,xmin,ymin,xmax,ymax)."""
    def build(tmp: Path) -> None:
        folder = tmp / root
        folder.mkdir(parents=True, exist_ok=True)
        rows = []
        for i in range(count):
            pixels, boxes = box_image(i, _boxes_per_image(task, i))
            if exif:  # annotated on the displayed (upright) image, stored turned a quarter left (EXIF 6)
                pixels, boxes = box_image(i, _boxes_per_image(task, i), size=(SIZE[1], SIZE[0]))
                stored = Image.fromarray(pixels).transpose(Image.Transpose.ROTATE_90)
                exif_data = Image.Exif()
                exif_data[0x0112] = 6
                stored.save(folder / f"img{i}.jpg", quality=95, exif=exif_data)
                rows += [(f"img{i}.jpg", SIZE[1], SIZE[0], *b) for b in boxes]
                continue
            Image.fromarray(pixels).save(folder / f"img{i}.png")
            name = classes[i % len(classes)]
            rows += [(f"img{i}.png", *SIZE, name if len(boxes) == 1 else b[0], *b[1:]) for b in boxes]
        if fifo:
            os.mkfifo(folder / fifo)
            rows.append((fifo, *SIZE, "red", 5, 5, 20, 20))
        if empty:
            (folder / empty).write_bytes(b"")
            rows.append((empty, *SIZE, "red", 5, 5, 20, 20))
        if nul:
            rows.append(("bad\x00name.png", *SIZE, "red", 5, 5, 20, 20))
        header = ["filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax"]
        keep = [i for i, h in enumerate(header) if h != drop]
        lines = [",".join(header[i] for i in keep)] + [",".join(str(r[i]) for i in keep) for r in rows]
        (folder / "boxes.csv").write_text("\n".join(lines) + "\n")
    return build


def _voc_xml(filename: str, boxes, size=SIZE) -> str:
    objects = "".join(f"<object><name>{n}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax>"
                      f"<ymax>{d}</ymax></bndbox></object>" for n, a, b, c, d in boxes)
    return (f"<annotation><filename>{filename}</filename><size><width>{size[0]}</width><height>{size[1]}</height>"
            f"<depth>3</depth></size>{objects}</annotation>")


BOMB_XML = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">'
            '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;">]><annotation><filename>&lol3;</filename></annotation>')
EXTERNAL_XML = ('<?xml version="1.0"?><!DOCTYPE a [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
                '<annotation><filename>&xxe;</filename></annotation>')


def voc(task: str, *, count: int = 6, fifo_image=False, fifo_xml=False, hostile=False, imagesets=False,
        root: str = "data", start: int = 0):
    """``tmp/root/images/`` + ``annotations/`` (or JPEGImages/ + Annotations/ + ImageSets/Main/train.txt)."""
    def build(tmp: Path) -> None:
        images = tmp / root / ("JPEGImages" if imagesets else "images")
        notes_dir = tmp / root / ("Annotations" if imagesets else "annotations")
        images.mkdir(parents=True, exist_ok=True)
        notes_dir.mkdir(parents=True, exist_ok=True)
        for i in range(start, start + count):
            pixels, boxes = box_image(i, _boxes_per_image(task, i))
            Image.fromarray(pixels).save(images / f"img{i}.png")
            (notes_dir / f"img{i}.xml").write_text(_voc_xml(f"img{i}.png", boxes))
        if fifo_image:
            os.mkfifo(images / "f.png")
            (notes_dir / "f.xml").write_text(_voc_xml("f.png", [("red", 5, 5, 20, 20)]))
        if fifo_xml:
            Image.fromarray(box_image(99)[0]).save(images / "f.png")
            os.mkfifo(notes_dir / "f.xml")
        if hostile:
            (notes_dir / "bomb.xml").write_text(BOMB_XML)
            (notes_dir / "external.xml").write_text(EXTERNAL_XML)
            (images / "garbage.png").write_bytes(np.random.default_rng(0).bytes(3000))
            (notes_dir / "garbage.xml").write_text(_voc_xml("garbage.png", [("red", 5, 5, 20, 20)]))
        if imagesets:
            lists = tmp / root / "ImageSets" / "Main"
            lists.mkdir(parents=True, exist_ok=True)
            (lists / "train.txt").write_text("".join(f"img{i}\n" for i in range(start, start + count)))
    return build


def voc_parent(task: str):
    return both(voc(task, count=6, root="data/train"), voc(task, count=2, root="data/val", start=50))


def voc_empty_val(task: str):
    """VOC ``train/`` with boxes and a ``val/`` whose two images hold none (nothing to score)."""
    def build(tmp: Path) -> None:
        voc(task, count=6, root="data/train")(tmp)
        images, notes_dir = tmp / "data" / "val" / "images", tmp / "data" / "val" / "annotations"
        images.mkdir(parents=True)
        notes_dir.mkdir(parents=True)
        for i in range(2):
            Image.fromarray(box_image(60 + i)[0]).save(images / f"v{i}.png")
            (notes_dir / f"v{i}.xml").write_text(_voc_xml(f"v{i}.png", []))
    return build


def many_boxes_voc(count: int, extra: int = 0):
    """One 64x64 image with ``count`` boxes in one XML (plus ``extra`` ordinary images)."""
    def build(tmp: Path) -> None:
        images, notes_dir = tmp / "data" / "images", tmp / "data" / "annotations"
        voc("detect", count=extra)(tmp) if extra else (images.mkdir(parents=True), notes_dir.mkdir(parents=True))
        Image.fromarray(box_image(7, 3, size=(64, 64))[0]).save(images / "many.png")
        rng = np.random.default_rng(1)
        xy = rng.integers(0, 48, (count, 2))
        wh = rng.integers(4, 16, (count, 2))
        boxes = [("red", x, y, x + w, y + h) for (x, y), (w, h) in zip(xy.tolist(), wh.tolist())]
        (notes_dir / "many.xml").write_text(_voc_xml("many.png", boxes, size=(64, 64)))
    return build


def coco(task: str, *, count: int = 6, fifo: str | None = None, nul=False, overflow: str | None = None):
    """``tmp/data/images/imgN.png`` and ``annotations.json`` (COCO boxes)."""
    def build(tmp: Path) -> None:
        images = tmp / "data" / "images"
        images.mkdir(parents=True, exist_ok=True)
        doc = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "red"}, {"id": 2, "name": "blue"}]}
        for i in range(count):
            pixels, boxes = box_image(i, _boxes_per_image(task, i))
            Image.fromarray(pixels).save(images / f"img{i}.png")
            doc["images"].append({"id": i, "file_name": f"img{i}.png", "width": SIZE[0], "height": SIZE[1]})
            for n, a, b, c, d in boxes:
                doc["annotations"].append({"id": len(doc["annotations"]) + 1, "image_id": i,
                                           "category_id": 1 if n == "red" else 2, "bbox": [a, b, c - a, d - b],
                                           "area": (c - a) * (d - b), "iscrowd": 0})
        extra = None
        if fifo:
            os.mkfifo(images / fifo)
            extra = fifo
        if nul:
            extra = "bad\x00name.png"
        if extra:
            doc["images"].append({"id": 100, "file_name": extra, "width": SIZE[0], "height": SIZE[1]})
            doc["annotations"].append({"id": 1000, "image_id": 100, "category_id": 1, "bbox": [5, 5, 10, 10],
                                       "area": 100, "iscrowd": 0})
        if overflow == "bbox":
            doc["annotations"][0]["bbox"][0] = BIG
        if overflow == "width":
            doc["images"][0]["width"] = BIG
        (tmp / "data" / "annotations.json").write_text(json.dumps(doc))
    return build


def many_boxes_coco(count: int, images: int = 10):
    def build(tmp: Path) -> None:
        folder = tmp / "data" / "images"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(images):
            Image.fromarray(box_image(i, 2, size=(64, 64))[0]).save(folder / f"img{i}.png")
        rng = np.random.default_rng(2)
        xy, wh = rng.integers(0, 48, (count, 2)).tolist(), rng.integers(4, 16, (count, 2)).tolist()
        annotations = ",".join(f'{{"id":{k + 1},"image_id":{k % images},"category_id":1,"bbox":[{x},{y},{w},{h}],'
                               f'"area":{w * h},"iscrowd":0}}' for k, ((x, y), (w, h)) in enumerate(zip(xy, wh)))
        listed = ",".join(f'{{"id":{i},"file_name":"img{i}.png","width":64,"height":64}}' for i in range(images))
        (tmp / "data" / "annotations.json").write_text(
            f'{{"images":[{listed}],"annotations":[{annotations}],"categories":[{{"id":1,"name":"red"}}]}}')
    return build


def mask_folder(count: int = 8, *, fifo: str | None = None, empty: str | None = None, bad_values=None,
                all_value: int | None = None, exif=False, root: str = "data", start: int = 0, size=(32, 32)):
    """``tmp/root/images/imgN.png`` + ``masks/imgN.png`` + ``classes.txt`` (background, red, blue)."""
    def build(tmp: Path) -> None:
        folder = write_mask_folder(tmp / root, count, size=(32, 24) if exif else size, start=start)
        for i, value in (bad_values or {}).items():
            path = folder / "masks" / f"img{start + i}.png"
            mask = np.array(Image.open(path))
            mask[:4, :4] = value
            Image.fromarray(mask).save(path)
        if all_value is not None:
            for path in (folder / "masks").glob("*.png"):
                mask = np.array(Image.open(path))
                Image.fromarray(np.full_like(mask, all_value)).save(path)
        if exif:  # each image stored turned a quarter left, EXIF 6 says so; the masks are of the upright view
            for path in sorted((folder / "images").glob("*.png")):
                exif_data = Image.Exif()
                exif_data[0x0112] = 6
                Image.open(path).transpose(Image.Transpose.ROTATE_90).save(path.with_suffix(".jpg"), quality=95,
                                                                          exif=exif_data)
                path.unlink()
        if fifo:
            target = folder / fifo
            if target.exists():
                target.unlink()
            os.mkfifo(target)
        if empty:
            (folder / empty).write_bytes(b"")
    return build


def mask_split(*, bad_val: int | None = None, val_all: int | None = None):
    return both(mask_folder(8, root="data/train"),
                mask_folder(3, root="data/val", start=100, bad_values={1: bad_val} if bad_val is not None else None,
                            all_value=val_all))


def coco_masks(*, bad: str | None = None, count: int = 6):
    """``tmp/data/images/imgN.png`` + ``annotations.json`` with polygon ``segmentation`` (and ``bbox``)."""
    def build(tmp: Path) -> None:
        images = tmp / "data" / "images"
        images.mkdir(parents=True, exist_ok=True)
        doc = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "red"}, {"id": 2, "name": "blue"}]}
        for i in range(count):
            pixels, boxes = box_image(i, 2)
            Image.fromarray(pixels).save(images / f"img{i}.png")
            doc["images"].append({"id": i, "file_name": f"img{i}.png", "width": SIZE[0], "height": SIZE[1]})
            for n, a, b, c, d in boxes:
                doc["annotations"].append({"id": len(doc["annotations"]) + 1, "image_id": i,
                                           "category_id": 1 if n == "red" else 2, "bbox": [a, b, c - a, d - b],
                                           "segmentation": [[a, b, c, b, c, d, a, d]], "area": (c - a) * (d - b),
                                           "iscrowd": 0})
        first = doc["annotations"]
        if bad == "polygons":
            first[0]["segmentation"] = [[1, 2, 3, 4, 5]]
            first[1]["segmentation"] = [["a", "b", "c", "d", "e", "f"]]
            first[2]["segmentation"] = [[1000, 1000, 1010, 1000, 1010, 1010]]
        if bad == "overflow":
            first[0]["segmentation"] = [[BIG, 2, 30, 2, 30, 20]]
        if bad == "nul":
            doc["images"][0]["file_name"] = "img\x000.png"
        (tmp / "data" / "annotations.json").write_text(json.dumps(doc))
    return build


def class_folder(*, fifo: str | None = None, root: str = "data", extra_class: bool = False):
    def build(tmp: Path) -> None:
        counts = {"cat": 5, "dog": 5, **({"zebra": 2} if extra_class else {})}
        write_image_folder(tmp / root, counts, size=32)
        if fifo:
            os.mkfifo(tmp / root / fifo)
    return build


def class_csv(*, fifo=False, nul=False):
    def build(tmp: Path) -> None:
        paths = write_image_folder(tmp / "data" / "images", {"cat": 5, "dog": 5}, size=32)
        rows = [f"{p.relative_to(tmp / 'data')},{p.parent.name}" for p in paths]
        if fifo:
            os.mkfifo(tmp / "data" / "images" / "f.jpg")
            rows.append("images/f.jpg,cat")
        if nul:
            rows.append("images/bad\x00name.jpg,cat")
        (tmp / "data" / "labels.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    return build


def data_of(task: str, root: str = "data"):
    """The task's usual small, clean source at ``tmp/root`` (``src`` gives its --data argument)."""
    if task == "classification":
        return class_folder(root=root)
    if task in BOX:
        return box_csv(task, root=root)
    return mask_folder(root=root)


def other_data(task: str, extra_class: bool = False, swapped: bool = False):
    """Another source of the task's classes at ``tmp/other`` (one more class: 'zebra')."""
    if task == "classification":
        return class_folder(root="other", extra_class=extra_class)
    if task in BOX:
        return box_csv(task, root="other", classes=("red", "blue", "zebra") if extra_class else ("red", "blue"))

    def build(tmp: Path) -> None:
        mask_folder(6, root="other", start=30, bad_values={0: 3} if extra_class else None)(tmp)
        names = ["background", "red", "blue"] + (["zebra"] if extra_class else [])
        if swapped:
            names = ["background", "blue", "red"]
        (tmp / "other" / "classes.txt").write_text("\n".join(names) + "\n")
    return build


def delete_when(folder: str, rel: str):
    """While the command runs: delete ``tmp/rel`` as soon as ``tmp/folder`` appears (drawing has begun)."""
    def during(tmp: Path) -> None:
        deadline = time.monotonic() + 600
        while not (tmp / folder).exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        (tmp / rel).unlink(missing_ok=True)
    return during


# --- checks: (tmp, output, exit code) -> what went wrong, or None --------------------------------

def _json(output: str):
    start = output.find("{")
    try:
        return json.JSONDecoder().raw_decode(output[start:])[0] if start >= 0 else None
    except ValueError:
        return None


def exists(template: str):
    def check(tmp, output, rc):
        return None if Path(expand(template, tmp)).exists() else f"{template} was not written"
    return check


def absent(template: str):
    def check(tmp, output, rc):
        return f"{template} was left behind" if Path(expand(template, tmp)).exists() else None
    return check


def says(word: str):
    def check(tmp, output, rc):
        return None if rc == 0 or word in output.lower() else f"the message does not say {word!r}"
    return check


def task_words(word: str | None):
    """The message is in the task's words: never classification's ``path,label``; ``word`` in it."""
    def check(tmp, output, rc):
        if "path,label" in output:
            return "told about classification's path,label"
        return None if word is None or word in output.lower() else f"the message does not mention {word!r}"
    return check


def no_new(folder: str):
    def check(tmp, output, rc):
        new = [p.name for p in (tmp / folder).iterdir() if not re.fullmatch(r"p\d+\.png", p.name)]
        return f"wrote {new} into the input folder {folder}/" if new else None
    return check


def distinct_outputs(folder: str, count: int, rc0: bool = False):
    """``count`` files in ``tmp/folder`` and, in --json, a distinct existing file for every answer."""
    def check(tmp, output, rc):
        if rc0 and rc != 0:
            return None
        written = sorted(p.name for p in (tmp / folder).iterdir()) if (tmp / folder).is_dir() else []
        if len(written) != count:
            return f"{len(written)} file(s) in {folder}/ for {count} outputs: {written}"
        doc = _json(output)
        named = [r.get(k) for r in (doc or {}).get("results", []) for k in ("drawn", "mask_file") if r.get(k)]
        if doc is not None and (len(set(named)) != len(named) or not all(Path(n).is_file() for n in named)):
            return f"the JSON names {named}: not one distinct existing file per output"
        return None
    return check


def answered(count: int):
    def check(tmp, output, rc):
        drawn = list((tmp / "drawn").glob("*")) if (tmp / "drawn").is_dir() else []
        return None if len(drawn) >= count else f"only {len(drawn)} drawing(s) of the {count} files still there"
    return check


def masks_match_inputs(tmp, output, rc):
    """Each input's mask_file exists, is its own (distinct) and has the input's size."""
    doc = _json(output)
    if doc is None:
        return "no JSON"
    files = [(r["file"], r.get("mask_file")) for r in doc.get("results", [])]
    masks = [m for _, m in files]
    if None in masks or len(set(masks)) != len(masks):
        return f"mask files {masks} are not one per input"
    for image, mask in files:
        if not Path(mask).is_file() or Image.open(image).size != Image.open(mask).size:
            return f"{mask} is not the mask of {image}"
    return None


def records_other(source: str):
    """evaluate --data OTHER wrote its own metrics, which record OTHER."""
    def check(tmp, output, rc):
        other = expand(source, tmp)
        own = tmp / "run" / "evaluation" / "metrics.json"
        written = [p for p in (tmp / "run").rglob("*.json") if p != own and p.stat().st_mtime > own.stat().st_mtime]
        if not any(other in p.read_text(errors="replace") for p in written):
            return f"no metrics written beside the run's own that record {other}"
        return None
    return check


def swapped_named(tmp, output, rc):
    if rc == 0 and "map" not in output.lower():
        return "scored with swapped class names without a word (refuse, or map by name and say so)"
    return None


def checked_images(count: int):
    def check(tmp, output, rc):
        doc = _json(output)
        found = (doc or {}).get("num_images", 0)
        return None if found >= count else f"checked {found} images, not the {count} of train/ and val/"
    return check


_MOVED_BOX = ("outside", "clipped", "dropped", "size_mismatch", "mismatch")


def exif_boxes_kept(tmp, output, rc):
    """EXIF-6 photos: their boxes, written on the displayed image, are not found outside or clipped."""
    text = output.lower()
    return f"boxes moved or dropped: {[w for w in _MOVED_BOX if w in text]}" if any(
        w in text for w in _MOVED_BOX) else None


def exif_masks_kept(tmp, output, rc):
    text = output.lower()
    return "masks said to be of another size than their EXIF-6 photos" if (
        "size" in text and ("mismatch" in text or "another size" in text or "other size" in text)) else None


_NOTHING = ("nothing to score", "no labelled", "no labeled", "all ignored", "only the ignored", "entirely",
            "no pixel", "every pixel")


def nothing_to_score(tmp, output, rc):
    if any(w in output.lower() for w in _NOTHING):
        return None
    return "masks holding only the ignored value: no word about it"


def no_half_run(tmp, output, rc):
    run = tmp / "newrun"
    if run.exists() and not (run / "checkpoints" / "best.keras").is_file():
        return "a run folder without a checkpoint was left behind"
    return None


def ignore_index_agrees(tmp, output, rc):
    """check-data and train answer --ignore-index 300 alike (train stops at the backbone, after its options)."""
    train = subprocess.run([sys.executable, "-m", "transfer", "train", "--task", "segment", "--data",
                            str(tmp / "data"), "--out", str(tmp / "x"), "--backbone", "no_such_backbone",
                            "--ignore-index", "300"], capture_output=True, text=True, timeout=120)
    train_refuses = "ignore" in (train.stdout + train.stderr).lower()
    check_refuses = rc == 2
    if train_refuses != check_refuses:
        return (f"--ignore-index 300: check-data {'refuses' if check_refuses else 'accepts'} it, "
                f"train {'refuses' if train_refuses else 'accepts'} it")
    return None
