"""Multi-process runs: the driver on JAX's multi-controller runtime (``jax.distributed``).

Every process runs the same program on its own devices; together they see one global list of
devices, and the driver shards a run's members over all of them (each process computes only
its own members' updates). After each chunk the processes exchange their members' metrics and
state (an all-gather), so each holds the whole run on the host, makes the same decisions
(divergence, stopping) and returns the same :class:`~pgkit.experiment.RunResult`; process 0
alone writes ``config.json``, ``metrics.csv``, the checkpoints, ``summary.json`` and the plot,
and alone prints progress and calls ``on_chunk``. The run directory must be on a filesystem
every process sees (a resumed run reads its checkpoint in each process).

Use::

    from pgkit import experiment
    experiment.distributed.initialize("node0:1234", num_processes=2, process_id=i)  # before JAX starts
    experiment.train("ppo", seeds=16, out="runs/ppo")  # the same call in every process

or ``pgkit train ... --coordinator node0:1234 --num-processes 2 --process-id I``. Under SLURM or
Open MPI, ``initialize()`` without arguments lets JAX read the cluster's layout. Results equal
those of one process with as many devices, member for member and bit for bit (the members of a
device run the same program either way; ``tests/test_distributed.py``). docs/distributed.md
says how to launch.

A peer that does not connect within ``timeout`` seconds, or that dies during the run, is a
:class:`PeerLostError` with one line in every process that is left, instead of a hang or a
stack dump from the runtime.
"""

from __future__ import annotations

import os
import sys
import threading

import jax
import numpy as np

from pgkit.recipe import ConfigError

__all__ = [
    "PeerLostError",
    "initialize",
    "cluster_detected",
    "joined",
    "is_multiprocess",
    "is_main",
    "describe",
    "host_copy",
    "barrier",
    "largest_over_processes",
    "check_members",
]

EXIT_LOST_PEER = 1  # the pgkit command's status when a peer could not be reached or was lost
_joined = False


class PeerLostError(RuntimeError):
    """Another process of a multi-process run could not be reached or stopped answering."""


def cluster_detected() -> bool:
    """Whether this process runs as one task of several under SLURM or Open MPI (JAX reads their layout)."""
    return _cluster_size() > 1


def _cluster_size() -> int:
    """Tasks SLURM or Open MPI launched together (1: neither)."""
    sizes = [os.environ.get(name, "1") for name in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")]
    return max(int(size) if size.isdigit() else 1 for size in sizes)


def initialize(
    coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None, *,
    timeout: float = 60.0,
) -> int:
    """Join a multi-process run; call it before anything starts JAX. Returns its process count (1: none).

    With ``coordinator`` (``HOST:PORT``, where process 0 listens), ``num_processes`` and
    ``process_id`` (0 to ``num_processes - 1``) it joins that run; with none of them, it joins
    the run SLURM or Open MPI launched (:func:`cluster_detected`), or does nothing and returns 1. Every process must call it with the same coordinator and process count.

    If the processes have not all connected within ``timeout`` seconds, it prints one line
    saying so to stderr and ends the process with status 1 (JAX's runtime would otherwise wait
    minutes and then abort with a stack dump). The same ``timeout`` bounds how long a process
    that stops sending heartbeats goes unnoticed. Raises ConfigError for inconsistent
    arguments, or if JAX has already started in this process.
    """
    given = {"coordinator": coordinator, "num_processes": num_processes, "process_id": process_id}
    if all(v is None for v in given.values()):
        if not cluster_detected():
            return 1
        _join({}, timeout, "the cluster's coordinator")
        return _cluster_size()
    missing = [name for name, v in given.items() if v is None]
    if missing:
        raise ConfigError(f"a multi-process run needs coordinator, num_processes and process_id; missing: {', '.join(missing)}")
    host, _, port = str(coordinator).rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"option 'coordinator' expects HOST:PORT, got {coordinator!r}")
    if num_processes < 1:
        raise ConfigError(f"option 'num_processes' must be >= 1, got {num_processes}")
    if not 0 <= process_id < num_processes:
        raise ConfigError(f"option 'process_id' must be 0 to {num_processes - 1}, got {process_id}")
    if not timeout > 0:
        raise ConfigError(f"option 'timeout' must be > 0 seconds, got {timeout}")
    if num_processes == 1:
        return 1
    args = {"coordinator_address": coordinator, "num_processes": num_processes, "process_id": process_id}
    _join(args, timeout, f"coordinator {coordinator}")
    return num_processes


