"""examples/lagged_vtrace.py: the lag is what the metrics say, lag 1 is on-policy (ρ = 1), and
V-trace keeps learning on data 0 to 15 updates stale."""

from pathlib import Path

import numpy as np
import pytest

from pgkit import experiment

EXAMPLE = str(Path(__file__).resolve().parents[1] / "examples" / "lagged_vtrace.py")
SHORT = {"total_steps": 6 * 16 * 16}


def test_lag_one_is_on_policy_and_the_staleness_cycles():
    on = experiment.train(EXAMPLE, seeds=2, config={**SHORT, "lag": 1}, log=None)
    np.testing.assert_allclose(on.metrics["mean_ratio"], 1.0, rtol=1e-6)
    np.testing.assert_allclose(on.metrics["max_ratio"], 1.0, rtol=1e-6)
    np.testing.assert_array_equal(on.metrics["staleness"], 0.0)
    stale = experiment.train(EXAMPLE, seeds=2, config={**SHORT, "lag": 3}, log=None)
    np.testing.assert_array_equal(stale.metrics["staleness"], np.tile([0.0, 1.0, 2.0, 0.0, 1.0, 2.0], (2, 1)))
    # fresh copies act on-policy; one and two updates later the ratios move away from 1
    ratios = stale.metrics["max_ratio"]
    np.testing.assert_allclose(ratios[:, [0, 3]], 1.0, rtol=1e-6)
    assert np.all(ratios[:, [1, 2, 4, 5]] > 1.0 + 1e-4)


def test_a_continuous_environment_is_refused():
    with pytest.raises(experiment.ConfigError, match="discrete actions"):
        experiment.train(EXAMPLE, env="Pendulum-v1", seeds=1, config=SHORT, log=None)


def test_vtrace_learns_cartpole_from_data_up_to_15_updates_stale():
    """lag 16, 200k steps, 4 seeds. Measured (master seed 0): V-trace 423, 426, 453, 407 (mean
    427); the same lag without the correction 430, 9, 125, 9 (mean 143: the stale data's large
    ratios, up to 500, drive most seeds to a deterministic wrong policy). Threshold 350 on the
    V-trace mean, against a random policy's 22."""
    result = experiment.train(EXAMPLE, seeds=4, seed=0, config={"lag": 16}, log=None)
    final = result.metrics["episode_return"][:, -20:].mean(axis=1)
    assert final.mean() >= 350.0, final
