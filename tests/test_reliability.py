"""Nothing is lost: diverging members, damaged checkpoints, kill -9, signals, full disks, oversized runs.

Every fault is injected into a small A2C run (9 updates in chunks of 3, one compiled program
shared by the tests) and the run is then resumed: the result must be bit-identical to a run
that met no fault. docs/reliability.md describes each case as a user sees it.
"""

import csv
import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

from pgkit import cli, experiment
from pgkit.experiment import memory, store

import reference as ref

CONFIG = {"total_steps": 4 * 8 * 9, "num_envs": 4, "num_steps": 8}
HEALTHY, DIVERGING = 6e-3, 1e30  # a2c learning rates: the second overflows the weights at once


def run_a2c(**kwargs):
    kwargs.setdefault("config", CONFIG)
    kwargs.setdefault("seeds", 2)
    kwargs.setdefault("chunk", 3)
    kwargs.setdefault("log", None)
    return experiment.train("a2c", env="CartPole-v1", **kwargs)


@pytest.fixture(scope="module")
def whole():
    """The run every faulty one must reproduce."""
    return run_a2c()


def checkpoint_files(run_dir):
    return [r["file"] for r in store.checkpoint_records(run_dir)]


# --- members that diverge -------------------------------------------------------------------


@pytest.fixture(scope="module")
def sweeps():
    """The same sweep with the second learning rate diverging, and with it replaced by a healthy one."""
    return run_a2c(sweep={"lr": [HEALTHY, DIVERGING]}), run_a2c(sweep={"lr": [HEALTHY, 3e-3]})


def test_a_diverging_setting_leaves_the_healthy_members_bit_identical(sweeps):
    diverging, healthy = sweeps
    assert sorted(diverging.diverged) == [2, 3] and healthy.diverged == {}
    for name in healthy.metrics:
        np.testing.assert_array_equal(diverging.metrics[name][:2], healthy.metrics[name][:2], err_msg=name)
    for x, y in zip(jax.tree.leaves(diverging.state), jax.tree.leaves(healthy.state)):
        np.testing.assert_array_equal(np.asarray(x)[:2], np.asarray(y)[:2])
    # the diverged members: metrics NaN from the update at which they diverged, finite before it
    for member, update in diverging.diverged.items():
        values = diverging.metrics["episode_return"][member]
        assert np.isnan(values[update:]).all() and np.isfinite(values[:update]).all()
    summary = {s["label"]: s for s in diverging.summary}
    assert summary["lr=0.006"]["diverged"] == [] and summary["lr=0.006"]["seeds"] == 2
    assert [d["seed"] for d in summary["lr=1e+30"]["diverged"]] == [0, 1] and summary["lr=1e+30"]["seeds"] == 0


def test_a_diverged_member_is_frozen_at_its_last_finite_state(sweeps):
    diverging, _ = sweeps
    assert experiment.driver.finite_members(diverging.state).all()
    # oracle: the same members stopped by hand just before the update at which they diverged
    stopped = {}
    for member, update in diverging.diverged.items():
        assert update >= 1, "the first update already diverged: nothing to compare"
        if update not in stopped:
            stopped[update] = run_a2c(sweep={"lr": [HEALTHY, DIVERGING]}, chunk=1, stop_after_chunks=update,
                                      halt_on_nonfinite=True)
        before = stopped[update]
        # the replay that found the point is another compiled program: equal to float32 rounding
        for x, y in zip(jax.tree.leaves(diverging.state), jax.tree.leaves(before.state)):
            np.testing.assert_allclose(np.asarray(x)[member], np.asarray(y)[member], rtol=1e-5)


def test_diverged_members_are_marked_in_the_run_directory_and_resume(tmp_path, sweeps):
    diverging, _ = sweeps
    out = tmp_path / "run"
    part = run_a2c(sweep={"lr": [HEALTHY, DIVERGING]}, out=out, stop_after_chunks=1)
    assert part.diverged == diverging.diverged
    resumed = experiment.resume(out, log=None)
    ref.assert_bit_identical(diverging, resumed)
    assert resumed.diverged == diverging.diverged
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    for row in rows:
        member = int(row["setting"]) * 2 + int(row["seed"])
        since = diverging.diverged.get(member)
        assert row["diverged"] == str(int(since is not None and int(row["update"]) >= since))
    assert json.loads((out / "summary.json").read_text()) == resumed.summary
    assert (out / "learning_curve.png").exists()


