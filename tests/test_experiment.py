"""The driver: determinism, vmap = single runs, resume, sweeps without recompiles, sharding."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgkit import experiment, stats
from pgkit.experiment import devices, driver

import reference as ref

# One small PPO configuration shared by every test here, so it compiles once per process.
SMALL = {"total_steps": 4 * 32 * 6, "num_envs": 4, "num_steps": 32, "epochs": 2, "minibatches": 2}


def small_run(**kwargs):
    kwargs.setdefault("config", SMALL)
    kwargs.setdefault("seeds", 2)
    kwargs.setdefault("chunk", 2)
    kwargs.setdefault("log", None)
    return experiment.train("ppo", env="CartPole-v1", **kwargs)


def test_same_key_same_result_bit_for_bit():
    first, second = small_run(), small_run()
    ref.assert_bit_identical(first, second)
    assert first.metrics["episode_return"].shape == (2, 6)


def test_member_of_vmapped_run_equals_single_run():
    module = experiment.load_recipe("ppo")
    config = module.Config(**SMALL)
    recipe, init, chunk_fn = driver.programs(module, config, "CartPole-v1", 2)
    keys = jax.random.split(jax.random.PRNGKey(3), 3)
    hp = module.HParams()
    batched_hp = jax.tree.map(lambda x: jnp.full((3,), x, jnp.float32), hp)
    _, batched = chunk_fn(init(keys, batched_hp), batched_hp)
    single_hp = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), hp)
    for i in range(3):
        state = jax.jit(recipe.init)(keys[i], single_hp)
        _, single = jax.jit(
            lambda s, h: jax.lax.scan(lambda c, _: recipe.update(c, h), s, None, length=2)
        )(state, single_hp)
        # the trajectories (sampled actions, hence returns) are identical; loss statistics agree
        # to float32 rounding: XLA's batched kernels may reduce in another order than unbatched ones
        np.testing.assert_array_equal(np.asarray(batched["episode_return"][i]), np.asarray(single["episode_return"]))
        for name in single:
            np.testing.assert_allclose(np.asarray(batched[name][i]), np.asarray(single[name]), rtol=1e-5, atol=1e-7)


def test_interrupted_and_resumed_run_is_bit_identical(tmp_path):
    whole = small_run(out=tmp_path / "whole")
    part = small_run(out=tmp_path / "part", stop_after_chunks=1)
    assert part.metrics["episode_return"].shape == (2, 2)
    assert json.loads((tmp_path / "part" / "progress.json").read_text())["updates_done"] == 2
    compiles = []

    def listener(event, duration, fun_name="", **_):
        if event.endswith("backend_compile_duration"):
            compiles.append(fun_name)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        resumed = experiment.resume(tmp_path / "part", log=None)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    # the restored state has the types the chunk was compiled for (no weak types): not compiled again
    assert not [name for name in compiles if "run_chunk" in name], compiles
    ref.assert_bit_identical(whole, resumed)
    # the CSV on disk holds every update exactly once
    rows = (tmp_path / "part" / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 2 * 6
    for name in ("config.json", "metrics.csv", "learning_curve.png", "checkpoint-0000006.eqx", "summary.json"):
        assert (tmp_path / "part" / name).exists(), name


def test_resume_drops_a_half_written_chunk(tmp_path):
    whole = small_run()
    small_run(out=tmp_path / "run", stop_after_chunks=1)
    # a crash after the metrics of the next chunk were appended but before its checkpoint
    csv_path = tmp_path / "run" / "metrics.csv"
    header, *rows = csv_path.read_text().strip().splitlines()
    stale = []
    for row in rows:  # copies of update 0 posing as update 2: not its real values
        cells = row.split(",")
        if cells[3] == "0":
            stale.append(",".join(cells[:3] + ["2"] + cells[4:]))
    csv_path.write_text("\n".join([header, *rows, *stale]) + "\n")
    resumed = experiment.resume(tmp_path / "run", log=None)
    for name in whole.metrics:
        np.testing.assert_array_equal(whole.metrics[name], resumed.metrics[name])
    assert len(csv_path.read_text().strip().splitlines()) == 1 + 2 * 6


def test_resume_on_another_device_count_warns(tmp_path):
    small_run(out=tmp_path / "run", stop_after_chunks=1)
    config_path = tmp_path / "run" / "config.json"
    spec = json.loads(config_path.read_text())
    assert spec["devices"] == 1
    config_path.write_text(json.dumps({**spec, "devices": 2}))
    with pytest.warns(UserWarning, match="started with its members on 2 device"):
        experiment.resume(tmp_path / "run", log=None, stop_after_chunks=1)


def test_resume_with_another_xla_thread_count_warns(tmp_path):
    threads = experiment.xla_cpu_threads()
    if threads is None:
        pytest.skip("XLA's CPU pool cannot be counted here")
    small_run(out=tmp_path / "run", stop_after_chunks=1)
    config_path = tmp_path / "run" / "config.json"
    spec = json.loads(config_path.read_text())
    assert spec["xla_cpu_threads"] == threads
    config_path.write_text(json.dumps({**spec, "xla_cpu_threads": threads + 1}))
    with pytest.warns(UserWarning, match=f"started with {threads + 1} thread"):
        experiment.resume(tmp_path / "run", log=None, stop_after_chunks=1)


def test_sweep_is_one_program_and_new_values_do_not_recompile():
    compiles = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        first = small_run(sweep={"lr": [1e-4, 3e-4, 1e-3]})
        assert first.metrics["episode_return"].shape == (6, 6)
        assert len(first.summary) == 3
        before = len(compiles)
        second = small_run(sweep={"lr": [2e-4, 5e-4, 2e-3]})
        assert len(compiles) == before, "a new sweep of float values recompiled"
    finally:
        jax.monitoring.clear_event_listeners()
    assert not np.array_equal(first.metrics["policy_loss"], second.metrics["policy_loss"])
    # settings differ but seeds are shared: setting g, seed s uses the key of seed s
    assert [s["label"] for s in first.summary] == ["lr=0.0001", "lr=0.0003", "lr=0.001"]


def test_sharded_run_equals_single_device_run(tmp_path):
    single = small_run(seeds=4)
    out, out6 = tmp_path / "sharded.npz", tmp_path / "sharded6.npz"
    script = textwrap.dedent(
        f"""
        import numpy as np, jax
        from pgkit import experiment
        assert len(jax.devices()) == 4, jax.devices()
        r = experiment.train("ppo", env="CartPole-v1", config={SMALL!r}, seeds=4, chunk=2, log=None)
        leaf = jax.tree.leaves(r.state)[0]
        assert len(leaf.sharding.device_set) == 4, leaf.sharding
        np.savez({str(out)!r}, **r.metrics)
        # 6 members on 4 devices: split over the 3 devices that divide them evenly
        r6 = experiment.train("ppo", env="CartPole-v1", config={SMALL!r}, seeds=6, chunk=2, log=None)
        assert len(jax.tree.leaves(r6.state)[0].sharding.device_set) == 3
        np.savez({str(out6)!r}, **r6.metrics)
        """
    )
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, cwd=Path(__file__).parents[1])
    sharded = np.load(out)
    # identical trajectories; loss statistics to float32 rounding (each device runs a smaller batch)
    np.testing.assert_array_equal(single.metrics["episode_return"], sharded["episode_return"])
    for name in single.metrics:
        np.testing.assert_allclose(single.metrics[name], sharded[name], rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(small_run(seeds=6).metrics["episode_return"], np.load(out6)["episode_return"])


def test_use_cpu_cores_makes_one_device_per_core_before_jax_starts():
    script = textwrap.dedent(
        """
        import os
        from pgkit import experiment
        assert experiment.use_cpu_cores(3)
        assert not experiment.use_cpu_cores(2)  # already set: left alone
        import jax
        assert len(jax.devices("cpu")) == 3, jax.devices()
        assert not experiment.use_cpu_cores()  # JAX has started
        print(os.environ["XLA_FLAGS"])
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    done = subprocess.run([sys.executable, "-c", script], check=True, env={**env, "JAX_PLATFORMS": "cpu"},
                          cwd=Path(__file__).parents[1], capture_output=True, text=True)
    assert done.stdout.strip() == "--xla_force_host_platform_device_count=3"
    with pytest.raises(ValueError, match="count"):
        experiment.use_cpu_cores(0)
    with pytest.raises(ValueError, match="members"):
        experiment.use_cpu_cores(2, members=0)
    with pytest.raises(ValueError, match="threads"):
        experiment.use_cpu_cores(2, threads=0)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs two cores and Linux CPU affinity")
