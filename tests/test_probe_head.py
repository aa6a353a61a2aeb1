"""A small training set's head, fit as a cross-validated logistic regression (issue 24,
``transfer.tasks.classify.probe_head``): the classifier's own "scores" layer gives scikit-learn's
probabilities (the standardization folded in, two classes as a softmax pair), the recipe's head
stages become one fitted epoch on 60 to ``small_data_max_images`` single-label images, and a real
run records it.
"""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegressionCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from transfer.core.recipe import Recipe, Stage
from transfer.tasks.classify.probe_head import C_GRID, _loss_scale, fit_probe_head, probe_head_recipe


def _scores_model(dims: int, classes: int):
    features = keras.Input((dims,))
    return keras.Model(features, keras.layers.Dense(classes, activation="softmax", name="scores")(features))


def _blobs(classes: int, per_class: int, dims: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 1.5, (classes, dims))
    x = np.concatenate([centers[c] * rng.uniform(0.5, 3, dims) + rng.normal(0, 2, (per_class, dims)) + 7
                        for c in range(classes)])
    return x.astype("float32"), np.repeat(np.arange(classes), per_class)


@pytest.mark.parametrize("classes", [2, 4])
def test_the_scores_layer_gives_the_regressions_probabilities(classes):
    x, y = _blobs(classes, 30)
    model = _scores_model(x.shape[1], classes)
    info = fit_probe_head(model, x, y, num_classes=classes)
    reference = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=list(C_GRID), cv=5, max_iter=3000,
                                                                     scoring="accuracy")).fit(x, y)
    assert info["C"] == pytest.approx(reference[-1].C_[0]) and info["folds"] == 5
    np.testing.assert_allclose(model.predict(x, verbose=0), reference.predict_proba(x), atol=2e-4)
    assert (model.predict(x, verbose=0).argmax(1) == reference.predict(x)).all()


def test_label_smoothing_shrinks_confident_logits_only():
    labels = np.repeat(np.arange(3), 10)
    confident = 20.0 * np.eye(3)[labels]
    assert _loss_scale(confident, labels, 3, 0.0) == 1.0  # never scaled up
    scale = _loss_scale(confident, labels, 3, 0.1)
    assert scale < 1.0
    smoothed = np.eye(3)[labels] * 0.9 + 0.1 / 3

    def loss(logits):
        z = logits - logits.max(1, keepdims=True)
        return -(smoothed * (z - np.log(np.exp(z).sum(1, keepdims=True)))).sum(1).mean()

    assert loss(confident * scale) < loss(confident) and loss(confident * scale) <= loss(confident * scale * 1.2)


def test_a_smoothed_head_predicts_as_the_regression_does():
    x, y = _blobs(4, 30, seed=2)
    model = _scores_model(x.shape[1], 4)
    info = fit_probe_head(model, x, y, num_classes=4, label_smoothing=0.1)
    reference = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=list(C_GRID), cv=5, max_iter=3000,
                                                                     scoring="accuracy")).fit(x, y)
    assert 0.001 <= info["logit_scale"] <= 1.0
    assert (model.predict(x, verbose=0).argmax(1) == reference.predict(x)).all()


def test_balanced_class_weight_and_few_images_a_class():
    x, y = _blobs(3, 30)
    keep = np.r_[0:30, 30:60, 60:63]  # the third class has 3 images: 3 folds
    model = _scores_model(x.shape[1], 3)
    info = fit_probe_head(model, x[keep], y[keep], num_classes=3, balanced=True)
    assert info["folds"] == 3 and 0 <= info["cv_accuracy"] <= 1


def test_the_recipe_fits_its_leading_head_stages_on_60_to_small_data_max_images():
    labels = [0, 1, 2] * 40
    recipe, lines = probe_head_recipe(Recipe(), labels, 3, False)
    assert [(s.name, s.epochs, s.min_steps) for s in recipe.stages] == [("head", 1, 0), ("finetune", 8, 0)]
    assert lines and "120 training images" in lines[0] and "logistic regression" in lines[0]
    for kept in (probe_head_recipe(Recipe(), labels[:59], 3, False),           # too few images
                 probe_head_recipe(Recipe(small_data_max_images=100), labels, 3, False),  # too many
                 probe_head_recipe(Recipe(), labels, 3, True),                # multi-label
                 probe_head_recipe(Recipe(head_cache_views=0), labels, 3, False),  # no cached features
                 probe_head_recipe(Recipe(), [0] * 119 + [1], 2, False),     # a class of one image
                 probe_head_recipe(Recipe(stages=(Stage("ft", "all"),)), labels, 3, False)):  # no head stage
        assert kept[1] == []
    assert kept[0] == Recipe(stages=(Stage("ft", "all"),))


@pytest.mark.slow  # two real trainings (the run and its fine-tune check), ~30 s
def test_a_real_run_records_the_fitted_head(head_only_run):
    run, output = head_only_run
    config = json.loads((run / "run.json").read_text())
    assert config["head_fit"] == "logistic_regression"
    assert "Head fit as a logistic regression: C = " in output
    assert [(s["stage"], s["epochs"]) for s in config["stages"]] == [("head", 1)]
    assert Recipe.load(run / "recipe.toml").stages[0].epochs == 1


from tests.test_stage_choice import head_only_run  # noqa: E402,F401  (the module's real run, shared)
