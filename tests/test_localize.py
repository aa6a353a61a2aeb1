"""--task localize: box pipeline, model, loss, evaluation, serving post-processing, predict.

Images are drawn in the test (a bright rectangle on a dark background, saved
as PNG so no pixel changes) and the checks compare boxes with those pixels.
"""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tests.conftest import require_fixture
from transfer.backbones import get_backbone
from transfer.data.pipelines.boxes import box_arrays, largest_box, make_box_dataset, several_boxes
from transfer.data.samples import Boxes, DataSplit, Samples
from transfer.core.errors import TransferError
from transfer.core.recipe import Recipe, Stage
from transfer.tasks import get_task
from transfer.tasks.localize.evaluation import compute_localize_report
from transfer.tasks.localize.model import BoxIoU, BoxLoss, HeadShape, build_localizer

DARK, BRIGHT, THRESHOLD = 20, 230, 160  # THRESHOLD above the zoom's gray fill (114)


def draw_png(path, height, width, box) -> Boxes:
    """A dark PNG with a bright rectangle over pixel ``box``; returns its ``Boxes`` target."""
    image = np.full((height, width, 3), DARK, np.uint8)
    xmin, ymin, xmax, ymax = box
    image[ymin:ymax, xmin:xmax] = BRIGHT
    Image.fromarray(image).save(path)
    return Boxes((tuple(float(v) for v in box),), (0,), width, height)


def bright_box(image) -> np.ndarray:
    mask = np.asarray(image).max(axis=-1) > THRESHOLD
    assert mask.any(), "the bright rectangle vanished"
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], np.float64)


def iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return w * h / (area(a) + area(b) - w * h)


def task():
    return get_task("localize")


def config_for(class_names, **head):
    return {"task": "localize", "class_names": list(class_names), "num_classes": len(class_names),
            "head": HeadShape(**head).to_dict()}


# --- pipeline --------------------------------------------------------------------------------
def test_augmented_target_box_frames_the_drawn_rectangle(tmp_path):
    # Non-square images of different shapes, boxes near the edges, several epochs of augmentation.
    shapes = [(120, 200, (10, 30, 90, 100)), (200, 150, (60, 5, 145, 80)), (90, 90, (0, 0, 40, 70))]
    targets, paths = [], []
    for i, (h, w, box) in enumerate(shapes):
        paths.append(str(tmp_path / f"img{i}.png"))
        targets.append(draw_png(paths[-1], h, w, box))
    samples = Samples(tuple(paths), tuple(targets), ("thing",))
    ds = make_box_dataset(samples, 64, 3, training=True, augment=("flip", "zoom"), seed=3, cache="memory")
    seen = 0
    for _ in range(4):  # new random views each epoch
        images, y = next(iter(ds))
        assert images.dtype == tf.uint8 and images.shape == (3, 64, 64, 3)
        assert set(y) == {"box"} and y["box"].shape == (3, 4) and y["box"].dtype == tf.float32
        for image, box in zip(images.numpy(), y["box"].numpy()):
            assert iou(box * 64, bright_box(image)) >= 0.85, (box * 64, bright_box(image))
            seen += 1
    assert seen == 12


def test_evaluation_pipeline_is_plain_and_in_order(tmp_path):
    paths, targets = [], []
    for i, box in enumerate([(0, 0, 32, 32), (40, 10, 90, 60)]):
        paths.append(str(tmp_path / f"{i}.png"))
        targets.append(draw_png(paths[-1], 100, 100, box))
    samples = Samples(tuple(paths), tuple(targets), ("thing",))
    images, y = next(iter(make_box_dataset(samples, 50, 8, training=False, cache="none")))
    np.testing.assert_allclose(y["box"].numpy(), [[0, 0, 0.32, 0.32], [0.4, 0.1, 0.9, 0.6]], atol=1e-6)
    for image, box in zip(images.numpy(), y["box"].numpy()):
        assert iou(box * 50, bright_box(image)) >= 0.9


