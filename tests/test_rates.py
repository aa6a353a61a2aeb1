"""Per-layer learning rates (transfer.engine.rates) and the weight average (EMA) settings."""


import keras
import numpy as np
import pytest

from tests.modelfactory import pretrained_like_classifier
from transfer.backbones import get_backbone
from transfer.core.errors import TransferError
from transfer.engine.rates import ScaledAdamW, bind_rate_scales, rate_scales
from transfer.core.recipe import Recipe, Stage
from transfer.engine.schedules import make_optimizer
from transfer.engine.schedules import ema_momentum


def _two_dense():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(3, name="low")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="top")(hidden))
    return model


def _one_step(model, optimizer, scales):
    model.compile(optimizer=optimizer, loss="mse")
    bind_rate_scales(model, scales)
    before = [w.copy() for w in model.get_weights()]
    x, y = np.ones((8, 4), "float32"), np.zeros((8, 2), "float32")
    model.train_on_batch(x, y)
    return [after - b for after, b in zip(model.get_weights(), before)]


@pytest.mark.parametrize("weight_decay", [0.0, 0.5])
def test_a_scaled_layer_moves_by_its_fraction_of_the_step(weight_decay):
    plain = _one_step(_two_dense(), make_optimizer("adamw", 1e-2, weight_decay=weight_decay), {})
    model = _two_dense()
    low = {id(v): 0.1 for v in model.get_layer("low").weights}
    scaled = _one_step(model, make_optimizer("adamw", 1e-2, weight_decay=weight_decay, per_layer_rates=True), low)
    # low kernel, low bias: a tenth of the plain step (Adam's first step is ~lr per weight; decay scales too)
    for plain_delta, scaled_delta in zip(plain[:2], scaled[:2]):
        np.testing.assert_allclose(scaled_delta, 0.1 * plain_delta, rtol=1e-4, atol=1e-9)
        assert np.abs(plain_delta).max() > 1e-3
    for plain_delta, scaled_delta in zip(plain[2:], scaled[2:]):  # the top layer trains at the full rate
        np.testing.assert_allclose(scaled_delta, plain_delta, rtol=1e-5)


def test_scales_need_a_scaled_optimizer():
    model = _two_dense()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    with pytest.raises(TypeError, match="Scaled"):
        bind_rate_scales(model, {id(model.get_layer("low").kernel): 0.1})


def test_backbone_scale_and_layer_decay_follow_the_blocks():
    model = pretrained_like_classifier()
    spec = get_backbone("mobilenet_0.25")
    stage = Stage("ft", "all", 1e-3, 1, backbone_lr_scale=0.2, layer_decay=0.5)
    scales = rate_scales(model, spec, stage)
    backbone = model.get_layer("backbone")
    blocks = spec.blocks(backbone)
    top = backbone.get_layer(blocks[-1][-1] if backbone.get_layer(blocks[-1][-1]).weights else blocks[-1][0])
    bottom = next(backbone.get_layer(n) for n in blocks[0] if backbone.get_layer(n).weights)
    assert {scales[id(v)] for v in top.weights} == {0.2}
    assert [scales[id(v)] for v in bottom.weights] == pytest.approx([0.2 * 0.5 ** (len(blocks) - 1)] * len(bottom.weights))
    assert all(id(v) not in scales for v in model.get_layer("scores").weights)  # the head: full rate
    assert rate_scales(model, spec, Stage("ft", "all")) == {}


def test_a_scaled_optimizer_survives_a_checkpoint(tmp_path):
    model = _two_dense()
    model.compile(optimizer=make_optimizer("adamw", 1e-3, weight_decay=0.1, per_layer_rates=True,
                                           ema_momentum=0.9), loss="mse")
    model.train_on_batch(np.ones((2, 4), "float32"), np.zeros((2, 2), "float32"))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert isinstance(loaded.optimizer, ScaledAdamW) and loaded.optimizer.use_ema
    bind_rate_scales(loaded, {id(v): 0.5 for v in loaded.get_layer("low").weights})
    assert len(loaded.optimizer._rate_scales) == 2


def test_recipe_fields_are_checked_and_round_trip():
    recipe = Recipe(stages=(Stage("h", "head", 1e-3, 2), Stage("f", "all", 1e-3, 2, backbone_lr_scale=0.1,
                                                               layer_decay=0.8)), ema_epochs=1.5)
    assert Recipe.from_toml(recipe.to_toml()) == recipe

    with pytest.raises(TransferError, match="backbone_lr_scale"):
        Stage("f", "all", backbone_lr_scale=0)
    with pytest.raises(TransferError, match="layer_decay"):
        Stage("f", "all", layer_decay=1.5)
    with pytest.raises(TransferError, match="ema_epochs"):
        Recipe(ema_epochs=-1)


def test_ema_momentum_spans_the_epochs_asked_for():
    assert ema_momentum(0, 100) is None
    assert ema_momentum(1.0, 100) == pytest.approx(0.99)
    assert ema_momentum(2.0, 20) == pytest.approx(0.975)


def test_ema_spans_at_least_min_steps_on_a_small_training_set():
    from transfer.engine.schedules import averaged_epochs

    assert ema_momentum(averaged_epochs(Recipe(), 20), 20) == pytest.approx(0.99)  # 5 epochs of 20 steps
    assert ema_momentum(averaged_epochs(Recipe(), 200), 200) == pytest.approx(0.995)  # an epoch is more already
    # The floor never turns the average on.
    assert ema_momentum(averaged_epochs(Recipe(ema_epochs=0.0), 20), 20) is None
    assert averaged_epochs(Recipe(), 20) == pytest.approx(5.0) and averaged_epochs(Recipe(), 200) == 1.0
    assert averaged_epochs(Recipe(ema_epochs=0.0), 20) == 0.0
    for bad in (-1, 1.5, True):
        with pytest.raises(TransferError, match="ema_min_steps"):
            Recipe(ema_min_steps=bad)
