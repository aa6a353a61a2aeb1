"""--task segment's seam: registration, options, recipe checks, split.json round trips, the
serving post-processing (masks at the original resolution, padding, probabilities), parity,
evaluation against hand counts, and the export read by ExportedSegmenter and `transfer predict`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tests.segmentfactory import CLASS_NAMES, VOID, write_mask_folder
from transfer.data.samples import IGNORE_VALUE, DataSplit, Mask, Samples
from transfer.core.errors import TransferError
from transfer.core.recipe import Recipe
from transfer.tasks import get_task
from transfer.tasks.segment.task import SegmentTask
from transfer.tasks.segment.masks import masks_at_original


def test_segment_is_registered_with_its_export_title_and_options():
    task = get_task("segment")
    assert isinstance(task, SegmentTask) and task.title == "segmentation" and not task.uses_feature_cache
    assert get_task("segmentation").name == "segment"
    configured = task.with_options(ignore_index=11, class_names="a, b,c", decoder="fcn")
    assert (configured.ignore_index, configured.class_names, configured.decoder) == (11, ("a", "b", "c"), "fcn")
    assert task.ignore_index is None  # with_options makes a new task
    with pytest.raises(TransferError, match="decoder"):
        task.with_options(decoder="deeplab")
    with pytest.raises(TransferError, match="class-names"):
        task.with_options(class_names="a,,b")
    with pytest.raises(TransferError, match="--task classify takes no --decoder, --ignore-index"):
        get_task("classify").with_options(ignore_index=3, decoder="unet", class_names=None)
    assert get_task("localize").with_options(ignore_index=None).name == "localize"


def test_recipe_ignore_index_is_checked_and_round_trips_through_toml():
    assert "ignore_index" not in Recipe().to_toml()
    recipe = Recipe(ignore_index=11)
    assert Recipe.from_toml(recipe.to_toml()) == recipe
    assert Recipe(ignore_index=1000).ignore_index == 1000  # 16-bit masks: the --ignore-index rule
    for bad in (65536, -1, True, 2.5):
        with pytest.raises(TransferError, match="ignore_index"):
            Recipe(ignore_index=bad)
    with pytest.raises(TransferError, match="wrong type"):
        Recipe.from_toml('ignore_index = "11"\n')


def test_recipe_checks_refuse_class_weights_and_two_ignore_values():
    task = get_task("segment")
    task.check_recipe(task.default_recipe())
    assert "rotate" not in task.default_recipe().augment  # opt-in: road scenes have an up
    task.check_recipe(Recipe(augment=("flip", "rotate")))  # for microscopy, aerial and other up-less data
    with pytest.raises(TransferError, match="class_weight"):
        task.check_recipe(Recipe(augment=(), class_weight="balanced"))
    with pytest.raises(TransferError, match="differ"):
        task.with_options(ignore_index=11).check_recipe(Recipe(augment=(), ignore_index=12))
    task.with_options(ignore_index=11).check_recipe(Recipe(augment=(), ignore_index=11))


def test_default_image_size_is_a_multiple_of_32_above_the_imagenet_size():
    from transfer.backbones import get_backbone

    assert get_task("segment").default_image_size(get_backbone("mobilenet_0.25")) == 320
    for name in ("efficientnetb0", "resnet50", "smallcnn"):
        spec = get_backbone(name)
        size = get_task("segment").default_image_size(spec)
        assert size % 32 == 0 and size >= spec.default_size


@pytest.mark.parametrize("target", [
    Mask(480, 360, path="masks/a.png", values=tuple((v, v) for v in range(11)) + ((11, IGNORE_VALUE),)),
    Mask(640, 480, path="masks/b.jpg", values=((0, 0), (255, 1)), threshold=True),
    Mask(20, 10, polygons=((1, (0.0, 0.0, 5.5, 0.0, 5.5, 4.0)), (2, (1.0, 1.0, 3.0, 1.0, 3.0, 3.0)))),
    Mask(4, 3, rle=((1, {"size": [3, 4], "counts": [2, 3, 7]}), (2, {"size": [3, 4], "counts": b"52203"}))),
    Mask(8, 8),
])
def test_mask_targets_round_trip_through_split_json(target):
    task = get_task("segment")
    value = json.loads(json.dumps(task.target_to_json(target)))
    assert task.target_from_json(value, {"class_names": ["a", "b", "c"]}) == target


def test_run_config_records_options_or_the_recipes_ignore_index():
    train = Samples(("a.png",), (Mask(4, 4, path="m/a.png"),), ("bg", "fg"))
    split = DataSplit(train, train)
    config = get_task("segment").run_config(split, Recipe(augment=(), ignore_index=7))
    assert config["ignore_index"] == 7 and config["decoder"] == "unet" and config["monitor"] == "val_iou"
    assert config["class_names"] == ["bg", "fg"] and config["num_classes"] == 2 and config["loss"] == "ce+dice"
    config = get_task("segment").with_options(ignore_index=3, decoder="fcn").run_config(split, Recipe(augment=()))
    assert config["ignore_index"] == 3 and config["decoder"] == "fcn"


def test_loss_option_is_normalized_recorded_and_used_by_the_objective():
    train = Samples(("a.png",), (Mask(4, 4, path="m/a.png"),), ("bg", "fg"))
    task = get_task("segment").with_options(loss=" CE ")
    config = task.run_config(DataSplit(train, train), Recipe(augment=()))
    assert config["loss"] == "ce"
    assert task.objective(config, Recipe(augment=())).loss.terms == ("ce",)
    assert get_task("segment").for_run({**config, "class_names": ["bg", "fg"]}).loss == "ce"
    assert get_task("segment").with_options(loss="Focal+dice").loss == "focal+dice"
    with pytest.raises(TransferError, match="--loss 'iou' is not a segmentation loss") as error:
        get_task("segment").with_options(loss="iou")
    assert "ce+dice" in error.value.fix
    with pytest.raises(TransferError, match="--task classify takes no --loss"):
        get_task("classify").with_options(loss="ce")


def _logits(classes_by_column: list[int], side: int = 4, num_classes: int = 3) -> np.ndarray:
    """Logits ``[side, side, C]`` whose argmax is ``classes_by_column[column * len // side]``."""
    out = np.zeros((side, side, num_classes), np.float32)
    for col in range(side):
        out[:, col, classes_by_column[col * len(classes_by_column) // side]] = 5.0
    return out


def test_masks_come_back_at_each_images_size_padded_to_the_batch():
    logits = np.stack([_logits([1, 2]), _logits([0, 0, 2, 2])])
    out = masks_at_original(tf.constant(logits), tf.constant([[3, 10], [7, 5]]))
    mask = out["mask"].numpy()
    assert mask.dtype == np.uint8 and mask.shape == (2, 7, 10)
    assert out["height"].numpy().tolist() == [3, 7] and out["width"].numpy().tolist() == [10, 5]
    # Image 0: 3 x 10, left half class 1, right half 2; padding below is 0.
    assert (mask[0, :3, :5] == 1).all() and (mask[0, :3, 5:] == 2).all() and (mask[0, 3:] == 0).all()
    # Image 1: 7 x 5, the middle column sits on the 0 | 2 border; padding right is 0.
    assert (mask[1, :, :2] == 0).all() and (mask[1, :, 3:5] == 2).all() and (mask[1, :, 5:] == 0).all()
    with_probs = masks_at_original(tf.constant(logits), tf.constant([[3, 10], [7, 5]]), probabilities=True)
    probs = with_probs["probabilities"].numpy()
    assert probs.shape == (2, 7, 10, 3) and np.array_equal(with_probs["mask"].numpy(), mask)
    np.testing.assert_allclose(probs[0, :3].sum(-1), 1.0, atol=1e-5)
    assert (probs[0, 3:] == 0).all()
    assert np.array_equal(probs[0, :3].argmax(-1), mask[0, :3])
    empty = masks_at_original(tf.zeros([0, 4, 4, 3]), tf.zeros([0, 2], tf.int32), probabilities=True)
    assert empty["mask"].shape == (0, 0, 0) and empty["probabilities"].shape == (0, 0, 0, 3)


def test_postprocess_names_the_classes_per_image_and_the_probabilities_signature_adds_them():
    task = get_task("segment")
    config = {"class_names": ["bg", "a", "b"]}
    logits = tf.constant(np.stack([_logits([1, 2])]))
    out = task.postprocess(logits, tf.constant([[6, 6]]), 4, config)
    assert set(out) == set(task.serving_outputs(config)) == {"mask", "height", "width", "class_names"}
    assert out["class_names"].numpy().tolist() == [[b"bg", b"a", b"b"]]
    (key, outputs), = task.extra_signatures(config).items()
    extra = task.postprocess(logits, tf.constant([[6, 6]]), 4, config, signature=key)
    assert set(extra) == set(outputs) and extra["probabilities"].shape == (1, 6, 6, 3)


def test_parity_error_is_zero_when_the_served_mask_is_the_models_argmax_and_large_when_not():
    task = get_task("segment")
    logits = np.stack([_logits([1, 2], side=4), _logits([0, 2], side=4)])
    served = {k: v.numpy() for k, v in masks_at_original(tf.constant(logits), tf.constant([[4, 4]] * 2),
                                                         probabilities=True).items()}
    assert task.parity_error(logits, served, 4, {}) <= 1e-6
    near_tie = logits.copy()
    near_tie[0, 0, 0, 2] = 5.0 - 1e-6  # class 1 still wins at (0, 0), by a hair
    flipped = dict(served, mask=served["mask"].copy())
    flipped["mask"][0, 0, 0] = 2
    assert task.parity_error(near_tie, {k: v for k, v in flipped.items() if k != "probabilities"}, 4, {}) < 1e-4
    wrong = dict(served, mask=served["mask"].copy())
    wrong["mask"][1, 2, 2] = 1
    assert task.parity_error(logits, wrong, 4, {}) > 0.5
    assert task.parity_error(logits, dict(served, probabilities=served["probabilities"] + 1e-3), 4, {}) > 1e-4
    assert task.parity_error(logits, dict(served, height=np.array([4, 3])), 4, {}) == 1.0


def _colour_model(num_classes: int = 3):
    """A callable 'model' whose logits say the class of the nearest class colour (segmentfactory's)."""
    from tests.segmentfactory import BACKGROUND, COLORS

    palette = np.array([BACKGROUND, COLORS[1], COLORS[2]], np.float32)

    def model(images, training=False):
        pixels = tf.cast(images, tf.float32)[..., None, :]
        distance = tf.reduce_sum((pixels - palette) ** 2, axis=-1)
        return -distance[..., :num_classes] / 100.0

    return model


def test_evaluation_counts_pixels_at_the_original_resolution_and_skips_the_ignored_value(tmp_path):
    from transfer.data.masks import load_mask, read_masks
    from transfer.tasks.segment.evaluation import evaluate_segmenter

    sizes = [(96, 64), (50, 80), (64, 64)]
    root = write_mask_folder(tmp_path / "data", 3, sizes=sizes, void=True)
    samples, _ = read_masks(str(root), ignore_index=VOID)
    truths = [load_mask(t) for t in samples.targets]
    assert any((t == IGNORE_VALUE).any() for t in truths)

    # Always class 0 (all logits equal): pixel accuracy is the share of labelled background pixels.
    blank = evaluate_segmenter(lambda images, training=False: tf.zeros(list(images.shape[:3]) + [3]), samples, 32,
                               batch_size=2, class_names=CLASS_NAMES)
    labelled = np.concatenate([t[t != IGNORE_VALUE] for t in truths])
    summary = blank.summary()
    assert summary["num_pixels"] == labelled.size == sum(w * h for w, h in sizes) - sum(
        int((t == IGNORE_VALUE).sum()) for t in truths)
    assert summary["pixel_accuracy"] == pytest.approx((labelled == 0).mean(), abs=1e-4)
    assert summary["per_class_iou"]["background"] == pytest.approx((labelled == 0).mean(), abs=1e-4)
    assert summary["per_class_iou"]["red"] == 0.0

    # The colours' model is right but at class borders (the 32 px input loses them); the red but
    # unlabelled band counts nowhere (it would be 1/8 of the pixels wrong otherwise).
    report = evaluate_segmenter(_colour_model(), samples, 32, batch_size=2, class_names=CLASS_NAMES)
    summary = report.summary()
    assert summary["pixel_accuracy"] > 0.95 and summary["mean_iou"] > 0.85
    matrix = np.array(summary["confusion_matrix"]["matrix"])
    # Each row holds exactly the labelled pixels of its true class, counted in the masks themselves.
    np.testing.assert_array_equal(matrix.sum(axis=1), [(labelled == c).sum() for c in range(3)])
    # The scores are the matrix's: IoU = TP / (row + column - TP), Dice = 2 TP / (row + column).
    true_positive, rows, columns = np.diag(matrix), matrix.sum(axis=1), matrix.sum(axis=0)
    for c, name in enumerate(CLASS_NAMES):
        assert summary["per_class_iou"][name] == pytest.approx(
            true_positive[c] / (rows[c] + columns[c] - true_positive[c]), abs=1e-4)
        assert summary["per_class_dice"][name] == pytest.approx(2 * true_positive[c] / (rows[c] + columns[c]),
                                                                abs=1e-4)
    assert summary["pixel_accuracy"] == pytest.approx(true_positive.sum() / labelled.size, abs=1e-4)
    assert report.headline() == ("mean IoU", pytest.approx(np.mean(list(summary["per_class_iou"].values())),
                                                           abs=1e-4))
    assert "red" in report.table() and len(summary["worst"]) == 3
    written = report.write(tmp_path / "evaluation")
    assert json.loads(written["metrics"].read_text())["confusion_matrix"]["matrix"] == matrix.tolist()
    for name in ("confusion_png", "per_class_iou"):
        with Image.open(written[name]) as figure:
            assert figure.format == "PNG"
            figure.load()  # a whole image: a truncated or empty file raises here


def _tiny_segmenter(image_size: int, num_classes: int):
    import keras

    keras.utils.set_random_seed(0)
    image = keras.Input((image_size, image_size, 3), dtype="uint8", name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(image)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    return keras.Model(image, keras.layers.Conv2D(num_classes, 1, name="mask")(x))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from transfer.serving.export import export_model

    out = tmp_path_factory.mktemp("segment-export") / "export"
    config = {"task": "segment", "class_names": list(CLASS_NAMES), "num_classes": 3, "ignore_index": VOID,
              "decoder": "unet"}
    return export_model(_tiny_segmenter(32, 3), out, class_names=list(CLASS_NAMES), image_size=32,
                        task="segment", task_config=config)


def test_export_records_its_signatures_and_predict_answers_at_each_files_size(exported, tmp_path):
    from transfer.tasks.segment.reader import ExportedSegmenter

    meta = json.loads((exported / "assets" / "transfer.json").read_text())
    assert meta["task"] == "segmentation" and meta["ignore_index"] == VOID
    assert set(meta["signatures"]) == {"serving_default", "serving_images", "serving_probabilities"}
    assert "probabilities" in meta["signatures"]["serving_probabilities"]["outputs"]
    files = []
    for i, (w, h, mode) in enumerate([(70, 40, "RGB"), (33, 90, "L"), (32, 32, "RGB")]):
        path = tmp_path / f"f{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (h, w, 3), dtype=np.uint8)).convert(mode).save(path)
        files.append(path)
    segmenter = ExportedSegmenter.load(exported)
    results = segmenter.predict_files(files + [tmp_path / "missing.png"], batch_size=2, probabilities=True)
    assert "error" in results[-1]
    for result, (w, h) in zip(results, [(70, 40), (33, 90), (32, 32)]):
        assert result["mask"].shape == (h, w) and result["mask"].dtype == np.uint8
        assert result["mask"].max() < 3
        assert sum(result["class_pixels"].values()) == pytest.approx(1.0, abs=1e-3)
        assert result["probabilities"].shape == (h, w, 3)
        assert np.array_equal(result["probabilities"].argmax(-1), result["mask"])
    # The same answers without probabilities, whatever the batch.
    again = segmenter.predict_files(files, batch_size=3)
    assert all(np.array_equal(a["mask"], b["mask"]) for a, b in zip(again, results))
    with pytest.raises(TransferError, match="not a localizer"):
        from transfer.tasks.localize.reader import ExportedLocalizer

        ExportedLocalizer.load(exported)


def test_predict_cli_writes_mask_pngs_and_overlays(exported, tmp_path):
    from typer.testing import CliRunner

    from transfer.cli.main import app

    big = tmp_path / "big.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 200, 3), dtype=np.uint8)).save(big)
    grey = tmp_path / "sub" / "big.png"  # the same stem: written as sub/big.png (its relative path)
    grey.parent.mkdir()
    Image.new("L", (40, 30), 128).save(grey)
    masks, drawn = tmp_path / "masks", tmp_path / "drawn"
    result = CliRunner().invoke(app, ["predict", str(exported), str(big), str(grey), "--out", str(masks),
                                      "--draw", str(drawn), "--json"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output[result.output.index("{"):])
    assert answer["class_names"] == list(CLASS_NAMES)
    first, second = answer["results"]
    assert (first["width"], first["height"]) == (200, 120) and set(first["class_pixels"]) == set(CLASS_NAMES)
    assert first["mask_file"] == str(masks / "big.png") and second["mask_file"] == str(masks / "sub" / "big.png")
    written = np.asarray(Image.open(first["mask_file"]))
    assert written.shape == (120, 200) and written.dtype == np.uint8 and written.max() < 3
    assert Image.open(drawn / "big.png").size == (200, 120) and Image.open(drawn / "sub" / "big.png").size == (40, 30)
    text = CliRunner().invoke(app, ["predict", str(exported), str(big), "--out", str(masks), "--overwrite"])
    assert text.exit_code == 0 and "mask" in text.output and "0 background" in text.output


def test_overlay_colours_each_class_and_refuses_a_mask_of_another_size(tmp_path):
    from transfer.tasks.segment.reader import class_color, draw_overlay

    image = tmp_path / "grey.png"
    Image.new("RGB", (100, 60), (128, 128, 128)).save(image)
    mask = np.zeros((60, 100), np.uint8)
    mask[:, 50:] = 2
    out = np.asarray(Image.open(draw_overlay(image, mask, ["bg", "a", "b"], tmp_path / "o.png", alpha=0.5)))
    assert out.shape == (60, 100, 3)
    assert np.abs(out[50, 90].astype(int) - (np.array(class_color(2)) + 128) / 2).max() <= 1
    assert np.abs(out[50, 40].astype(int) - (np.array(class_color(0)) + 128) / 2).max() <= 1
    assert (out[2:5, 2:5] != out[50, 40]).any()  # the legend, top left
    with pytest.raises(TransferError, match="does not fit"):
        draw_overlay(image, mask[:10], ["bg", "a", "b"], tmp_path / "x.png")


def _brightness_segmenter(image_size: int, threshold: float, gain: float = 8.0):
    """Logits ``(0, gain * (v - threshold))``, ``v`` the pixel's grey level in [0, 1]: class 1
    ("bright") where the input is brighter than ``threshold``."""
    import keras

    image = keras.Input((image_size, image_size, 3), dtype="uint8", name="image")
    x = keras.layers.Rescaling(1 / 255)(image)
    conv = keras.layers.Conv2D(2, 1, name="mask")
    model = keras.Model(image, conv(x))
    kernel = np.zeros((1, 1, 3, 2), np.float32)
    kernel[..., 1] = gain / 3  # the mean of the three channels
    conv.set_weights([kernel, np.array([0.0, -gain * threshold], np.float32)])
    return model


def test_a_2048_px_photo_gets_a_mask_of_its_own_resolution(tmp_path):
    from transfer.serving.export import export_model
    from transfer.tasks.segment.reader import ExportedSegmenter

    # A grey ramp, column c at level c * 255 / 2047 (PNG: the levels stay exact). Stretched to the
    # 32 px input, cell j is the ramp's mean around its centre 64 j + 31.5, i.e. v_j = (64 j + 31.5)
    # / 2047; the probabilities, nearly linear in v over a cell (gain 8 x 1/32 of the range), are
    # resized back bilinearly, so the class changes where the ramp crosses the threshold: column
    # 1056 for threshold 1056 / 2047, the middle of cell 16. A 32 px mask blown up would change
    # at a cell border (column 1024 or 1088, 32 px away); the ramp's and the input's rounding to
    # whole grey levels move the crossing by up to about one level, 8 columns.
    crossing = 1056
    model = _brightness_segmenter(32, crossing / 2047)
    export = export_model(model, tmp_path / "export", class_names=["dark", "bright"], image_size=32,
                          task="segment", task_config={"task": "segment", "class_names": ["dark", "bright"],
                                                       "num_classes": 2, "decoder": "fcn"})
    ramp = np.round(np.arange(2048) * 255 / 2047).astype(np.uint8)
    path = tmp_path / "large.png"
    Image.fromarray(np.repeat(np.broadcast_to(ramp, (1536, 2048))[..., None], 3, axis=-1)).save(path)
    (result,) = ExportedSegmenter.load(export).predict_files([path])
    assert result["mask"].shape == (1536, 2048)
    row = result["mask"][768].astype(int)
    changes = np.flatnonzero(np.diff(row))
    assert len(changes) == 1 and abs(int(changes[0]) + 1 - crossing) <= 12, changes
    assert (row[:changes[0] + 1] == 0).all() and (row[changes[0] + 1:] == 1).all()
    assert (result["mask"] == result["mask"][768]).all()  # the ramp is the same on every row


def test_a_run_reads_its_data_again_with_its_own_options():
    config = {"task": "segment", "class_names": ["a", "b"], "ignore_index": 11, "decoder": "fcn"}
    task = get_task("segment").for_run(config)
    assert (task.class_names, task.ignore_index, task.decoder) == (("a", "b"), 11, "fcn")
    assert get_task("detect").for_run(config).name == "detect"
