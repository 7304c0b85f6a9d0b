"""Every built-in preset starts and runs (the quick zoo CI runs), and DDPG's preset on
MountainCarContinuous-v0 reaches the goal. PPO's Pendulum-v1 preset has its learning test in
tests/test_recipe_ppo.py. TD3's MountainCarContinuous-v0 preset runs in the quick zoo only: its
4-seed mean ranged from 74 to 91 (bench/calibrate_learning_tests.py td3/mcc_preset), too wide
to assert 80 and, at 90 s, too slow to assert less."""

import numpy as np
import pytest

from pgkit import experiment, plot
from pgkit.experiment import presets, zoo


@pytest.fixture(scope="module")
def quick_zoo(tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo")
    return out, zoo.zoo(out, runs=out / "runs", quick=True, log=None)


def test_the_quick_zoo_runs_every_preset_a_few_updates(quick_zoo):
    out, rows = quick_zoo
    every = [p.name for envs in presets.builtin_presets().values() for p in envs.values()]
    assert [row["preset"] for row in rows] == every
    table = (out / "zoo.md").read_text()
    for row in rows:
        assert f"| {row['preset']} |" in table
        assert (out / row["plot"]).stat().st_size > 0
        metrics = plot.read_metrics(out / "runs" / f"{row['recipe']}-{row['env']}")
        assert len(np.unique(metrics["update"])) == zoo.QUICK_UPDATES  # two updates, logged
        assert np.isfinite(metrics["env_steps"]).all() and row["seeds"] == zoo.QUICK_SEEDS


def final_returns(result, n):
    """Per seed: the mean over the last ``n`` updates of the latest completed-episode return."""
    return result.metrics["episode_return"][:, -n:].mean(axis=1)


def test_ddpg_mountain_car_continuous_preset_reaches_80_over_4_seeds():
    # Ornstein-Uhlenbeck exploration finds the goal, which Gaussian noise does not (the defaults
    # stay near 0). Measured (4 seeds, master seed 1): 94.2, 94.4, 94.0, 93.8.
    result = experiment.train("ddpg", env="MountainCarContinuous-v0", seeds=4, log=None)
    returns = final_returns(result, 2_000)
    assert returns.mean() >= 80, returns