@pytest.mark.parametrize("threads, expected_threads", [(None, 1), (2, 2)])
def test_use_cpu_cores_fits_devices_to_members_and_gives_xla_one_thread_per_device(threads, expected_threads):
    script = textwrap.dedent(
        f"""
        import os
        from pgkit import experiment
        allowed = os.sched_getaffinity(0)
        assert experiment.use_cpu_cores(2, members=3, threads={threads})  # 3 members: one device divides them
        import jax
        assert len(jax.devices("cpu")) == 1, jax.devices()
        assert experiment.xla_cpu_threads() == {expected_threads}, experiment.xla_cpu_threads()
        # the narrowing lasted only while the pool started: every thread may use every core again
        for tid in os.listdir("/proc/self/task"):
            assert os.sched_getaffinity(int(tid)) == allowed, tid
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    subprocess.run([sys.executable, "-c", script], check=True, env={**env, "JAX_PLATFORMS": "cpu"},
                   cwd=Path(__file__).parents[1])


def test_compilation_cache_stores_programs_in_its_directory(tmp_path):
    script = textwrap.dedent(
        f"""
        import os, jax, jax.numpy as jnp
        from pgkit import experiment
        os.environ["PGKIT_CACHE_DIR"] = ""
        assert experiment.use_compilation_cache() is None  # turned off
        assert experiment.use_compilation_cache({str(tmp_path)!r}) is not None
        assert jax.config.jax_persistent_cache_min_compile_time_secs == 1.0  # quick programs stay out
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.jit(lambda x: jnp.sin(x) * 3.0)(jnp.ones(7)).block_until_ready()
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, env={**os.environ, "JAX_PLATFORMS": "cpu"},
                   cwd=Path(__file__).parents[1])
    assert any(tmp_path.iterdir()), "nothing was written to the cache directory"


