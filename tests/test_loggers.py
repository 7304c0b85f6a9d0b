"""The ``on_chunk`` callback of train/resume and the TensorBoard and W&B loggers built on it."""

import csv
import json
import struct
import sys

import numpy as np
import pytest

from pgkit import cli, experiment
from pgkit.experiment import loggers

CONFIG = {"total_steps": 4 * 8 * 9, "num_envs": 4, "num_steps": 8}  # 9 updates: chunks of 3
STEPS_PER_UPDATE = 4 * 8


def run_a2c(**kwargs):
    kwargs.setdefault("config", CONFIG)
    kwargs.setdefault("seeds", 2)
    kwargs.setdefault("chunk", 3)
    kwargs.setdefault("log", None)
    return experiment.train("a2c", env="CartPole-v1", **kwargs)


def csv_metrics(run_dir):
    """``{metric: [members, updates]}`` and the env steps per update, read back from metrics.csv."""
    with (run_dir / "metrics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    seeds = max(int(r["seed"]) for r in rows) + 1
    members = (max(int(r["setting"]) for r in rows) + 1) * seeds
    updates = max(int(r["update"]) for r in rows) + 1
    header = list(rows[0])
    names = header[header.index("diverged") + 1 :]  # the metrics follow the hyperparameters and 'diverged'
    metrics = {n: np.full((members, updates), np.nan) for n in names}
    steps = np.zeros(updates, int)
    for r in rows:
        m, u = int(r["setting"]) * seeds + int(r["seed"]), int(r["update"])
        steps[u] = int(r["env_steps"])
        for n in names:
            metrics[n][m, u] = np.float32(r[n])
    return metrics, steps


class Recorder:
    """An on_chunk callback that keeps every chunk it receives."""

    def __init__(self):
        self.chunks, self.closed = [], 0

    def __call__(self, chunk):
        self.chunks.append(chunk)

    def close(self):
        self.closed += 1


def gathered(chunks):
    """The chunks' metrics side by side ``{metric: [members, updates]}`` and their update numbers."""
    updates = np.concatenate([np.arange(c.first_update, c.last_update + 1) for c in chunks])
    metrics = {n: np.concatenate([c.metrics[n] for c in chunks], axis=1) for n in chunks[0].metrics}
    return metrics, updates


@pytest.fixture(scope="module")
def stopped_and_resumed(tmp_path_factory):
    """A run stopped after one chunk and resumed, with a Recorder on each call."""
    out = tmp_path_factory.mktemp("run") / "r"
    first, second = Recorder(), Recorder()
    run_a2c(out=out, stop_after_chunks=1, on_chunk=first, sweep={"lr": [6e-3, 3e-3]}, seeds=1)
    experiment.resume(out, log=None, on_chunk=second)
    return out, first, second


def test_the_callback_gets_every_update_once_over_a_stop_and_a_resume(stopped_and_resumed):
    out, first, second = stopped_and_resumed
    chunks = first.chunks + second.chunks
    metrics, updates = gathered(chunks)
    np.testing.assert_array_equal(updates, np.arange(9))
    assert [(c.first_update, c.last_update) for c in chunks] == [(0, 2), (3, 5), (6, 8)]
    assert first.closed == second.closed == 1
    on_disk, steps = csv_metrics(out)
    assert set(metrics) == set(on_disk)
    for name in on_disk:
        np.testing.assert_array_equal(metrics[name], on_disk[name], err_msg=name)
    np.testing.assert_array_equal(np.concatenate([c.env_steps for c in chunks]), steps)
    np.testing.assert_array_equal(steps, (np.arange(9) + 1) * STEPS_PER_UPDATE)
    chunk = chunks[0]
    assert chunk.run_dir == out and chunk.num_updates == 9 and chunk.diverged == {}
    assert chunk.labels == ("lr=0.006", "lr=0.003") and chunk.settings == (0, 1) and chunk.seeds == (0, 0)
    assert chunk.hparams[1]["lr"] == pytest.approx(3e-3)
    assert not chunk.metrics["episode_return"].flags.writeable  # the run's own arrays, read-only


def test_a_callback_that_raises_stops_the_run_with_the_chunk_on_disk(tmp_path):
    out = tmp_path / "r"
    whole = Recorder()
    run_a2c(on_chunk=whole)

    def fail_on_second(chunk):
        if chunk.first_update > 0:
            raise RuntimeError("logger down")

    with pytest.raises(RuntimeError, match="logger down"):
        run_a2c(out=out, on_chunk=[Recorder(), fail_on_second])
    assert experiment.store.updates_done(out) == 6  # the chunk it raised on is checkpointed
    rest = Recorder()
    experiment.resume(out, log=None, on_chunk=rest)
    assert [c.first_update for c in rest.chunks] == [6]
    metrics, _ = gathered(whole.chunks)
    on_disk, _ = csv_metrics(out)
    for name in on_disk:
        np.testing.assert_array_equal(metrics[name], on_disk[name], err_msg=name)


def test_on_chunk_must_be_callable():
    with pytest.raises(experiment.ConfigError, match="on_chunk"):
        run_a2c(on_chunk=[42])


# --- TensorBoard and W&B ----------------------------------------------------------------------


def tensorboard_scalars(directory):
    """``{tag: {step: value}}`` of every event file in ``directory``, honouring purge_step (SessionLog START)."""
    event_pb2 = pytest.importorskip("tensorboardX.proto.event_pb2")
    scalars = {}
    for path in sorted(directory.glob("events.out.tfevents.*")):
        data, offset = path.read_bytes(), 0
        while offset < len(data):  # TFRecord: u64 length, u32 crc, payload, u32 crc
            (length,) = struct.unpack_from("<Q", data, offset)
            event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
            offset += 12 + length + 4
            if event.HasField("session_log") and event.session_log.status == event.session_log.START:
                for steps in scalars.values():  # what TensorBoard hides when a writer restarts
                    for step in [s for s in steps if s >= event.step]:
                        del steps[step]
            for value in event.summary.value:
                scalars.setdefault(value.tag, {})[event.step] = value.simple_value
    return scalars


def test_tensorboard_event_files_hold_the_metrics_over_a_stop_and_a_resume(tmp_path):
    pytest.importorskip("tensorboardX")
    out = tmp_path / "r"
    run_a2c(out=out, stop_after_chunks=1, on_chunk=loggers.tensorboard())
    experiment.resume(out, log=None, on_chunk=loggers.tensorboard())
    # a chunk logged twice (as after a lost checkpoint): the second writer hides the first's events
    replay = Recorder()
    experiment.train("a2c", env="CartPole-v1", config=CONFIG, seeds=2, chunk=3, log=None, on_chunk=replay)
    on_disk, steps = csv_metrics(out)
    assert sorted(p.name for p in (out / "tensorboard" / "default").iterdir()) == ["seed0", "seed1"]
    for seed in range(2):
        scalars = tensorboard_scalars(out / "tensorboard" / "default" / f"seed{seed}")
        assert set(scalars) == set(on_disk)
        for name, values in on_disk.items():
            assert sorted(scalars[name]) == steps.tolist()  # every update once, step = env steps
            np.testing.assert_array_equal([scalars[name][s] for s in steps], values[seed].astype(np.float32))
    relogged = loggers.tensorboard(out / "tensorboard")
    relogged(replay.chunks[1])
    relogged.close()
    scalars = tensorboard_scalars(out / "tensorboard" / "default" / "seed0")
    assert sorted(scalars["episode_return"]) == steps[:6].tolist()  # hidden from the replayed chunk on


def read_wandb_history(path):
    """``[{key: value}]``: the history rows of a ``.wandb`` file (a LevelDB log of W&B Record protobufs)."""
    from wandb.proto import wandb_internal_pb2

    data, rows, offset, pending = path.read_bytes(), [], 7, b""  # header ":W&B" + magic + version
    block = 32768
    while offset + 7 <= len(data):
        if block - offset % block < 7:  # block trailer: padding
            offset += block - offset % block
            continue
        length, kind = struct.unpack_from("<H", data, offset + 4)[0], data[offset + 6]
        if length == 0 and kind == 0:
            break
        pending += data[offset + 7 : offset + 7 + length]
        offset += 7 + length
        if kind in (1, 4):  # FULL or LAST
            record = wandb_internal_pb2.Record.FromString(pending)
            pending = b""
            if record.HasField("history"):
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                             for item in record.history.item})
    return rows