def test_largest_box_rule_and_count(tmp_path):
    two = Boxes(((0, 0, 10, 10), (5, 5, 60, 45), (0, 0, 20, 20)), (0, 1, 0), 100, 80)
    one = Boxes(((1, 2, 3, 4),), (1,), 10, 10)
    assert largest_box(two) == ((5, 5, 60, 45), 1)
    samples = Samples(("a.png", "b.png"), (two, one), ("cat", "dog"))
    assert several_boxes(samples) == 1
    boxes, labels = box_arrays(samples, max_boxes=2)
    np.testing.assert_array_equal(boxes[0], [[5, 5, 60, 45], [0, 0, 20, 20]])
    np.testing.assert_array_equal(labels, [[1, 0], [1, -1]])
    # The pipeline's target is that largest box, its class one-hot.
    path = tmp_path / "two.png"
    Image.fromarray(np.zeros((80, 100, 3), np.uint8)).save(path)
    ds = make_box_dataset(Samples((str(path),), (two,), ("cat", "dog")), 20, 1, training=False, cache="none")
    _, y = next(iter(ds))
    np.testing.assert_allclose(y["box"].numpy(), [[0.05, 5 / 80, 0.6, 45 / 80]], atol=1e-6)
    np.testing.assert_array_equal(y["class"].numpy(), [[0, 1]])


def test_recipe_augment_names_map_to_the_box_augmenter():
    from transfer.data.pipelines.boxes import box_augmenter

    assert box_augmenter(()) is None
    flip_only = box_augmenter(("flip",))
    assert flip_only.flip and not flip_only.color and flip_only.scale_range == (1.0, 1.0)
    assert flip_only.translate == 0.0 and flip_only.keep_all_boxes
    every = box_augmenter(("flip", "zoom", "color"))
    assert every.color and every.scale_range == (0.75, 1.33) and every.translate == 0.1
    with pytest.raises(TransferError, match="rotate"):
        box_augmenter(("rotate",))


def test_image_without_box_is_refused_naming_it():
    samples = Samples(("empty.jpg",), (Boxes((), (), 10, 10),), ("thing",))
    with pytest.raises(TransferError, match="empty.jpg"):
        make_box_dataset(samples, 32, 1, training=False)


# --- model and objective ---------------------------------------------------------------------
@pytest.mark.parametrize("backbone, size", [("mobilenet_0.25", 64), ("resnet50", 64), ("smallcnn", 64)])
def test_model_outputs_and_head_layers(backbone, size):
    from transfer.backbones.nesting import BACKBONE_LAYER
    from transfer.engine.freezing import set_trainable

    spec = get_backbone(backbone)
    for classes in (("a",), ("a", "b", "c")):
        model, _ = task().build_model(spec, config_for(classes), size, None, Recipe())
        images = np.random.default_rng(0).integers(0, 256, (2, size, size, 3), dtype=np.uint8)
        out = model(images, training=False)
        assert set(out) == ({"box"} if len(classes) == 1 else {"box", "class"})
        assert out["box"].shape == (2, 4) and out["box"].dtype == "float32"
        if len(classes) > 1:
            assert out["class"].shape == (2, 3)
            np.testing.assert_allclose(np.sum(out["class"], axis=-1), 1.0, atol=1e-5)
    # The engine's freezing: everything outside the backbone is head, and trains in a head stage.
    set_trainable(model, spec, Stage("head", "head"))
    head = [layer for layer in model.layers if layer.name not in (BACKBONE_LAYER, "image", "preprocess")]
    assert not model.get_layer(BACKBONE_LAYER).trainable
    assert all(layer.trainable for layer in head)
    count = lambda weights: sum(int(np.prod(w.shape)) for w in weights)  # noqa: E731
    assert count(model.trainable_weights) == count([w for layer in head for w in layer.weights])


