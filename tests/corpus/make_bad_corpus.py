"""Write the bad-input corpus: dirty image folders and label files, as found in the wild.

Run from anywhere (re-running replaces what it wrote; the output is the same
every time)::

    python tests/corpus/make_bad_corpus.py

It writes, next to this script:

- ``bad_dataset/``: ``train/`` and ``val/`` folders of classes ``cat`` and
  ``dog`` holding 22 good images and one file per bad case: undecodable,
  truncated, non-image and unsupported files, decompression bombs, wrong
  extensions, CMYK / grayscale / 16-bit / alpha / animated / EXIF-rotated
  images, duplicates within and across splits;
- ``empty_class_dataset/``: a class folder with no images in it;
- ``bad_labels/``: ``labels.csv`` with every kind of bad line (missing file,
  empty or unknown label, duplicate and conflicting lines, paths outside the
  folder, a bad split value, a short line) over a few images;
- ``manifest.json``: every case, what it is and what should happen to it
  (``expect``: ``skip``, ``use``, ``ignore``, ``stop`` or ``silent``) and the
  problem code the data doctor reports. The tests read their expectations here.

The whole corpus stays well under 1 MiB; the decompression bomb is a valid
PNG whose header declares 30000x30000 pixels (2.7 GB decoded) in ~110 KB.
"""

from __future__ import annotations

import io
import json
import shutil
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
SIZE = 40