def test_wandb_offline_runs_hold_the_metrics(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "r"
    run_a2c(out=out, seeds=1, sweep={"lr": [6e-3, 3e-3]}, stop_after_chunks=2, on_chunk=loggers.wandb())
    experiment.resume(out, log=None, on_chunk=loggers.wandb())
    on_disk, steps = csv_metrics(out)
    ids = json.loads((out / "wandb" / "ids.json").read_text())
    assert len(ids) == 2
    for m, run_id in enumerate(ids):
        files = sorted((out / "wandb").glob(f"offline-run-*-{run_id}*/run-{run_id}.wandb"))
        assert len(files) == 2  # the first call's and the resume's, under the same id
        rows = [row for f in files for row in read_wandb_history(f)]
        assert [row["_step"] for row in rows] == steps.tolist()
        for name, values in on_disk.items():
            np.testing.assert_array_equal([row[name] for row in rows], values[m].astype(np.float32), err_msg=name)


# --- missing extras ---------------------------------------------------------------------------


@pytest.mark.parametrize("name, module", [("tensorboard", "tensorboardX"), ("wandb", "wandb")])
def test_a_missing_extra_is_one_line_naming_it(name, module, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    with pytest.raises(experiment.ConfigError, match=rf"pip install 'pgkit\[{name}\]'"):
        getattr(loggers, name)()
    out = tmp_path / "r"
    assert cli.main(["train", "a2c", "--seeds", "1", "--steps", "64", "--out", str(out), "--log", name]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and f"pgkit[{name}]" in error
    assert not out.exists()  # refused before anything was written


def test_an_unknown_logger_is_one_line(capsys):
    assert cli.main(["resume", "nowhere", "--log", "mlflow"]) == 2
    assert "--log" in capsys.readouterr().err


def test_the_command_line_streams_to_tensorboard(tmp_path):
    pytest.importorskip("tensorboardX")
    out = tmp_path / "r"
    argv = ["--seeds", "1", "--steps", str(CONFIG["total_steps"]), "--chunk", "3", "--log", "tensorboard"]
    argv += ["--set", "num_envs=4", "--set", "num_steps=8", "--out", str(out)]
    assert cli.main(["train", "a2c", "--sweep", "lr=6e-3,3e-3", *argv]) == 0
    assert cli.main(["resume", str(out), "--log", "tensorboard"]) == 0  # finished: nothing more to log
    on_disk, steps = csv_metrics(out)
    for m, label in enumerate(["lr=0.006", "lr=0.003"]):
        scalars = tensorboard_scalars(out / "tensorboard" / label / "seed0")
        np.testing.assert_array_equal([scalars["episode_return"][s] for s in steps],
                                      on_disk["episode_return"][m].astype(np.float32))
