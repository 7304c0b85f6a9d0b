"""A researcher's own recipe (examples/custom_algorithm.py) runs through the driver like a built-in one.

From Python and from the command line, by file path and by dotted module path, with a local
``recipes/`` folder in the working directory that must not be imported; trained over seeds x a
sweep, resumed bit-identically, evaluated; a moved recipe is a clear error with a way out.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import reference as ref
from pgkit import cli, experiment

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "custom_algorithm.py"
# 4 updates of 8 environments x 20 steps, 2 updates a chunk: one compiled program for every test
TINY = {"total_steps": 4 * 8 * 20, "num_steps": 20}
TINY_ARGS = ["--steps", str(TINY["total_steps"]), "--set", f"num_steps={TINY['num_steps']}", "--chunk", "2"]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A working directory holding a ``recipes/`` package that fails loudly if anything imports it."""
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "__init__.py").write_text("raise ImportError('the local recipes/ folder was imported')\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def train_example(recipe, out, **kwargs):
    return experiment.train(
        recipe, seeds=2, config=TINY, sweep={"lr": [1e-2, 3e-3]}, chunk=2, out=out, log=None, **kwargs
    )


def test_a_module_object_trains_resumes_bit_identically_and_evaluates(workdir):
    module = experiment.load_recipe(str(EXAMPLE))
    assert module.NAME == "reinforce_loo"
    whole = train_example(module, workdir / "whole")
    assert whole.metrics["episode_return"].shape == (4, 4)  # 2 settings x 2 seeds, 4 updates
    assert np.isfinite(whole.metrics["policy_loss"]).all()
    part = train_example(module, workdir / "part", stop_after_chunks=1)
    assert part.metrics["episode_return"].shape == (4, 2)
    spec = json.loads((workdir / "part" / "config.json").read_text())
    assert spec["recipe"] == "reinforce_loo" and spec["recipe_source"] == {"file": str(EXAMPLE)}
    resumed = experiment.resume(workdir / "part", log=None)
    ref.assert_bit_identical(whole, resumed)
    returns = experiment.evaluate(workdir / "part", episodes=3, log=None)
    assert returns.shape == (4, 3) and np.isfinite(returns).all()
    assert "recipes" not in sys.modules or not str(getattr(sys.modules["recipes"], "__file__", "")).startswith(str(workdir))


def test_the_command_line_takes_a_file_path_and_a_dotted_module_path(workdir, capsys):
    out = workdir / "by_file"
    argv = ["train", str(EXAMPLE), "--seeds", "2", "--sweep", "lr=1e-2,3e-3", *TINY_ARGS, "--out", str(out)]
    assert cli.main(argv) == 0, capsys.readouterr().err
    stdout = capsys.readouterr().out
    assert "reinforce_loo on CartPole-v1: 2 setting(s) x 2 seed(s)" in stdout and "final return [lr=0.01]" in stdout
    assert cli.main(["eval", str(out), "--episodes", "2"]) == 0
    assert "eval [lr=0.003]" in capsys.readouterr().out
    assert cli.main(["list", str(EXAMPLE)]) == 0
    assert "leave-one-out" in capsys.readouterr().out

    package = workdir / "mylab"
    package.mkdir()
    (package / "__init__.py").write_text("")
    shutil.copy(EXAMPLE, package / "loo.py")
    out = workdir / "by_module"
    argv = ["train", "mylab.loo", "--seeds", "2", *TINY_ARGS, "--out", str(out), "--set", "lr=3e-3"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert json.loads((out / "config.json").read_text())["recipe_source"] == {"module": "mylab.loo"}
    assert cli.main(["resume", str(out)]) == 0  # a finished run resumes to a no-op
    capsys.readouterr()


def test_a_moved_recipe_is_one_line_and_resume_takes_its_new_place(workdir, capsys):
    shutil.copy(EXAMPLE, workdir / "mine.py")
    whole = train_example(str(workdir / "mine.py"), workdir / "whole")
    train_example(str(workdir / "mine.py"), workdir / "run", stop_after_chunks=1)
    (workdir / "moved").mkdir()
    shutil.move(workdir / "mine.py", workdir / "moved" / "mine.py")
    for command in (["resume", str(workdir / "run")], ["eval", str(workdir / "run")]):
        assert cli.main(command) == 2
        err = capsys.readouterr().err
        assert "mine.py' not found" in err and "--recipe" in err and len(err.strip().splitlines()) == 1
    assert cli.main(["resume", str(workdir / "run"), "--recipe", str(workdir / "moved" / "mine.py")]) == 0
    capsys.readouterr()
    resumed = experiment.resume(workdir / "run", log=None)  # finished: returns the metrics on disk
    np.testing.assert_array_equal(resumed.metrics["episode_return"], whole.metrics["episode_return"])


@pytest.mark.parametrize(
    "source, message",
    [
        ("./missing.py", "recipe file '.*missing.py' not found"),
        ("nolab.nothing", "recipe module 'nolab.nothing' not found"),
        ("not_a_recipe.py", "is not a recipe: it lacks make, Config, HParams, DEFAULT_ENV"),
        ("ppo2", "unknown recipe 'ppo2'; available: a2c, a3c, actor_critic"),
    ],
)
def test_what_is_not_a_recipe_is_one_line_and_exit_status_2(workdir, capsys, source, message):
    (workdir / "not_a_recipe.py").write_text("X = 1\n")
    assert cli.main(["train", source, "--seeds", "1"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    with pytest.raises(experiment.ConfigError, match=message):
        experiment.load_recipe(source)


def test_no_top_level_recipes_module_is_installed(tmp_path):
    script = (
        "import importlib.util, pgkit.recipes, pgkit.recipes.ppo\n"
        "print(importlib.util.find_spec('recipes') is None, pgkit.recipes.ppo.NAME, sorted(pgkit.recipes.BUILTIN) == "
        "__import__('pgkit.experiment', fromlist=['x']).available_recipes())\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "ppo", "True"]


def test_built_in_recipes_are_recorded_by_name_and_old_run_directories_still_resume(tmp_path):
    from pgkit.experiment import registry

    ppo = experiment.load_recipe("ppo")
    assert ppo.__name__ == "pgkit.recipes.ppo" and registry.recipe_source(ppo) == {"builtin": "ppo"}
    assert experiment.load_recipe(ppo) is ppo and experiment.load_recipe("pgkit.recipes.ppo") is ppo
    small = {"total_steps": 4 * 32 * 4, "num_envs": 4, "num_steps": 32, "epochs": 2, "minibatches": 2}
    whole = experiment.train("ppo", seeds=1, config=small, chunk=2, log=None)
    experiment.train(ppo, seeds=1, config=small, chunk=2, out=tmp_path / "run", stop_after_chunks=1, log=None)
    spec = json.loads((tmp_path / "run" / "config.json").read_text())
    assert spec["recipe"] == "ppo" and spec.pop("recipe_source") == {"builtin": "ppo"}
    (tmp_path / "run" / "config.json").write_text(json.dumps(spec))  # config.json as pgkit 0.2.0 wrote it, without recipe_source
    ref.assert_bit_identical(whole, experiment.resume(tmp_path / "run", log=None))
