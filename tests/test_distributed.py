"""Multi-process runs (pgkit.experiment.distributed): two local processes of one CPU device each,
joined through jax.distributed with gloo collectives, against one process with two devices.

Each test launches subprocesses with a timeout: a hang fails the test instead of stalling the suite.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pgkit.experiment import distributed
from pgkit.recipe import ConfigError

ROOT = Path(__file__).parents[1]
# a PPO run small enough to compile and finish in seconds: 4 members, 6 updates in chunks of 2
SETTINGS = {"num_envs": 4, "num_steps": 32, "epochs": 2, "minibatches": 2, "total_steps": 768}
SCRIPT = """
import json, sys
from pgkit import experiment
coordinator, process_id, mode, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
if coordinator != "-":
    experiment.distributed.initialize(coordinator, 2, process_id, timeout=30)
if mode == "train":
    result = experiment.train("ppo", env="CartPole-v1", seeds=4, config=json.loads(sys.argv[5]), chunk=2, out=out,
                              stop_after_chunks=int(sys.argv[6]) or None, log=None)
else:
    result = experiment.resume(out, log=None)
print("RETURNS", json.dumps(result.metrics["episode_return"][:, -1].tolist()))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def environment(devices: int) -> dict:
    return {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu",
            "PYTHONPATH": str(ROOT)}  # PGKIT_CACHE_DIR: the run's (tests/conftest.py)


def launch(args: list[str], devices: int = 1) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], env=environment(devices), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(processes, timeout: float = 180) -> list[tuple[int, str, str]]:
    deadline = time.monotonic() + timeout
    results = []
    for p in processes:
        try:
            out, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for q in processes:
                q.kill()
            pytest.fail(f"a process did not finish within {timeout} s")
        results.append((p.returncode, out, err))
    return results


def pair(script: Path, mode: str, out: Path, *extra: str) -> list[tuple[int, str, str]]:
    coordinator = f"localhost:{free_port()}"
    return finish([launch([str(script), coordinator, str(i), mode, str(out), *extra]) for i in range(2)])


def returns_of(result) -> list[float]:
    code, out, err = result
    assert code == 0, err[-3000:]
    return json.loads(out.split("RETURNS", 1)[1])


def test_two_processes_equal_one_process_on_two_devices_bit_for_bit_and_resume(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    settings = json.dumps(SETTINGS)
    one = finish([launch([str(script), "-", "0", "train", str(tmp_path / "one"), settings, "0"], devices=2)])[0]
    # the two-process run is stopped after one chunk of three, then resumed by two processes
    stopped = pair(script, "train", tmp_path / "two", settings, "1")
    for code, _, err in stopped:
        assert code == 0, err[-3000:]
    resumed = pair(script, "resume", tmp_path / "two")
    expected = returns_of(one)
    assert [returns_of(r) for r in resumed] == [expected, expected]  # every process returns the whole run
    # process 0 wrote the run directory: the same metrics and final checkpoint as the one-process run
    assert (tmp_path / "one" / "metrics.csv").read_bytes() == (tmp_path / "two" / "metrics.csv").read_bytes()
    sha = [json.loads((tmp_path / d / "progress.json").read_text())["checkpoints"][0]["sha256"] for d in ("one", "two")]
    assert sha[0] == sha[1]
    spec = json.loads((tmp_path / "two" / "config.json").read_text())
    assert spec["processes"] == 2 and spec["devices"] == 2
    assert (tmp_path / "two" / "learning_curve.png").exists() and (tmp_path / "two" / "summary.json").exists()


def test_a_peer_that_never_comes_is_one_line_within_the_timeout(tmp_path):
    # process 0 of 2 alone: it waits for process 1 for the timeout, says so and exits with status 1
    argv = ["-m", "pgkit.cli", "train", "ppo", "--seeds", "2", "--steps", "256", "--out", str(tmp_path / "r"),
            "--coordinator", f"localhost:{free_port()}", "--num-processes", "2", "--process-id", "0",
            "--peer-timeout", "3"]
    t0 = time.monotonic()
    code, out, err = finish([launch(argv)], timeout=60)[0]
    assert code == distributed.EXIT_LOST_PEER
    assert time.monotonic() - t0 < 45
    lines = [line for line in err.splitlines() if line.startswith("pgkit:")]
    assert lines == [lines[0]] and "did not all connect to coordinator localhost:" in lines[0] and "within 3 s" in lines[0]
    assert "Traceback" not in err and "Check failure" not in err


def test_a_peer_that_dies_mid_run_is_one_line_in_the_survivor(tmp_path):
    coordinator = f"localhost:{free_port()}"
    argv = ["-m", "pgkit.cli", "train", "ppo", "--seeds", "2", "--steps", "200000", "--chunk", "1",
            "--out", str(tmp_path / "r"), "--coordinator", coordinator, "--num-processes", "2", "--peer-timeout", "10"]
    first, second = (launch([*argv, "--process-id", str(i)]) for i in range(2))
    try:
        for line in first.stdout:  # process 0 prints progress; kill process 1 once the run is under way
            if line.startswith("update"):
                break
        second.send_signal(signal.SIGKILL)
        t0 = time.monotonic()
        code, _, err = finish([first], timeout=60)[0]
    finally:
        first.kill()
        second.kill()
    assert code == distributed.EXIT_LOST_PEER, err[-3000:]
    assert time.monotonic() - t0 < 45
    lines = [line for line in err.splitlines() if line.startswith("pgkit:")]
    assert len(lines) == 1 and "process 0 of 2 lost contact with the other processes" in lines[0], err[-3000:]
    assert "pgkit resume" in lines[0] and "Traceback" not in err and "Check failure" not in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("localhost:1", 2, None), "missing: process_id"),
        (("localhost", 2, 0), "option 'coordinator' expects HOST:PORT"),
        (("localhost:1", 2, 2), "option 'process_id' must be 0 to 1, got 2"),
        (("localhost:1", 0, 0), "option 'num_processes' must be >= 1, got 0"),
    ],
)
def test_inconsistent_arguments_are_config_errors(args, message):
    with pytest.raises(ConfigError, match=message):
        distributed.initialize(*args)


def test_one_process_and_no_cluster_joins_nothing(monkeypatch):
    for name in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.initialize() == 1 and distributed.initialize("localhost:1", 1, 0) == 1
    assert not distributed.joined() and not distributed.is_multiprocess() and distributed.is_main()
    monkeypatch.setenv("SLURM_NTASKS", "4")
    assert distributed.cluster_detected()