def test_unrolled_threefry_gives_the_same_random_numbers():
    def draws(key):  # every way the recipes draw: split, fold_in, normal, uniform, categorical, permutation
        a, b = jax.random.split(jax.random.fold_in(key, 3))
        return (
            jax.random.split(a, 5),
            jax.random.normal(a, (7, 3)),
            jax.random.uniform(b, (11,), minval=-2.0, maxval=2.0),
            jax.random.categorical(b, jnp.log(jnp.array([0.2, 0.3, 0.5])), shape=(64,)),
            jax.random.permutation(a, 512),
        )

    keys = jax.random.split(jax.random.PRNGKey(42), 3)
    if not devices.unrolled_threefry_compiles_fast(devices.jaxlib_version()):
        pytest.skip("from jaxlib 0.11 the driver keeps JAX's rolled threefry (the unrolled one compiles for minutes)")
    if not experiment.use_unrolled_threefry(False):
        pytest.skip("this JAX has no private threefry lowering hook: the driver keeps JAX's default")
    try:
        rolled_text = jax.jit(jax.vmap(draws)).lower(keys).as_text()
        rolled = jax.jit(jax.vmap(lambda k: draws(k)))(keys)
        assert experiment.use_unrolled_threefry(True)
        unrolled_text = jax.jit(jax.vmap(draws)).lower(keys).as_text()
        unrolled = jax.jit(jax.vmap(lambda k: draws(k)))(keys)
    finally:
        experiment.use_unrolled_threefry(True)  # as tests/conftest.py leaves it
    assert "stablehlo.while" in rolled_text and "stablehlo.while" not in unrolled_text  # the hook took effect
    for r, u in zip(rolled, unrolled, strict=True):
        np.testing.assert_array_equal(np.asarray(r), np.asarray(u))


