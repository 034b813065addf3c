"""One recipe: TrainConfig's defaults are the service's and `modx simulate`'s, from one place."""

import json
from dataclasses import fields

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from service.cli import app
from service.settings import Settings
from service.trainer_worker import train_config
from trainer.config import TrainConfig


def test_the_service_default_recipe_is_the_trainconfig_default():
    assert Settings(_env_file=None).recipe == TrainConfig()


def test_the_default_is_the_mod_x_recipe_the_tuning_chose_and_the_paper_form_is_kept():
    from bench.continual import CHOSEN, RECIPES
    from trainer.config import PAPER_MODX

    default = TrainConfig()
    assert default.method == "modx" and default.experts and default.replay_fraction == 1.0
    assert TrainConfig(**RECIPES[CHOSEN]).canonical() == default.canonical()
    paper = TrainConfig(**PAPER_MODX)
    assert (paper.alpha, paper.temperature, paper.kl_reduction, paper.replay_fraction) == (20.0, 1.0, "sum", 0.0)
    assert not (paper.experts or paper.teacher_scale or paper.forgotten_only)


def test_recipe_fields_are_read_from_nested_variables(monkeypatch):
    monkeypatch.setenv("MODX_RECIPE__METHOD", "lwf")
    monkeypatch.setenv("MODX_RECIPE__ALPHA", "3.5")
    monkeypatch.setenv("MODX_RECIPE__EXPERT", "false")
    monkeypatch.setenv("MODX_RECIPE__EPOCHS", "3")
    monkeypatch.setenv("MODX_RECIPE__SEED", "3")
    monkeypatch.setenv("MODX_SEED", "7")
    s = Settings()
    assert (s.recipe.method, s.recipe.alpha, s.recipe.expert) == ("lwf", 3.5, False)  # none of them the default
    assert train_config(s).epochs == 3 and train_config(s).method == "lwf"  # the nested recipe is what trains
    assert train_config(s).seed == 7  # the host's MODX_SEED wins over the recipe's own
    monkeypatch.setenv("MODX_RECIPE__REPLAY_POLICY", "lottery")
    with pytest.raises(ValidationError, match="replay_policy"):
        Settings()


def test_simulate_offers_every_recipe_field_with_its_default(tmp_path):
    help_text = CliRunner().invoke(app, ["simulate", "--help"], terminal_width=200).output
    for f in fields(TrainConfig):
        assert "--" + f.name.replace("_", "-") in help_text, f.name
    out = tmp_path / "r.json"
    res = CliRunner().invoke(
        app, ["simulate", "--phases", "1", "--first-epochs", "1", "--out", str(out), "--work-dir", str(tmp_path / "w")]
    )
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["config"] == TrainConfig().to_dict()  # no flags: the default recipe
