"""Every built-in preset starts and runs (the quick zoo CI runs, in three parts: tests/quick_zoo.py),
and DDPG's preset on MountainCarContinuous-v0 reaches the goal. PPO's Pendulum-v1 preset has its
learning test in tests/test_recipe_ppo.py. TD3's MountainCarContinuous-v0 preset runs in the quick zoo only: its
4-seed mean ranged from 74 to 91 (bench/calibrate_learning_tests.py td3/mcc_preset), too wide
to assert 80 and, at 90 s, too slow to assert less."""

from pgkit import experiment

import quick_zoo


def test_the_quick_zoo_runs_its_first_part_a_few_updates(tmp_path):
    quick_zoo.check_quick_zoo(tmp_path, 0)


def final_returns(result, n):
    """Per seed: the mean over the last ``n`` updates of the latest completed-episode return."""
    return result.metrics["episode_return"][:, -n:].mean(axis=1)


def test_ddpg_mountain_car_continuous_preset_reaches_80_over_4_seeds():
    # Ornstein-Uhlenbeck exploration finds the goal, which Gaussian noise does not (the defaults
    # stay near 0). Measured (4 seeds, master seed 1): 94.2, 94.4, 94.0, 93.8.
    result = experiment.train("ddpg", env="MountainCarContinuous-v0", seeds=4, log=None)
    returns = final_returns(result, 2_000)
    assert returns.mean() >= 80, returns