def test_unrolled_threefry_is_kept_to_the_jaxlib_versions_that_compile_it_quickly():
    assert devices.unrolled_threefry_compiles_fast((0, 10, 2))
    assert not devices.unrolled_threefry_compiles_fast((0, 11, 2))
    assert not devices.unrolled_threefry_compiles_fast((1, 0, 0))
    assert len(devices.jaxlib_version()) == 3
    if not devices.unrolled_threefry_compiles_fast(devices.jaxlib_version()):
        assert not experiment.use_unrolled_threefry()  # declined: JAX's rolled loop stays
        assert "stablehlo.while" in jax.jit(lambda k: jax.random.split(k)).lower(jax.random.PRNGKey(0)).as_text()


def test_non_finite_metrics_are_reported():
    with pytest.raises(experiment.NonFiniteError, match="'value_loss'.*update 7"):
        driver.check_finite({"value_loss": np.array([[1.0, np.nan], [1.0, 2.0]])}, 6)


def test_bad_options_name_the_option():
    with pytest.raises(experiment.ConfigError, match="'gamma'.*<= 1"):
        small_run(hparams={"gamma": 1.5})
    with pytest.raises(experiment.ConfigError, match="'minibatches' must divide"):
        small_run(config={**SMALL, "minibatches": 7})
    with pytest.raises(experiment.ConfigError, match="unknown option 'nope'"):
        small_run(hparams={"nope": 1.0})
    with pytest.raises(experiment.ConfigError, match="cannot sweep 'epochs'"):
        small_run(sweep={"epochs": [1, 2]})
    with pytest.raises(experiment.ConfigError, match="cannot sweep 'objective' over \\['clip', 'adaptive_kl'\\]"):
        small_run(sweep={"objective": ["clip", "adaptive_kl"]})
    with pytest.raises(experiment.ConfigError, match="unknown recipe 'nope'"):
        experiment.train("nope")


def test_bootstrap_interval_and_iqm():
    x = np.arange(8.0)
    assert stats.interquartile_mean(x) == pytest.approx(3.5)
    assert stats.interquartile_mean([1.0, 2.0, 100.0, 3.0, 4.0, 5.0, 6.0, -50.0]) == pytest.approx(3.5)
    interval = stats.bootstrap_ci(x)
    assert interval.low < 3.5 < interval.high
    assert stats.bootstrap_ci([2.0]).low == 2.0
    with pytest.raises(ValueError, match="confidence"):
        stats.bootstrap_ci(x, confidence=1.5)


def test_a_partially_observed_environment_trains_resumes_and_evaluates(tmp_path):
    """env="CartPole-v1[0,2]" (no velocities) travels as a name: the policy sees 2 inputs,
    config.json records the name, resume continues bit-identically, eval rebuilds it."""
    out = tmp_path / "partial"
    whole = experiment.train("ppo", env="CartPole-v1[0,2]", seeds=2, config=SMALL, chunk=2, log=None)
    experiment.train("ppo", env="CartPole-v1[0,2]", seeds=2, config=SMALL, chunk=2, log=None, out=out,
                     stop_after_chunks=1)
    assert json.loads((out / "config.json").read_text())["env"] == "CartPole-v1[0,2]"
    ref.assert_bit_identical(whole, experiment.resume(out, log=None))
    first_layer = jax.tree.leaves(whole.state.networks.actor)[0]
    assert first_layer.shape[:2] == (2, 2)  # [members, inputs, width]
    assert experiment.evaluate(out, episodes=1, log=None).shape == (2, 1)
