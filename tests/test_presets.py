"""Presets (pgkit.experiment.presets): the built-in table is valid, train applies a preset under the
caller's options and records it, ``--no-preset`` leaves it out, and bad tables are clear errors.

The learning results of the presets are in tests/test_recipe_presets.py (slow).
"""

import json
import shutil
from pathlib import Path

import pytest

from pgkit import cli, envs, experiment
from pgkit.experiment import presets, zoo
from pgkit.recipe import ConfigError, validate

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "custom_algorithm.py"
OWN_PRESETS = 'PRESETS = {"CartPole-v1": {"total_steps": 640, "num_steps": 20, "lr": 0.02}}\n'


@pytest.fixture
def own_recipe(tmp_path):
    """The example recipe, copied to a file that carries its own PRESETS."""
    path = tmp_path / "loo.py"
    shutil.copy(EXAMPLE, path)
    with path.open("a") as f:
        f.write("\n" + OWN_PRESETS)
    return path


@pytest.mark.parametrize("preset", zoo.selected_presets(), ids=lambda p: p.name)
def test_every_builtin_preset_names_real_options_and_builds(preset):
    module = experiment.load_recipe(preset.recipe)
    config, hparams = presets.split_options(module, preset)
    config, hparams = module.Config(**config), module.HParams(**hparams)
    validate(config)
    validate(hparams)
    assert envs.split_observed_name(preset.env)[0] in envs.available_envs()
    recipe = module.make(config, preset.env)  # the recipe accepts the preset on its environment
    assert recipe.num_updates >= 1
    assert preset.tuned, f"{preset.name}: say how it was tuned"
    assert presets.lookup(module, preset.env) == preset


def test_every_environment_has_a_preset_or_a_stated_reason_and_not_both(capsys):
    covered = {preset.env for preset in zoo.selected_presets()}
    without = presets.environments_without_preset()
    assert not covered & set(without), "an environment with a preset listed as without one"
    assert set(envs.available_envs()) - covered == set(without), "every environment: a preset, or why none"
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert f"  no preset for SimpleBandit-bsuite: {without['SimpleBandit-bsuite']}" in out


def test_train_applies_the_preset_under_the_callers_options_and_records_it(own_recipe, tmp_path):
    lines = []
    result = experiment.train(
        str(own_recipe), env="CartPole-v1", seeds=2, config={"num_steps": 20}, hparams={"lr": 0.01},
        chunk=2, out=tmp_path / "run", log=lines.append,
    )
    spec = json.loads((tmp_path / "run" / "config.json").read_text())
    assert spec["preset"] == {"name": "reinforce_loo/CartPole-v1", "set": {"total_steps": 640, "num_steps": 20, "lr": 0.02}}
    assert spec["config"]["total_steps"] == 640  # from the preset
    assert spec["hparams"]["lr"] == 0.01  # the caller's value wins
    assert lines[0] == "preset reinforce_loo/CartPole-v1: total_steps=640, num_steps=20, lr=0.02 (yours: num_steps, lr)"
    assert result.metrics["episode_return"].shape == (2, 4)


def test_another_environment_gets_no_preset(own_recipe):
    module = experiment.load_recipe(str(own_recipe))
    assert presets.lookup(module, "CartPole-v1").options["lr"] == 0.02
    assert presets.lookup(module, "CartPole-v1[0,2]") is None  # names match exactly
    assert presets.lookup(module, "Acrobot-v1") is None


def test_a_file_with_a_builtin_name_does_not_get_the_builtin_presets(tmp_path):
    path = tmp_path / "ddpg.py"
    shutil.copy(EXAMPLE, path)
    module = experiment.load_recipe(str(path))
    assert presets.presets_of(module) == {}
    assert presets.presets_of(experiment.load_recipe("ddpg"))  # the built-in one has some


def test_cli_prints_the_preset_and_no_preset_leaves_it_out(own_recipe, tmp_path, capsys):
    args = ["train", str(own_recipe), "--env", "CartPole-v1", "--seeds", "2", "--chunk", "2",
            "--set", "lr=0.01"]
    assert cli.main([*args, "--out", str(tmp_path / "a")]) == 0
    assert "preset reinforce_loo/CartPole-v1: total_steps=640, num_steps=20, lr=0.02 (yours: lr)" in capsys.readouterr().out
    assert cli.main([*args, "--steps", "640", "--set", "num_steps=20", "--no-preset", "--out", str(tmp_path / "b")]) == 0
    assert "preset reinforce_loo" not in capsys.readouterr().out
    assert json.loads((tmp_path / "b" / "config.json").read_text())["preset"] is None


def test_pgkit_list_shows_the_presets(capsys):
    assert cli.main(["list", "ddpg"]) == 0
    out = capsys.readouterr().out
    assert "presets (applied with --env ENV; --no-preset for the defaults): MountainCarContinuous-v0" in out
    assert "    MountainCarContinuous-v0: total_steps=30000" in out


def test_a_preset_with_an_unknown_option_is_one_clear_error():
    module = experiment.load_recipe("ddpg")
    bad = presets.Preset("ddpg", "Pendulum-v1", {"learning_rate": 1e-3})
    with pytest.raises(ConfigError, match=r"preset ddpg/Pendulum-v1 sets unknown option 'learning_rate'; available: total_steps"):
        presets.split_options(module, bad)


def test_a_malformed_presets_file_is_one_clear_error(tmp_path, monkeypatch):
    path = tmp_path / "presets.toml"
    monkeypatch.setattr(presets, "PRESETS_FILE", path)
    presets.builtin_presets.cache_clear()
    try:
        path.write_text('[ppo."Pendulum-v1"]\nlr = 1e-3\n')
        with pytest.raises(ConfigError, match=r"preset ppo/Pendulum-v1 in presets.toml: expected a 'set' table"):
            presets.builtin_presets()
        presets.builtin_presets.cache_clear()
        path.write_text("[ppo\n")
        with pytest.raises(ConfigError, match="cannot read the presets file"):
            presets.builtin_presets()
    finally:
        presets.builtin_presets.cache_clear()


def test_zoo_refuses_an_unknown_preset_name():
    with pytest.raises(ConfigError, match=r"option '--only': unknown preset 'ppo/Nowhere-v0'; available: "):
        zoo.selected_presets(["ppo/Nowhere-v0"])
    assert cli.main(["zoo", "--only", "ppo/Nowhere-v0"]) == 2


def test_zoo_table_lists_every_row_with_its_interval_and_plot(tmp_path):
    rows = [
        {"preset": "ppo/Pendulum-v1", "steps": 300_000, "mean": -180.25, "mean_low": -200.5, "mean_high": -160.0,
         "seconds": 95.2, "reference": "SB3 zoo PPO: -172", "plot": "zoo/ppo-Pendulum-v1.png"},
        {"preset": "td3/X", "steps": 1000, "mean": None, "mean_low": None, "mean_high": None,
         "seconds": 3.0, "reference": "", "plot": "zoo/td3-X.png"},
    ]
    zoo.write_table(tmp_path / "zoo.md", rows, quick=False, seeds=8, without={"Y-v0": "cannot be learned"})
    text = (tmp_path / "zoo.md").read_text()
    assert "- Y-v0: cannot be learned" in text
    assert "| ppo/Pendulum-v1 | 300,000 | -180.2 [-200.5, -160.0] | 95 s | SB3 zoo PPO: -172 |" in text
    assert "| td3/X | 1,000 | every seed diverged | 3 s | - |" in text
    assert "![ppo/Pendulum-v1](zoo/ppo-Pendulum-v1.png)" in text