def pixels(class_index: int, sample: int, size: int = SIZE) -> np.ndarray:
    """A smooth, class-coloured image with a per-sample pattern (so no two good images are alike)."""
    rng = np.random.default_rng(1000 * class_index + sample)
    yy, xx = np.mgrid[0:size, 0:size]
    base = np.array([(210, 60, 50), (50, 90, 200)][class_index], np.float32)
    # Cats have diagonal waves, dogs rings: the classes differ in structure, not only in color.
    if class_index == 0:
        wave = np.sin((xx * (1 + sample % 3) + yy * (1 + sample % 5)) / 4.0 + sample)[..., None]
    else:
        cy, cx = (sample * 7) % size, (sample * 13) % size
        wave = np.cos(np.hypot(yy - cy, xx - cx) / (2.0 + sample % 4))[..., None]
    image = base * (0.7 + 0.3 * wave) + rng.normal(0, 12, (size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def encode(array: np.ndarray | Image.Image, fmt: str, **options) -> bytes:
    image = array if isinstance(array, Image.Image) else Image.fromarray(array)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(width: int = 30000, height: int = 30000) -> bytes:
    """A valid 1-bit grayscale PNG of ``width x height`` black pixels: tiny file, 2.7 GB as RGB."""
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    compressor = zlib.compressobj(9)
    body = b"".join(compressor.compress(row * 100) for _ in range(height // 100)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", body) + png_chunk(b"IEND", b"")


def png_rgb16(array: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG (PIL cannot write one)."""
    height, width = array.shape[:2]
    wide = array.astype(">u2") * 257
    raw = b"".join(b"\x00" + wide[y].tobytes() for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(raw, 9)) + \
        png_chunk(b"IEND", b"")


def jpeg_with_huge_header(good_jpeg: bytes, width: int = 65000, height: int = 65000) -> bytes:
    """A real JPEG whose frame header (SOF) is rewritten to declare ``width x height`` pixels."""
    data = bytearray(good_jpeg)
    pos = 2
    while True:
        marker, length = data[pos + 1], struct.unpack_from(">H", data, pos + 2)[0]
        if marker in (0xC0, 0xC1, 0xC2):
            struct.pack_into(">HH", data, pos + 5, height, width)
            return bytes(data)
        pos += 2 + length


def corrupt_png(good_png: bytes) -> bytes:
    """Flip bytes inside the compressed image data (the chunk CRC no longer matches)."""
    data = bytearray(good_png)
    start = data.index(b"IDAT") + 4
    for k in range(8):
        data[start + 20 + 7 * k] ^= 0xFF
    return bytes(data)


def zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        info = zipfile.ZipInfo("photo.jpg", date_time=(2020, 1, 1, 0, 0, 0))
        archive.writestr(info, b"not really a photo")
    return buffer.getvalue()


def animated(fmt: str, frames: list[np.ndarray], **options) -> bytes:
    images = [Image.fromarray(f) for f in frames]
    buffer = io.BytesIO()
    images[0].save(buffer, format=fmt, save_all=True, append_images=images[1:], duration=100, loop=0, **options)
    return buffer.getvalue()


def exif_rotated(array: np.ndarray) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    return encode(array, "JPEG", quality=90, exif=exif)


def build_bad_dataset(root: Path) -> dict[str, dict]:
    """The folder corpus; returns its manifest entries keyed by path relative to ``root``."""
    cases: dict[str, dict] = {}
    good: dict[str, bytes] = {}

    def write(rel: str, data: bytes, expect: str, code: str | None, what: str) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        cases[rel] = {"expect": expect, "code": code, "what": what}

    for split, count, offset in (("train", 8, 0), ("val", 3, 100)):
        for class_index, name in enumerate(("cat", "dog")):
            for i in range(count):
                rel = f"{split}/{name}/good_{i:02d}.jpg"
                good[rel] = encode(pixels(class_index, offset + i), "JPEG", quality=90)
                write(rel, good[rel], "use", None, "good JPEG")

    cat0, cat1, cat2, cat3 = (good[f"train/cat/good_{i:02d}.jpg"] for i in range(4))
    cat_pixels, dog_pixels = pixels(0, 50), pixels(1, 50)
    png = encode(cat_pixels, "PNG")
    jpeg = encode(cat_pixels, "JPEG", quality=90)
    gif = encode(dog_pixels, "GIF")
    bmp = encode(cat_pixels, "BMP")
    webp = encode(dog_pixels, "WEBP", quality=80)

    # --- skipped: training leaves them out, predict answers with an error ---
    write("train/cat/empty.jpg", b"", "skip", "empty_file", "empty file (0 bytes)")
    garbage = bytes(np.random.default_rng(7).integers(128, 256, 600, dtype=np.uint8))
    write("train/cat/garbage.jpg", garbage, "skip", "not_image", "random bytes")
    write("train/cat/notes_as_image.jpg", b"these are my notes, not a photo\n" * 4, "skip", "not_image",
          "text file named .jpg")
    write("train/dog/error_page.jpg", b"<!DOCTYPE html><html><body>404 Not Found</body></html>\n", "skip",
          "not_image", "HTML error page saved as .jpg")
    write("train/dog/document.png", b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n", "skip",
          "not_image", "PDF named .png")
    write("train/dog/archive.jpg", zip_bytes(), "skip", "not_image", "ZIP archive named .jpg")
    write("train/cat/truncated_half.jpg", jpeg[: len(jpeg) // 2], "skip", "truncated", "JPEG cut in half")
    write("train/cat/truncated_no_end.jpg", jpeg[:-2], "skip", "truncated", "JPEG missing its end marker")
    write("train/dog/truncated_header.jpg", jpeg[:20], "skip", "truncated", "JPEG cut inside its header")
    write("train/dog/truncated.png", png[: len(png) // 2], "skip", "truncated", "PNG cut in half")
    write("train/cat/truncated_no_iend.png", png[:-12], "skip", "truncated", "PNG missing its IEND chunk")
    write("train/dog/truncated.gif", gif[: len(gif) // 2], "skip", "truncated", "GIF cut in half")
    write("train/cat/truncated.bmp", bmp[: len(bmp) // 2], "skip", "truncated", "BMP cut in half")
    write("val/cat/truncated_webp.jpg", webp[: len(webp) // 2], "skip", "truncated", "WebP cut in half, named .jpg")
    write("train/dog/corrupt_data.png", corrupt_png(png), "skip", "undecodable", "PNG with corrupted pixel data")
    write("val/dog/no_frame_header.jpg", jpeg[:20] + b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00" + b"\x11" * 300,
          "skip", "undecodable", "JPEG with image data but no frame header")
    write("train/cat/tiff_renamed.jpg", encode(cat_pixels, "TIFF"), "skip", "unsupported_format",
          "TIFF named .jpg")
    write("train/dog/icon_renamed.png", encode(Image.fromarray(dog_pixels).resize((32, 32)), "ICO"), "skip",
          "unsupported_format", "Windows icon named .png")
    write("train/cat/iphone_photo.jpg", b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 200, "skip",
          "unsupported_format", "HEIC (iPhone) named .jpg")
    write("train/dog/drawing.png", b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="40" '
          b'height="40"><rect width="40" height="40"/></svg>\n', "skip", "unsupported_format", "SVG named .png")
    write("train/dog/one_bit.bmp", encode(Image.fromarray(dog_pixels).convert("1"), "BMP"), "skip",
          "unsupported_format", "1-bit BMP (TensorFlow refuses it)")
    write("train/cat/animated_webp.jpg", animated("WEBP", [cat_pixels, dog_pixels]), "skip", "unsupported_format",
          "animated WebP named .jpg")
    write("train/dog/bomb_30000x30000.png", png_bomb(), "skip", "too_large",
          "decompression bomb: PNG declaring 30000x30000 pixels")
    write("train/cat/huge_65000x65000.jpg", jpeg_with_huge_header(jpeg), "skip", "too_large",
          "JPEG whose header declares 65000x65000 pixels")
    write("val/dog/tiny_1x1.png", encode(np.full((1, 1, 3), 128, np.uint8), "PNG"), "skip", "too_small",
          "1x1 pixel image")
    write("val/cat/tiny_4x4.gif", encode(cat_pixels[:4, :4], "GIF"), "skip", "too_small", "4x4 pixel GIF")

    # --- used: the decoder handles them; the doctor says what it noticed ---
    write("train/cat/png_named.jpg", encode(pixels(0, 60), "PNG"), "use", "wrong_extension", "PNG named .jpg")
    write("train/dog/jpeg_named.png", encode(pixels(1, 61), "JPEG", quality=90), "use", "wrong_extension",
          "JPEG named .png")
    write("train/cat/webp_named.jpg", encode(pixels(0, 62), "WEBP", quality=90), "use", "wrong_extension",
          "WebP named .jpg")
    write("train/dog/bmp_named.gif", encode(pixels(1, 63), "BMP"), "use", "wrong_extension", "BMP named .gif")
    write("train/cat/cmyk.jpg", encode(Image.fromarray(pixels(0, 64)).convert("CMYK"), "JPEG", quality=90), "use",
          "cmyk", "CMYK JPEG")
    write("train/dog/grayscale.jpg", encode(Image.fromarray(pixels(1, 65)).convert("L"), "JPEG", quality=90), "use",
          "grayscale", "grayscale JPEG")
    write("train/cat/sixteen_bit.png", png_rgb16(pixels(0, 66)), "use", "high_bit_depth", "16-bit RGB PNG")
    write("train/dog/transparent.png", encode(Image.fromarray(pixels(1, 67)).convert("RGBA"), "PNG"), "use",
          "alpha", "RGBA PNG")
    write("train/cat/palette_alpha.png", encode(Image.fromarray(pixels(0, 68)).convert("P"), "PNG", transparency=0),
          "use", "alpha", "palette PNG with a transparent color")
    write("train/dog/animated.gif", animated("GIF", [pixels(1, 69), pixels(1, 70)]), "use", "animated",
          "animated GIF (first frame used)")
    write("train/cat/exif_rotated.jpg", exif_rotated(pixels(0, 71)), "use", "exif_orientation",
          "JPEG with EXIF orientation 6")
    write("train/dog/small_12px.jpg", encode(pixels(1, 72, size=12), "JPEG", quality=90), "use", "too_small",
          "12x12 image (upscaled)")
    write("val/cat/copy_of_train_good_00.jpg", cat0, "use", "duplicate_across_splits",
          "the same file in train and val")
    write("train/cat/copy_of_good_01.jpg", cat1, "use", "duplicate", "exact copy in the same class")
    write("train/dog/also_in_cat.jpg", cat2, "use", "duplicate_conflicting_labels", "the same image in two classes")
    resaved = encode(np.asarray(Image.open(io.BytesIO(cat3))), "JPEG", quality=60)
    write("train/cat/resaved_good_03.jpg", resaved, "use", "near_duplicate", "re-saved copy (JPEG quality 60)")

    # --- not read at all: not an image extension (reported), hidden (silent) ---
    write("train/cat/notes.txt", b"labels checked by hand\n", "ignore", "ignored_file", "text file in a class folder")
    write("train/dog/photo.tiff", encode(dog_pixels, "TIFF"), "ignore", "ignored_file", "TIFF in a class folder")
    write("train/dog/.DS_Store", b"\x00\x00\x00\x01Bud1" + b"\x00" * 60, "silent", None, "macOS folder metadata")
    return cases


def build_empty_class_dataset(root: Path) -> dict[str, dict]:
    cases = {}
    for class_index, name in enumerate(("cat", "dog")):
        for i in range(3):
            rel = f"{name}/good_{i}.jpg"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(encode(pixels(class_index, 200 + i), "JPEG", quality=90))
            cases[rel] = {"expect": "use", "code": None, "what": "good JPEG"}
    (root / "bird").mkdir(parents=True, exist_ok=True)
    (root / "bird" / "README.txt").write_bytes(b"bird photos go here\n")
    cases["bird"] = {"expect": "stop", "code": "empty_class", "what": "class folder without images"}
    cases["bird/README.txt"] = {"expect": "ignore", "code": "ignored_file", "what": "text file in a class folder"}
    return cases


LABEL_LINES = [
    # (csv line, expect, code, what)
    ("path,label,split", None, None, "header"),
    ("images/cat_0.jpg,cat,train", "use", None, "good"),
    ("images/cat_1.jpg,cat,train", "use", None, "good"),
    ("images/cat_2.jpg,cat,val", "use", None, "good"),
    ("images/dog_0.jpg,dog,train", "use", None, "good"),
    ("images/dog_1.jpg,dog,train", "use", None, "good"),
    ("images/dog_2.jpg,dog,val", "use", None, "good"),
    ("images/missing.jpg,cat,train", "stop", "csv_missing_file", "listed image does not exist"),
    ("images/cat_0.jpg,cat,train", "skip", "csv_duplicate_row", "the same line twice"),
    ("images/cat_1.jpg,dog,train", "stop", "csv_conflicting_labels", "the same image with another label"),
    ("images/dog_3.jpg, ,train", "stop", "csv_empty_label", "empty label"),
    (",dog,train", "stop", "csv_row", "empty path"),
    ("../bad_dataset/train/cat/good_00.jpg,cat,train", "stop", "csv_outside_root", "relative path leaving the folder"),
    ("/etc/hostname,cat,train", "stop", "csv_outside_root", "absolute path outside the folder"),
    ("images/dog_3.jpg,dog,test", "stop", "csv_row", "unknown split value"),
    ("images/dog_3.jpg", "stop", "csv_row", "line with too few fields"),
    ("images/fox_0.jpg,fox,val", "use", "csv_unknown_label", "label only in val (never trained)"),
    ("images/cat_3.jpg,Cat,train", "use", "csv_unknown_label", "label differing only in case"),
    ("images/truncated.jpg,dog,train", "skip", "truncated", "listed image is truncated"),
]


def build_bad_labels(root: Path) -> dict[str, dict]:
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    for class_index, name, count, first in ((0, "cat", 4, 300), (1, "dog", 4, 310), (1, "fox", 1, 320)):
        for i in range(count):
            (images / f"{name}_{i}.jpg").write_bytes(encode(pixels(class_index, first + i), "JPEG", quality=90))
    full = encode(pixels(1, 399), "JPEG", quality=90)
    (images / "truncated.jpg").write_bytes(full[: len(full) // 2])
    (root / "labels.csv").write_text("\n".join(line for line, *_ in LABEL_LINES) + "\n", encoding="utf-8")
    cases = {}
    for number, (line, expect, code, what) in enumerate(LABEL_LINES, start=1):
        if expect is not None and (code is not None or expect != "use"):
            cases[f"labels.csv:{number}"] = {"expect": expect, "code": code, "what": what, "line": number,
                                             "text": line}
    return cases


def main() -> None:
    parts = {
        "bad_dataset": build_bad_dataset,
        "empty_class_dataset": build_empty_class_dataset,
        "bad_labels": build_bad_labels,
    }
    manifest = {}
    for name, build in parts.items():
        root = HERE / name
        if root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True)
        manifest[name] = build(root)
    (HERE / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    size = sum(p.stat().st_size for p in HERE.rglob("*") if p.is_file())
    print(f"Wrote {sum(len(v) for v in manifest.values())} cases to {HERE} ({size / 1024:.0f} KiB in all)")


if __name__ == "__main__":
    main()
