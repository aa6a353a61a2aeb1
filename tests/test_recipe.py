"""Recipe and Stage: defaults, TOML round trip, validation that names the key."""

import pytest

from transfer.errors import TransferError
from transfer.recipe import Recipe, Stage


def test_default_recipe_trains_head_then_top_of_backbone():
    recipe = Recipe()
    assert [s.trainable for s in recipe.stages] == ["head", "top:4"]
    assert recipe.stages[1].learning_rate < recipe.stages[0].learning_rate
    assert recipe.total_epochs == 10


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
