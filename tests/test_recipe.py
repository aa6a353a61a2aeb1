"""Recipe and Stage: defaults, TOML round trip, validation that names the key."""

import pytest

from transfer.core.errors import TransferError
from transfer.core.recipe import Recipe, Stage


def test_default_recipe_is_linear_probe_then_full_finetune():
    recipe = Recipe()
    assert [(s.trainable, s.learning_rate, s.epochs) for s in recipe.stages] == [("head", 3e-3, 30), ("all", 1e-3, 8)]
    assert recipe.stages[1].backbone_lr_scale == 0.3 and recipe.ema_epochs == 1.0
    assert (recipe.optimizer, recipe.weight_decay, recipe.label_smoothing) == ("adamw", 0.05, 0.1)
    assert (recipe.head_cache_views, recipe.warmup_epochs) == (1, 1.0)


@pytest.mark.parametrize("toml, key", [("head_cache_views = -1", "head_cache_views"),
                                        ("head_cache_views = 1.5", "head_cache_views"),
                                        ("warmup_epochs = -0.5", "warmup_epochs"),
                                        ('warmup_epochs = "1"', "warmup_epochs")])
def test_engine_fields_are_validated(toml, key):
    with pytest.raises(TransferError, match=key):
        Recipe.from_toml(toml)


def test_toml_round_trip_is_exact(tmp_path):
    recipe = Recipe(
        stages=(Stage("warm", "head", 3e-3, 2), Stage("mid", "from:conv5_block1", 1e-4, 3, patience=2),
                Stage("all", "all", 1e-5, 7)),
        batch_size=8, dropout=0.3, label_smoothing=0.1, optimizer="adamw", weight_decay=1e-4,
        augment=("flip", "color"), class_weight="balanced", seed=42,
    )
    path = tmp_path / "r.toml"
    recipe.save(path)
    assert Recipe.load(path) == recipe
    assert "[[stages]]" in path.read_text()


def test_partial_toml_keeps_defaults():
    recipe = Recipe.from_toml('batch_size = 4\n[[stages]]\nname = "only"\ntrainable = "top:2"\n')
    assert recipe.batch_size == 4
    assert recipe.stages == (Stage("only", "top:2"),)
    assert recipe.stages[0].top_blocks == 2


def test_with_epochs_sets_every_stage():
    recipe = Recipe().with_epochs(3)
    assert [s.epochs for s in recipe.stages] == [3, 3]


def test_with_epochs_drops_the_step_floor():
    recipe = Recipe(stages=(Stage("all", "all", epochs=30, min_steps=600),)).with_epochs(3)
    assert recipe.stages[0].min_steps == 0
    assert recipe.with_step_floor(1) == (recipe, [])  # --epochs 3 means 3, however few the steps


def test_step_floor_raises_epochs_of_small_sets_and_says_so():
    recipe = Recipe(stages=(Stage("head", "head", epochs=5), Stage("tune", "all", epochs=30, min_steps=600),
                            Stage("off", "all", epochs=0, min_steps=600)), batch_size=8)
    raised, notes = recipe.with_step_floor(4)   # 25-32 images at batch 8
    assert [s.epochs for s in raised.stages] == [5, 150, 0]  # ceil(600 / 4); a stage of 0 epochs stays off
    assert raised.stages[0] == recipe.stages[0] and raised.batch_size == 8
    assert notes == ["Stage 'tune': 150 epochs instead of 30, to train at least min_steps = 600 optimizer steps "
                     "at 4 per epoch (a small training set); --epochs N sets exact epochs."]
    assert raised.with_step_floor(4) == (raised, [])  # idempotent: a resumed run reloads the raised recipe
    assert recipe.with_step_floor(7)[0].stages[1].epochs == 86  # ceil(600 / 7)
    assert recipe.with_step_floor(20) == (recipe, [])  # 30 epochs of 20 steps already give 600


def test_min_steps_round_trips_and_is_validated(tmp_path):
    recipe = Recipe(stages=(Stage("tune", "all", epochs=3, min_steps=250),))
    recipe.save(tmp_path / "r.toml")
    assert Recipe.load(tmp_path / "r.toml") == recipe
    with pytest.raises(TransferError, match="min_steps"):
        Recipe.from_toml('[[stages]]\nname = "a"\nmin_steps = -5')
    with pytest.raises(TransferError, match="min_steps"):
        Recipe.from_toml('[[stages]]\nname = "a"\nmin_steps = 2.5')


@pytest.mark.parametrize(
    "text, needle",
    [
        ("batchsize = 4", "batchsize"),
        ('[[stages]]\nname = "a"\nlr = 0.1', "lr"),
        ('[[stages]]\nname = "a"\ntrainable = "top:0"', "top:0"),
        ('[[stages]]\nname = "a"\ntrainable = "backbone"', "backbone"),
        ('[[stages]]\nname = "a"\nlearning_rate = -1.0', "learning_rate"),
        ('[[stages]]\nname = "a"\nepochs = "5"', "epochs"),
        ('[[stages]]\ntrainable = "all"', "no name"),
        ("optimizer = 'rmsprop'", "optimizer"),
        ("augment = ['mixup']", "mixup"),
        ("batch_size = 'big'", "batch_size"),
        ("batch_size = [", "not valid TOML"),
        ("stages = []", "no stages"),
        ('[[stages]]\nname = "a"\npatience = -1', "patience"),
        ("class_weight = 'auto'", "class_weight"),
    ],
)
def test_bad_recipes_name_the_problem(text, needle):
    with pytest.raises(TransferError) as info:
        Recipe.from_toml(text, origin="my.toml")
    assert needle in str(info.value)


def test_missing_recipe_file_names_it(tmp_path):
    with pytest.raises(TransferError, match="nope.toml"):
        Recipe.load(tmp_path / "nope.toml")


def test_stage_index_by_name_case_or_number():
    recipe = Recipe()
    assert [recipe.stage_index(r) for r in (None, "finetune", "FineTune", "2", " 1")] == [0, 1, 1, 1, 0]
    with pytest.raises(TransferError, match=r"no stage '3'; its stages are 1 'head', 2 'finetune'"):
        recipe.stage_index("3")