@pytest.mark.parametrize("pooling", ["flatten", "average", "softargmax"])
def test_every_head_builds_at_an_odd_size_and_reloads(pooling, tmp_path):
    # 200 px: stride 16 gives 13x13, stride 32 gives 7x7 (not 2x its size): the fusion must cope.
    model, _ = build_localizer(get_backbone("mobilenet_0.25"), 2, 200, None,
                               head=HeadShape(pooling=pooling, channels=8, hidden=8))
    images = np.random.default_rng(2).integers(0, 256, (1, 200, 200, 3), dtype=np.uint8)
    out = model(images)
    assert out["box"].shape == (1, 4) and out["class"].shape == (1, 2)
    model.save(tmp_path / "model.keras")
    again = keras.saving.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(again(images)["box"], out["box"], atol=1e-6)


@pytest.mark.parametrize("pooling", ["flatten", "softargmax"])
def test_outputs_stay_float32_under_mixed_precision(pooling):
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model, _ = build_localizer(get_backbone("smallcnn"), 3, 64, None, head=HeadShape(pooling=pooling))
        out = model(np.zeros((1, 64, 64, 3), np.uint8))
    finally:
        keras.mixed_precision.set_global_policy(previous)
    assert model.get_layer("box_hidden" if pooling == "flatten" else "box_mix").compute_dtype == "float16"
    assert out["box"].dtype == "float32" and out["class"].dtype == "float32"


def test_untrained_model_starts_at_the_middle_box():
    for pooling in ("flatten", "softargmax"):
        model, _ = build_localizer(get_backbone("smallcnn"), 1, 64, None, head=HeadShape(pooling=pooling))
        out = model(np.zeros((1, 64, 64, 3), np.uint8))["box"].numpy()
        np.testing.assert_allclose(out, [[0.25, 0.25, 0.75, 0.75]], atol=1e-3)


def test_box_loss_and_metrics_values():
    target = tf.constant([[0.0, 0.0, 0.5, 0.5]])
    assert float(BoxLoss()(target, target)) == pytest.approx(0.0, abs=1e-6)
    shifted = tf.constant([[0.25, 0.0, 0.75, 0.5]])  # IoU 1/3, GIoU 1/3, L1 0.5
    assert float(BoxLoss()(target, shifted)) == pytest.approx((1 - 1 / 3) + 2.5 * 0.5, abs=1e-5)
    metric, at50 = BoxIoU(), BoxIoU(threshold=0.5)
    for m in (metric, at50):
        m.update_state(tf.concat([target, target], 0), tf.concat([target, shifted], 0))
    assert float(metric.result()) == pytest.approx((1 + 1 / 3) / 2, abs=1e-5)
    assert float(at50.result()) == pytest.approx(0.5)
    assert keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(BoxLoss("ciou"))).kind == "ciou"


def test_loss_decreases_on_a_tiny_set(tmp_path):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    paths, targets = [], []
    for i in range(8):
        x0, y0 = rng.integers(0, 30, 2)
        w, h = rng.integers(15, 34, 2)
        paths.append(str(tmp_path / f"{i}.png"))
        targets.append(draw_png(paths[-1], 64, 64, (x0, y0, x0 + w, y0 + h)))
    samples = Samples(tuple(paths), tuple(targets), ("thing",))
    config, recipe = config_for(("thing",), channels=16, hidden=32), Recipe(augment=())
    localize = task()
    model, _ = localize.build_model(get_backbone("smallcnn"), config, 64, None, recipe)
    objective = localize.objective(config, recipe)
    model.compile(keras.optimizers.Adam(3e-3), loss=objective.loss, metrics=objective.metrics)
    ds = localize.make_dataset(samples, 64, 8, training=True, recipe=recipe, cache="memory", config=config)
    history = model.fit(ds, epochs=12, verbose=0).history
    assert history["loss"][-1] < 0.7 * history["loss"][0]
    assert "iou" in history  # the monitor's name without the val_ prefix
    assert objective.monitor == "val_iou" and objective.mode == "max"