def test_halt_on_nonfinite_stops_the_whole_run():
    with pytest.raises(experiment.NonFiniteError, match="became non-finite at update"):
        run_a2c(sweep={"lr": [HEALTHY, DIVERGING]}, halt_on_nonfinite=True)


def test_a_run_whose_every_member_diverged_is_one_line_and_exit_status_1(tmp_path, capsys):
    argv = ["train", "a2c", "--seeds", "2", "--steps", str(CONFIG["total_steps"]), "--set", "num_envs=4",
            "--set", "num_steps=8", "--chunk", "3", "--set", f"lr={DIVERGING}", "--out", str(tmp_path / "run")]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("pgkit: training stopped: every member diverged") and len(err.strip().splitlines()) == 1


# --- damaged checkpoints ----------------------------------------------------------------------


def interrupted_run(tmp_path, chunks=2):
    out = tmp_path / "run"
    run_a2c(out=out, stop_after_chunks=chunks)
    return out


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def flip_a_bit(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(("damage", "word"), [(truncate, "truncated"), (flip_a_bit, "corrupt (checksum mismatch)")])
def test_a_damaged_checkpoint_falls_back_to_the_previous_one(tmp_path, whole, damage, word):
    out = interrupted_run(tmp_path)
    latest, previous = checkpoint_files(out)
    damage(out / latest)
    with pytest.warns(UserWarning, match=re.escape(f"{latest} (update 6) is {word}") + f".*resuming from {previous}"):
        resumed = experiment.resume(out, log=None)
    ref.assert_bit_identical(whole, resumed)
    assert (out / (latest + ".corrupt")).exists()
    assert len((out / "metrics.csv").read_text().strip().splitlines()) == 1 + 2 * 9


def test_the_command_line_reports_a_damaged_checkpoint_in_one_line(tmp_path, whole, capsys):
    out = interrupted_run(tmp_path)
    latest, _ = checkpoint_files(out)
    truncate(out / latest)
    assert cli.main(["resume", str(out)]) == 0
    warning = [line for line in capsys.readouterr().err.splitlines() if "set aside" in line]
    assert len(warning) == 1 and warning[0].startswith(f"pgkit: warning: checkpoint {latest} (update 6) is truncated")


def test_a_damaged_first_checkpoint_starts_the_run_over(tmp_path, whole):
    out = interrupted_run(tmp_path, chunks=1)
    (only,) = checkpoint_files(out)
    flip_a_bit(out / only)
    with pytest.warns(UserWarning, match="starts over"):
        resumed = experiment.resume(out, log=None)
    ref.assert_bit_identical(whole, resumed)


def test_no_whole_checkpoint_left_is_one_line_and_exit_status_2(tmp_path, capsys):
    out = interrupted_run(tmp_path)
    for name in checkpoint_files(out):
        truncate(out / name)
    assert cli.main(["resume", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no whole checkpoint is left" in err and "truncated" in err and "version" not in err
    assert len(err.strip().splitlines()) == 1


def test_a_run_written_before_checksums_resumes(tmp_path, whole):
    out = interrupted_run(tmp_path, chunks=1)
    (only,) = checkpoint_files(out)
    os.replace(out / only, out / "checkpoint.eqx")  # the layout of pgkit < 0.4
    progress = json.loads((out / "progress.json").read_text())
    del progress["checkpoints"]
    (out / "progress.json").write_text(json.dumps(progress))
    ref.assert_bit_identical(whole, experiment.resume(out, log=None))
    assert not (out / "checkpoint.eqx").exists()  # replaced by the checksummed files


# --- kill -9 and signals: a run in another process --------------------------------------------

FAULTS = {
    # the third chunk has run; SIGKILL before any of it is written
    "during_a_chunk": """
        real = store.append_metrics
        calls = []
        def append_metrics(*a, **k):
            calls.append(1)
            if len(calls) == 3:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*a, **k)
        store.append_metrics = append_metrics
    """,
    # halfway through the second checkpoint's leaves
    "while_writing_a_checkpoint": """
        real_write, real_save = store.write_checkpoint, np.save
        writes, saves = [], []
        def write_checkpoint(*a, **k):
            writes.append(1)
            return real_write(*a, **k)
        def save(*a, **k):
            if len(writes) == 2:
                saves.append(1)
                if len(saves) == 5:
                    os.kill(os.getpid(), signal.SIGKILL)
            return real_save(*a, **k)
        store.write_checkpoint, np.save = write_checkpoint, save
    """,
    # the second checkpoint is in place, progress.json does not name it yet
    "before_progress_names_it": """
        real = os.replace
        named = []
        def replace(src, dst, *a, **k):
            if str(dst).endswith("progress.json"):
                named.append(1)
                if len(named) == 2:
                    os.kill(os.getpid(), signal.SIGKILL)
            return real(src, dst, *a, **k)
        os.replace = replace
    """,
    # SIGTERM after the first checkpoint: the run stops there, exit status 128 + 15
    "sigterm": """
        real = os.replace
        def replace(src, dst, *a, **k):
            result = real(src, dst, *a, **k)
            if str(dst).endswith("progress.json"):
                os.kill(os.getpid(), signal.SIGTERM)
            return result
        os.replace = replace
    """,
    # SIGTERM after the first checkpoint, then a second one at once: the process ends there
    "two_sigterms": """
        real = os.replace
        def replace(src, dst, *a, **k):
            result = real(src, dst, *a, **k)
            if str(dst).endswith("progress.json"):
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.5)  # the handler runs: the next SIGTERM meets the default action
                os.kill(os.getpid(), signal.SIGTERM)
            return result
        os.replace = replace
    """,
}


def run_with_fault(fault: str, out: Path) -> subprocess.CompletedProcess:
    script = textwrap.dedent(
        """
        import os, signal, sys, time
        import numpy as np
        from pgkit import experiment
        experiment.use_cpu_cores(1, threads=2)  # as tests/conftest.py: the same numbers
        experiment.use_unrolled_threefry()
        experiment.use_compilation_cache()  # the run's, as tests/conftest.py
        from pgkit.experiment import store
        """
    ) + textwrap.dedent(FAULTS[fault]) + textwrap.dedent(
        f"""
        try:
            experiment.train("a2c", env="CartPole-v1", config={CONFIG!r}, seeds=2, chunk=3, out={str(out)!r},
                             log=print)
        except experiment.Interrupted as stopped:
            sys.exit(128 + stopped.signum)
        """
    )
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          cwd=Path(__file__).parents[1], timeout=300)


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_killed_anywhere_then_resumed_is_bit_identical(tmp_path, whole, fault):
    out = tmp_path / "run"
    done = run_with_fault(fault, out)
    expected = {"sigterm": 128 + signal.SIGTERM, "two_sigterms": -signal.SIGTERM}.get(fault, -signal.SIGKILL)
    assert done.returncode == expected, done.stdout + done.stderr
    assert store.updates_done(out) in (3, 6)
    ref.assert_bit_identical(whole, experiment.resume(out, log=None))
    assert not list(out.glob("*.tmp")), list(out.iterdir())


def test_sigterm_writes_a_checkpoint_and_exits_128_plus_the_signal(tmp_path, whole, capsys, monkeypatch):
    out = tmp_path / "run"
    real = os.replace
    sent = []

    def replace(src, dst, *args, **kwargs):
        result = real(src, dst, *args, **kwargs)
        if str(dst).endswith("progress.json") and not sent:  # after the first checkpoint
            sent.append(1)
            os.kill(os.getpid(), signal.SIGTERM)
        return result

    monkeypatch.setattr(os, "replace", replace)
    argv = ["train", "a2c", "--seeds", "2", "--steps", str(CONFIG["total_steps"]), "--set", "num_envs=4",
            "--set", "num_steps=8", "--chunk", "3", "--out", str(out)]
    assert cli.main(argv) == 128 + signal.SIGTERM
    output = capsys.readouterr().out
    # the chunk in flight when the signal came is abandoned: the checkpoint of the one before it is kept
    assert f"stopped by SIGTERM: the checkpoint holds update 3/9; continue with: pgkit resume {out}" in output
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the driver's handler is gone
    monkeypatch.undo()
    ref.assert_bit_identical(whole, experiment.resume(out, log=None))


# --- a full disk ------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A directory on a 4 MB tmpfs where the system lets us mount one, else None."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        yield None
        return
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        yield None
        return
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_keeps_the_previous_checkpoint_and_metrics(tmp_path, whole, small_disk, monkeypatch, capsys):
    out = (small_disk or tmp_path) / "run"
    run_a2c(out=out, stop_after_chunks=1)
    metrics_before = (out / "metrics.csv").read_bytes()
    if small_disk is not None:  # fill the tmpfs: room for the next metrics rows, half a checkpoint
        room = (out / checkpoint_files(out)[0]).stat().st_size // 2
        (small_disk / "filler").write_bytes(b"\0" * max(shutil.disk_usage(small_disk).free - room, 0))
    else:  # no tmpfs here: every flush to disk fails as a full one does
        def no_space(fd):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(os, "fsync", no_space)
    assert cli.main(["resume", str(out)]) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "the checkpoint at update 3 and the metrics up to it are intact" in err
    assert len(err.strip().splitlines()) == 1
    monkeypatch.undo()
    if small_disk is not None:
        (small_disk / "filler").unlink()
    # what the run relies on is as it was: the checkpoint at update 3, whole, and its metrics rows
    assert store.updates_done(out) == 3 and not list(out.glob("*.tmp"))
    assert (out / "metrics.csv").read_bytes().startswith(metrics_before)
    ref.assert_bit_identical(whole, experiment.resume(out, log=None))


# --- requests that cannot fit -----------------------------------------------------------------


def test_a_replay_buffer_too_large_for_memory_is_refused_in_one_line(capsys):
    argv = ["train", "sac", "--set", "buffer_size=1000000000", "--seeds", "8", "--out", "/nonexistent/never"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("pgkit: error: the run cannot fit: it needs about") and len(err.strip().splitlines()) == 1
    assert "sized by buffer_size=1000000000" in err and "8 members = 1 setting(s) x 8 seed(s)" in err


def test_an_integer_option_too_large_for_the_device_is_refused_in_one_line(capsys):
    assert cli.main(["train", "sac", "--set", "buffer_size=100000000000", "--out", "/nonexistent/never"]) == 2
    err = capsys.readouterr().err
    assert "option 'buffer_size' = 100000000000 is too large for the device's integers" in err
    assert len(err.strip().splitlines()) == 1


def test_memory_check_counts_members_copies_and_devices(monkeypatch):
    state = {"buffer": jax.ShapeDtypeStruct((4, 1234, 3), np.float32), "step": jax.ShapeDtypeStruct((4,), np.int32)}
    config = experiment.load_recipe("sac").Config(buffer_size=1234)
    assert memory.tree_bytes(state) == 4 * 1234 * 3 * 4 + 4 * 4
    cpu = jax.devices("cpu")[0]
    monkeypatch.setattr(memory, "host_available_bytes", lambda: 10**9)
    fit = memory.check_fits(state, {}, config=config, num_settings=2, seeds=2, device_copies=2, host_copies=2,
                            devices_used=[cpu])
    assert fit["checks"] == [("host", 4 * memory.tree_bytes(state), 10**9, 4)]
    monkeypatch.setattr(memory, "host_available_bytes", lambda: 3 * memory.tree_bytes(state))
    with pytest.raises(experiment.ConfigError, match=r"kept 4 times.*state\['buffer'\] \[1234, 3\] float32 per "
                                                     r"member, is sized by buffer_size=1234\)"):
        memory.check_fits(state, {}, config=config, num_settings=2, seeds=2, device_copies=2, host_copies=2,
                          devices_used=[cpu])

    class Accelerator:  # what a GPU reports
        platform = "gpu"

        def memory_stats(self):
            return {"bytes_limit": 30_000, "bytes_in_use": 2_000}

    monkeypatch.setattr(memory, "host_available_bytes", lambda: 10**9)
    # two devices hold half the members each: 2 copies x 59 KB / 2 = 59 KB > 28 KB free on each
    with pytest.raises(experiment.ConfigError, match="gpu device memory over 2 device"):
        memory.check_fits(state, {}, config=config, num_settings=2, seeds=2, device_copies=2, host_copies=2,
                          devices_used=[Accelerator(), Accelerator()])
    fit = memory.check_fits(state, {}, config=config, num_settings=2, seeds=2, device_copies=1, host_copies=2,
                            devices_used=[Accelerator(), Accelerator(), Accelerator(), Accelerator()])
    assert [c[0] for c in fit["checks"]] == ["gpu device", "host"]
