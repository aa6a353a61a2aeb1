"""A small training set's head: a logistic regression with its L2 strength cross-validated.

On a few hundred images the head stage trained by SGD on cached features
stopped wherever its epochs ran out: under a logistic regression fit on the
same features on most small-data panel seeds (``benchmarks/small_data_panel.py``),
and its validation accuracy swung by several images from epoch to epoch. So
on 60 to ``Recipe.small_data_max_images`` training images (single-label,
head on cached features) the head is fit once, the way a linear probe is:
standardized features, scikit-learn's ``LogisticRegressionCV`` with C chosen
by stratified 5-fold cross-validation on the training images, the
standardization folded into the classifier's own "scores" Dense layer. The
stage is then one epoch that moves no weight (its validation, checkpoint and
history row are the fitted head's), and the fine-tune starts from it.

Example:
    >>> info = fit_probe_head(model, features, labels, num_classes=5)
    >>> info["C"], info["folds"]
    (0.1, 5)
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import numpy as np

from transfer.core.recipe import Recipe

# The linear probe's grid (benchmarks/panel.py): 1e-4 ... 1e2.
C_GRID = tuple(float(c) for c in np.logspace(-4, 2, 7))
# 60: the fine-tune check (80 images and up) trains on three quarters of them, with this head too.
MIN_IMAGES = 60
HEAD_FIT = "logistic_regression"


def probe_head_recipe(recipe: Recipe, labels, num_classes: int, multi_label: bool) -> tuple[Recipe, list[str]]:
    """``recipe`` with its leading head-only stages set to the one fitted epoch, and the line saying
    so, when the set qualifies (see the module); else ``recipe`` unchanged and no line.

    Example:
        >>> probe_head_recipe(Recipe(), [0, 1] * 100, 2, False)[0].stages[0].epochs
        1
    """
    counts = np.bincount(np.asarray(labels, int), minlength=num_classes) if not multi_label else None
    if (multi_label or recipe.head_cache_views == 0 or not MIN_IMAGES <= len(labels) <= recipe.small_data_max_images
            or counts.min() < 2):
        return recipe, []
    stages = list(recipe.stages)
    fitted = []
    for index, stage in enumerate(stages):
        if stage.trainable != "head":
            break
        stages[index] = dataclasses.replace(stage, epochs=1, min_steps=0)
        fitted.append(stage.name)
    if not fitted:
        return recipe, []
    line = (f"Stage(s) {', '.join(map(repr, fitted))}: {len(labels)} training images ({MIN_IMAGES} to "
            f"small_data_max_images = "
            f"{recipe.small_data_max_images}), so the head is fit as a logistic regression on the cached features, "
            "its L2 strength by 5-fold cross-validation on the training images, and recorded as 1 epoch.")
    return dataclasses.replace(recipe, stages=tuple(stages)), [line]


def fit_probe_head(model, features: np.ndarray, labels, *, num_classes: int, balanced: bool = False,
                   seed: int = 0, label_smoothing: float = 0.0) -> dict[str, Any]:
    """Fit ``model``'s "scores" layer (softmax) as a cross-validated logistic regression on ``features``
    ``[N, D]`` (the plain view) and integer ``labels``; returns what was chosen.

    The logits are then scaled down (never up) to where the fine-tune's own loss, cross-entropy with
    ``label_smoothing``, is lowest on the training features: the same predictions, but a head that
    does not start the fine-tune by sending large gradients into the backbone to unlearn a
    confidence the smoothed targets forbid.

    Example:
        >>> fit_probe_head(model, feats, [0, 1, 2] * 40, num_classes=3)["folds"]
        5
    """
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(features, np.float64)
    y = np.asarray(labels, int)
    folds = int(max(2, min(5, np.bincount(y, minlength=num_classes).min())))
    scaler = StandardScaler().fit(x)
    regression = LogisticRegressionCV(Cs=list(C_GRID), cv=folds, max_iter=3000, scoring="accuracy",
                                      class_weight="balanced" if balanced else None, random_state=seed)
    with warnings.catch_warnings():
        # Newer scikit-learn announces changes to defaults this call does not rely on.
        warnings.simplefilter("ignore", FutureWarning)
        regression.fit(scaler.transform(x), y)
    weights, bias = _softmax_weights(regression.coef_, regression.intercept_, regression.classes_, num_classes)
    # Standardization folded in: w.(x - mean) / scale + b = (w / scale).x + (b - w.(mean / scale)).
    kernel = weights / scaler.scale_[:, None]
    bias = bias - (scaler.mean_ / scaler.scale_) @ weights
    scale = _loss_scale(x @ kernel + bias, y, num_classes, label_smoothing)
    kernel, bias = kernel * scale, bias * scale
    layer = model.get_layer("scores")
    layer.kernel.assign(kernel.astype("float32"))
    layer.bias.assign(bias.astype("float32"))
    return {"C": float(np.ravel(regression.C_)[0]), "folds": folds, "cv_accuracy": _cv_accuracy(regression.scores_),
            "logit_scale": scale}


def _loss_scale(logits: np.ndarray, labels: np.ndarray, num_classes: int, label_smoothing: float) -> float:
    """The factor in [0.001, 1] on ``logits`` that minimizes cross-entropy against the smoothed targets."""
    targets = np.eye(num_classes)[labels] * (1 - label_smoothing) + label_smoothing / num_classes
    scales = np.logspace(-3, 0, 61)
    losses = []
    for scale in scales:
        z = logits * scale
        z = z - z.max(axis=1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        losses.append(-(targets * log_p).sum(axis=1).mean())
    return float(scales[int(np.argmin(losses))])


def _cv_accuracy(scores) -> float:
    """The best C's mean accuracy over the folds (``scores_``: a dict by class, or the array itself)."""
    scores = next(iter(scores.values())) if isinstance(scores, dict) else np.asarray(scores)
    return float(np.max(np.mean(np.asarray(scores), axis=0)))


def _softmax_weights(coef, intercept, classes, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """A softmax layer's ``[D, C]`` kernel and ``[C]`` bias giving scikit-learn's probabilities.

    Two classes: scikit-learn fits one logit z for class 1; softmax over (-z/2, z/2) is sigmoid(z).
    """
    coef, intercept = np.asarray(coef, np.float64), np.asarray(intercept, np.float64)
    if len(classes) == 2:
        coef = np.concatenate([-coef / 2, coef / 2])
        intercept = np.concatenate([-intercept / 2, intercept / 2])
    kernel = np.zeros((coef.shape[1], num_classes))
    bias = np.full(num_classes, -1e4)  # a class the regression never saw is never predicted
    for row, label in enumerate(classes):
        kernel[:, label], bias[label] = coef[row], intercept[row]
    return kernel, bias