def test_monitor_is_the_logged_name_with_several_classes(tmp_path):
    localize = task()
    config, recipe = config_for(("a", "b"), channels=8, hidden=8), Recipe(augment=())
    samples = Samples((str(tmp_path / "a.png"), str(tmp_path / "b.png")),
                      (draw_png(tmp_path / "a.png", 40, 40, (0, 0, 20, 20)),
                       Boxes(((5.0, 5.0, 30.0, 30.0),), (1,), 40, 40)), ("a", "b"))
    draw_png(tmp_path / "b.png", 40, 40, (5, 5, 30, 30))
    model, _ = localize.build_model(get_backbone("smallcnn"), config, 32, None, recipe)
    objective = localize.objective(config, recipe)
    model.compile("adam", loss=objective.loss, metrics=objective.metrics)
    ds = localize.make_dataset(samples, 32, 2, training=False, recipe=recipe, cache="none", config=config)
    logged = model.fit(ds, validation_data=ds, epochs=1, verbose=0).history
    assert objective.monitor in logged and "val_class_accuracy" in logged


# --- evaluation ------------------------------------------------------------------------------
def eval_samples(class_names=("thing",)):
    targets = (Boxes(((0.0, 0.0, 50.0, 50.0),), (0,), 100, 100),
               Boxes(((20.0, 10.0, 220.0, 110.0), (0.0, 0.0, 5.0, 5.0)), (len(class_names) - 1, 0), 400, 200))
    return Samples(("a.jpg", "b.jpg"), targets, tuple(class_names))