def _join(args: dict, timeout: float, where: str) -> None:
    from pgkit.experiment import devices

    if devices.jax_started():
        raise ConfigError("a multi-process run must be joined before JAX starts (call initialize() first)")
    who = f"process {args['process_id']} of {args['num_processes']}" if args else "this process"
    connected = threading.Event()

    def watchdog():
        if not connected.wait(timeout):
            print(
                f"pgkit: error: {who}: the processes did not all connect to {where} within {timeout:g} s "
                "(is every process started, with the same coordinator and process count, and the port reachable?)",
                file=sys.stderr, flush=True,
            )
            os._exit(EXIT_LOST_PEER)

    threading.Thread(target=watchdog, name="pgkit-join-watchdog", daemon=True).start()
    seconds = max(1, int(timeout))
    try:
        jax.distributed.initialize(
            **args, initialization_timeout=seconds + 30,  # the watchdog speaks first
            heartbeat_timeout_seconds=seconds, shutdown_timeout_seconds=seconds,
        )
    finally:
        connected.set()
    global _joined
    _joined = True


def joined() -> bool:
    """Whether :func:`initialize` joined this process to a multi-process run (JAX not started by asking)."""
    return _joined


def is_multiprocess() -> bool:
    """Whether this process is one of several in a run (after :func:`initialize`)."""
    return jax.process_count() > 1


def is_main() -> bool:
    """Whether this process writes the run directory and prints progress (process 0)."""
    return jax.process_index() == 0


def describe() -> str:
    """``", process 0 of 2"`` in a multi-process run, else ``""`` (for the driver's first line)."""
    return f", process {jax.process_index()} of {jax.process_count()}" if is_multiprocess() else ""


def host_copy(tree, what: str = "the chunk's results"):
    """A NumPy copy of ``tree``, whole in every process (an all-gather of the members of every process).

    On one process this is ``jax.device_get``. A peer lost meanwhile is a :class:`PeerLostError`.
    """
    if not is_multiprocess():
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    try:
        return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))
    except Exception as error:  # gloo and the coordination service raise ValueError or XlaRuntimeError
        raise _lost(what, error) from None


def barrier(what: str) -> None:
    """Wait until every process has reached the barrier of the same name (nothing on one process)."""
    if not is_multiprocess():
        return
    from jax.experimental import multihost_utils

    try:
        multihost_utils.sync_global_devices(what)
    except Exception as error:
        raise _lost(what, error) from None


def largest_over_processes(value: int) -> int:
    """The largest of every process's ``value`` (the same in all; a collective: every process must call it)."""
    if not is_multiprocess():
        return value
    from jax.experimental import multihost_utils

    try:
        return int(np.max(multihost_utils.process_allgather(np.int32(value))))
    except Exception as error:
        raise _lost("agreeing whether to stop", error) from None


def _lost(what: str, error: Exception) -> PeerLostError:
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return PeerLostError(
        f"process {jax.process_index()} of {jax.process_count()} lost contact with the other processes "
        f"({what}: {first[:200]}); restart every process with 'pgkit resume' from the last checkpoint"
    )


def check_members(num_members: int) -> None:
    """A ConfigError unless the members split evenly over the processes (each needs a share)."""
    count = jax.process_count()
    if count > 1 and num_members % count:
        raise ConfigError(
            f"option 'seeds': {num_members} member(s) (settings x seeds) do not split evenly over {count} processes"
        )
