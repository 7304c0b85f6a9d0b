"""Devices: CPU cores as JAX devices, XLA's CPU threads and settings, members sharded over a mesh.

Everything here runs on the host before or around the compiled programs; nothing depends on a
recipe. The driver calls :func:`shard_members` to place a run's members (leading axis) over the
devices, and :func:`use_cpu_cores` is what the ``pgkit`` command calls first.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import jax
import numpy as np

__all__ = [
    "use_cpu_cores",
    "xla_cpu_threads",
    "use_compilation_cache",
    "use_unrolled_threefry",
    "unrolled_threefry_compiles_fast",
    "jaxlib_version",
    "devices_for",
    "data_mesh",
    "member_sharding",
    "shard_members",
    "devices_used",
    "jax_started",
]


def use_cpu_cores(count: int | None = None, *, members: int | None = None, threads: int | None = None) -> bool:
    """Expose ``count`` CPU cores (default: all this process may use) as separate JAX CPU devices.

    XLA runs one program on one CPU device mostly on one thread: the small matrices of RL
    networks leave the other cores idle. With one device per core the driver shards the members
    (seeds x settings) over the cores, each running its share in parallel (measured gains:
    docs/benchmarks.md, "Driver settings"). The ``pgkit`` command does
    this by default. Each device runs a smaller batch, so float32 rounding differs from a
    one-device run, and over a run the difference compounds into different (equally valid)
    learning curves: results are reproducible for a given device count, and ``config.json``
    records it (``resume`` warns when it differs). Members are split over the largest number
    of devices that divides them (17 members on 16 devices run on one); pass ``members`` to make
    only that many devices.

    XLA's CPU thread pool gets one thread per device (:func:`xla_cpu_threads`), not one per
    core: XLA otherwise hands a program's independent kernels and parts of its large sums to
    idle cores, which changes some results with the machine's core count (TRPO's Fisher
    products) and, for the small kernels of RL networks, costs more than it gains. So with
    ``members=1`` a run gets one device and one thread. A single member with wide networks
    loses the idle cores: pass ``threads`` (at least
    the cores for XLA's own pool of one per core; ``pgkit train --threads``).

    It sets ``--xla_force_host_platform_device_count`` in ``XLA_FLAGS`` and starts JAX's
    backends (XLA reads both once): call it first thing. It does nothing, and returns False, if
    JAX has already started or ``XLA_FLAGS`` already sets a device count (so
    ``XLA_FLAGS=--xla_force_host_platform_device_count=1`` turns it off). GPU devices are not
    affected.
    """
    if count is None:
        count = _usable_cores()
    for name, value in (("count", count), ("members", members), ("threads", threads)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be a positive number, got {value}")
    if members is not None:
        count = devices_for(members, count)
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" in flags or jax_started():
        return False
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={count}".strip()
    _start_jax_with_threads(threads or count)
    return True


def _start_jax_with_threads(threads: int) -> None:
    """Start JAX's backends with ``threads`` threads in XLA's CPU pool (Linux; elsewhere XLA's default).

    XLA sizes that pool to the cores the process may run on when the backend starts: the
    calling thread is narrowed to ``threads`` cores for that moment, and every thread started
    meanwhile (the pool's) gets the process's cores back, so nothing else is confined.
    """
    narrowed = False
    if hasattr(os, "sched_setaffinity") and Path("/proc/self/task").is_dir():
        allowed = os.sched_getaffinity(0)
        before = set(os.listdir("/proc/self/task"))
        try:
            if threads < len(allowed):
                os.sched_setaffinity(0, sorted(allowed)[:threads])
                narrowed = True
        except OSError:  # not permitted here: XLA's default pool
            pass
    try:
        jax.devices()
    finally:
        if narrowed:
            os.sched_setaffinity(0, allowed)
            for tid in set(os.listdir("/proc/self/task")) - before:
                try:
                    os.sched_setaffinity(int(tid), allowed)
                except OSError:  # the thread has ended
                    pass


def xla_cpu_threads() -> int | None:
    """Threads in XLA's CPU pool in this process (Linux; None where that cannot be read)."""
    try:
        tasks = Path("/proc/self/task").iterdir()
        return sum((task / "comm").read_text().strip() == "tf_XLAEigen" for task in tasks) or None
    except OSError:
        return None


def jax_started() -> bool:
    """Whether JAX has created its backends (after which XLA_FLAGS is no longer read)."""
    try:
        from jax._src import xla_bridge

        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):  # private API gone: assume started, change nothing
        return True


def _usable_cores() -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota (containers)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return cores


def use_compilation_cache(directory: str | os.PathLike | None = None) -> Path | None:
    """Keep compiled XLA programs on disk, so that a run repeating a configuration skips compiling.

    The directory is ``directory``, else ``$PGKIT_CACHE_DIR``, else ``~/.cache/pgkit/xla``;
    ``PGKIT_CACHE_DIR=""`` turns the cache off (returns None). JAX keys each entry by the
    program, the devices and the compiler flags, so a stale entry is never used; programs that
    compile in under a second are not stored. The ``pgkit`` command calls this.
    """
    if directory is None:
        directory = os.environ.get("PGKIT_CACHE_DIR", str(Path.home() / ".cache" / "pgkit" / "xla"))
    if not str(directory):
        return None
    directory = Path(directory).expanduser()
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    return directory


def use_unrolled_threefry(enable: bool = True) -> bool:
    """Lower JAX's threefry random-bit hash on the CPU as straight-line code (``False``: restore).

    On the CPU, JAX lowers every threefry call (each ``split``, ``normal``, ``categorical``...) to
    a 5-iteration while loop; an RL update draws keys at many places, and XLA compiles each
    loop separately. The unrolled form is the one JAX itself uses on GPUs: the same 20 rounds of
    the same uint32 arithmetic, so every random number is bit-identical (tested), and a PPO
    program compiles faster (docs/benchmarks.md, "Driver settings"). The driver turns it on,
    again each time it builds a program; call it yourself to get the same for your own
    programs. JAX registers this rule out of line on GPUs; here it is inlined.
    Programs already compiled keep their lowering. It needs a private JAX hook; where that is
    gone it does nothing and returns False. From jaxlib 0.11 on it also does nothing and returns
    False: that XLA's LLVM takes minutes over the unrolled hash (its loop vectoriser), where
    JAX's own loop compiles in seconds.
    """
    if enable and not unrolled_threefry_compiles_fast(jaxlib_version()):
        return False
    try:
        from jax._src.interpreters import mlir
        from jax._src.random import threefry2x32 as threefry

        rule = threefry._threefry2x32_lowering_rule if enable else threefry._threefry2x32_cpu_lowering_rule
        mlir.register_lowering(threefry.threefry2x32_p, rule, platform="cpu")
    except (ImportError, AttributeError):
        return False
    return True


def jaxlib_version() -> tuple[int, ...]:
    """The installed jaxlib's version as (major, minor, patch)."""
    import jaxlib.version

    return tuple(int(part) for part in re.findall(r"\d+", jaxlib.version.__version__)[:3])


def unrolled_threefry_compiles_fast(version: tuple[int, ...]) -> bool:
    """Whether XLA compiles the unrolled threefry quickly: measured up to jaxlib 0.10, not from 0.11."""
    return version < (0, 11)


def shard_members(tree, num_members: int, data_shards: int = 1, *, shards_axis: bool = False):
    """Place every leaf (leading axis: members) split over the devices (no-op on one device).

    ``data_shards`` > 1 (a data-parallel recipe) places over :func:`data_mesh` where it has
    one; ``shards_axis`` says the leaves have the shards' axis after the members' (the state),
    split over the mesh's ``data`` devices, where other leaves (keys, hyperparameters) are
    replicated over them. Leaves that do not depend on the keys (zero biases, optimiser
    counters) would otherwise come out of a sharded init replicated, and the chunk program
    would be compiled for that mix.
    """
    sharding = member_sharding(num_members, data_shards, shards_axis=shards_axis)
    if sharding is None:
        return tree
    if jax.process_count() > 1:  # each process places its own rows of the whole host value
        tree = jax.tree.map(lambda x: np.asarray(x) if isinstance(x, jax.Array) and x.is_fully_addressable else x, tree)
    return jax.device_put(tree, sharding)


def devices_used(num_members: int, data_shards: int = 1) -> int:
    """Devices that ``num_members`` members are split over here (1: no sharding)."""
    sharding = member_sharding(num_members, data_shards)
    return 1 if sharding is None else len(sharding.device_set)


def devices_for(num_members: int, available: int) -> int:
    """The most devices, up to ``available``, that split ``num_members`` evenly."""
    return max(d for d in range(1, available + 1) if num_members % d == 0)


def data_mesh(num_members: int, data_shards: int):
    """The ``(members, data)`` mesh of a data-parallel run: each member's shards on ``data_shards``
    devices, the members over as many such groups as divide them; None when there are fewer
    devices than shards (the shards then share a device) or several processes (not supported)."""
    devices = jax.devices()
    if data_shards < 2 or len(devices) < data_shards or jax.process_count() > 1:
        return None
    groups = devices_for(num_members, len(devices) // data_shards)
    return jax.sharding.Mesh(np.array(devices[: groups * data_shards]).reshape(groups, data_shards), ("members", "data"))


def member_sharding(num_members: int, data_shards: int = 1, *, shards_axis: bool = False):
    """Members split evenly over as many devices as divide their number (None: one device).

    With ``data_shards`` > 1 and a :func:`data_mesh`, the sharding over that mesh: members over
    its ``members`` axis and, with ``shards_axis``, the leaves' second axis over ``data``.

    In a multi-process run (:mod:`.distributed`) every process takes the same number of its
    own devices, in process order, so process ``p`` holds a contiguous ``1/P`` of the members.
    """
    mesh = data_mesh(num_members, data_shards)
    if mesh is not None:
        spec = ("members", "data") if shards_axis else ("members",)
        return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(*spec))
    processes = jax.process_count()
    if processes == 1:
        chosen = jax.devices()[: devices_for(num_members, len(jax.devices()))]
    else:
        by_process = [sorted((d for d in jax.devices() if d.process_index == p), key=lambda d: d.id)
                      for p in range(processes)]
        local = min(len(ds) for ds in by_process)
        per_process = max(k for k in range(1, local + 1) if num_members % (k * processes) == 0)
        chosen = [d for ds in by_process for d in ds[:per_process]]
    if len(chosen) == 1:
        return None
    mesh = jax.sharding.Mesh(np.array(chosen), ("members",))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("members"))