def test_evaluation_figures_on_hand_made_predictions(tmp_path):
    samples = eval_samples()
    perfect = np.array([[0, 0, 0.5, 0.5], [20 / 400, 10 / 200, 220 / 400, 110 / 200]])
    report = compute_localize_report(samples, perfect)
    assert report.mean_iou == pytest.approx(1.0) and report.iou50_accuracy == 1.0
    # The first box moved right by half its width: IoU 1/3; the second stays perfect.
    shifted = perfect + [[0.25, 0, 0.25, 0], [0, 0, 0, 0]]
    report = compute_localize_report(samples, shifted)
    assert report.ious[0] == pytest.approx(1 / 3)
    assert report.mean_iou == pytest.approx((1 / 3 + 1) / 2) and report.iou50_accuracy == 0.5
    summary = report.summary()
    assert set(summary) == {"mean_iou", "iou50_accuracy", "num_images", "worst"}
    assert summary["worst"][0] == {"file": "a.jpg", "iou": round(1 / 3, 4)}
    assert report.headline() == ("mean IoU", pytest.approx(2 / 3))
    assert "a.jpg" in report.table()
    written = report.write(tmp_path / "eval")
    assert json.loads(written["metrics"].read_text())["num_images"] == 2
    assert written["iou_histogram"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_class_accuracy_with_several_classes():
    samples = eval_samples(("cat", "dog"))
    boxes = np.array([[0, 0, 0.5, 0.5], [0, 0, 0.1, 0.1]])
    report = compute_localize_report(samples, boxes, predicted_classes=np.array([0, 0]))  # second is a dog
    assert report.summary()["class_accuracy"] == 0.5
    assert set(report.summary()) == {"mean_iou", "iou50_accuracy", "class_accuracy", "num_images", "worst"}


# --- serving ---------------------------------------------------------------------------------
def test_postprocess_maps_boxes_to_original_pixels_in_a_tf_function():
    localize = task()
    config = config_for(("cat", "dog"), channels=8, hidden=8)
    model, _ = localize.build_model(get_backbone("smallcnn"), config, 32, None, Recipe())

    @tf.function
    def serve(images, sizes):
        return model(images, training=False), localize.postprocess(model(images, training=False), sizes, 32, config)

    images = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    sizes = tf.constant([[100, 300], [480, 64]], tf.int32)  # (height, width): other sizes and aspect ratios
    raw, served = serve(images, sizes)
    expected = np.clip(raw["box"].numpy(), 0, 1) * [[300, 100, 300, 100], [64, 480, 64, 480]]
    np.testing.assert_allclose(served["box"].numpy(), expected, rtol=1e-5, atol=1e-3)
    best = np.argmax(raw["class"].numpy(), axis=-1)
    assert [n.decode() for n in served["class_name"].numpy()] == [("cat", "dog")[i] for i in best]
    np.testing.assert_allclose(served["score"].numpy(), raw["class"].numpy().max(-1), rtol=1e-6)
    assert localize.parity_error({k: v.numpy() for k, v in raw.items()},
                                 {k: v.numpy() for k, v in served.items()}, 32, {}) < 1e-6


def test_postprocess_single_class_and_known_box():
    raw = {"box": tf.constant([[0.25, 0.5, 0.75, 1.2]])}
    out = task().postprocess(raw, tf.constant([[100, 200]]), 64, config_for(("raccoon",)))
    np.testing.assert_allclose(out["box"].numpy(), [[50, 50, 150, 100]], atol=1e-4)  # clipped to the image
    np.testing.assert_allclose(out["box_normalized"].numpy(), [[0.25, 0.5, 0.75, 1.0]])
    assert out["class_name"].numpy().tolist() == [b"raccoon"] and out["score"].numpy().tolist() == [1.0]
    assert set(task().serving_outputs({})) == {"box", "box_normalized", "class_name", "score"}


# --- task plumbing ---------------------------------------------------------------------------
def test_target_json_round_trip():
    target = Boxes(((1.5, 2.0, 30.0, 40.25), (0.0, 0.0, 5.0, 5.0)), (1, 0), 64, 48)
    as_json = json.loads(json.dumps(task().target_to_json(target)))
    assert task().target_from_json(as_json, {}) == target


@pytest.mark.parametrize("recipe, message", [
    (Recipe(augment=("flip", "rotate")), "rotate"),
    (Recipe(class_weight="balanced"), "class_weight"),
])
def test_check_recipe_refusals(recipe, message):
    with pytest.raises(TransferError, match=message):
        task().check_recipe(recipe)


def test_default_recipe_is_accepted_and_needs_no_feature_cache():
    recipe = task().default_recipe()
    task().check_recipe(recipe)
    task().check_recipe(Recipe(label_smoothing=0.1, augment=("flip", "zoom", "color")))
    assert recipe.head_cache_views == 0 and not task().uses_feature_cache
    size = task().default_image_size(get_backbone("mobilenet_0.25"))
    assert size > 224 and size % 32 == 0  # measured: larger inputs localize better


def test_run_config_counts_images_with_several_boxes():
    train = eval_samples()
    split = DataSplit(train, train.subset([0]))
    config = task().run_config(split, Recipe())
    assert config["num_classes"] == 1 and config["resize"] == "stretch"
    assert config["images_with_several_boxes"] == {"train": 1, "val": 0}
    assert "1 train images have 2+ boxes" in task().training_notes(split, config)[0]


def test_evaluation_samples_refuse_unknown_classes(tmp_path):
    draw_png(tmp_path / "a.png", 50, 60, (5, 5, 40, 40))
    csv = tmp_path / "boxes.csv"
    csv.write_text("filename,width,height,class,xmin,ymin,xmax,ymax\na.png,60,50,zebra,5,5,40,40\n")
    with pytest.raises(TransferError, match="zebra"):
        task().evaluation_samples(str(csv), {"class_names": ["raccoon"]})
    csv.write_text("filename,width,height,class,xmin,ymin,xmax,ymax\na.png,60,50,dog,5,5,40,40\n")
    samples = task().evaluation_samples(str(csv), {"class_names": ["cat", "dog"]})
    assert samples.class_names == ("cat", "dog") and samples.targets[0].labels == (1,)


def test_raccoon_data_and_notes(fixtures_dir):
    raccoon = require_fixture(fixtures_dir / "raccoon")
    lines = []
    data = task().load_data(str(raccoon / "train_labels.csv"), val_source=str(raccoon / "test_labels.csv"),
                            echo=lines.append)
    assert (len(data.train), len(data.val)) == (160, 40)
    assert sum(len(t) for t in data.train.targets) == 173
    description = task().describe_data(data)
    assert "160 train / 40 val" in description and "173 train boxes" in description
    assert "test_labels.csv" in description  # where validation came from


# --- export and predict ----------------------------------------------------------------------
def known_box_localizer(class_names):
    """A small localizer whose box is fixed at normalized (0.2, 0.4, 0.4, 0.8) whatever the image."""
    localize = task()
    config = config_for(class_names, channels=8, hidden=8, pooling="flatten")
    model, _ = localize.build_model(get_backbone("smallcnn"), config, 32, None, Recipe())
    model.get_layer("box_center").set_weights([np.zeros((8, 2), np.float32), np.array([0.3, 0.6], np.float32)])
    model.get_layer("box_size").set_weights([np.zeros((8, 2), np.float32), np.array([0.2, 0.4], np.float32)])
    return model, config


def test_export_in_a_fresh_interpreter_answers_original_pixels(tmp_path):
    import subprocess
    import sys

    from transfer.serving.export import export_model
    from transfer.tasks.localize.reader import ExportedLocalizer, draw_box

    model, config = known_box_localizer(("raccoon",))
    export_dir = export_model(model, tmp_path / "export", class_names=config["class_names"], image_size=32,
                              task="localize", task_config=config)
    image = tmp_path / "wide.png"
    Image.fromarray(np.full((100, 300, 3), 90, np.uint8)).save(image)  # 3:1, not the 32x32 input
    code = ("import json, sys; from transfer.tasks.localize.reader import ExportedLocalizer; "
            "print(json.dumps(ExportedLocalizer.load(sys.argv[1]).predict_files(sys.argv[2:])))")
    done = subprocess.run([sys.executable, "-c", code, str(export_dir), str(image), str(tmp_path / "no.png")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    good, bad = json.loads(done.stdout.strip().splitlines()[-1])
    assert good["box"] == pytest.approx([60.0, 40.0, 120.0, 80.0], abs=0.01)  # (0.2, 0.4, 0.4, 0.8) of 300x100
    assert good["class"] == "raccoon" and good["score"] == 1.0
    assert bad["file"].endswith("no.png") and "not found" in bad["error"]
    drawn = draw_box(image, good, tmp_path / "drawn" / "wide.jpg")
    with Image.open(drawn) as picture:
        assert picture.size == (300, 100) and picture.format == "JPEG"
        assert np.asarray(picture)[60, 60, 0] > 200  # the red left edge of the box
    with pytest.raises(TransferError, match="no.png"):
        draw_box(tmp_path / "no.png", bad, tmp_path / "drawn" / "no.png")
    localizer = ExportedLocalizer.load(export_dir)
    assert localizer.predict_bytes([image.read_bytes()])["box"].shape == (1, 4)
    with pytest.raises(TransferError, match="position"):
        localizer.predict_bytes([b"not an image"])


def test_classification_export_is_not_a_localizer(tmp_path):
    from transfer.serving.export import export_model
    from transfer.tasks.localize.reader import ExportedLocalizer
    from transfer.tasks.classify.model import build_classifier

    model, _ = build_classifier(get_backbone("smallcnn"), 2, 32, weights=None)
    export_dir = export_model(model, tmp_path / "clf", class_names=["a", "b"], image_size=32)
    with pytest.raises(TransferError, match="not a localizer"):
        ExportedLocalizer.load(export_dir)
