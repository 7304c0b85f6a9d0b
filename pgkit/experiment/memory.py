"""Memory pre-flight: a run that cannot fit is refused in one line before anything is allocated.

:func:`check_fits` sizes the members' state and one chunk's outputs with ``jax.eval_shape``
(no memory is touched), multiplies by the copies the driver keeps, and compares with what is
free: host memory on a CPU (``MemAvailable``, within the cgroup's limit), each used device's
memory on an accelerator (its ``memory_stats``) plus host memory for the checkpoint copies.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import jax
import numpy as np

from pgkit.recipe import ConfigError, options_of

__all__ = ["tree_bytes", "host_available_bytes", "device_available_bytes", "check_fits", "format_bytes"]


def tree_bytes(shapes) -> int:
    """Bytes of every array leaf of ``shapes`` (arrays or ``jax.ShapeDtypeStruct``)."""
    return sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(shapes) if hasattr(x, "shape"))


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # cgroup v2 writes "max" for no limit


def host_available_bytes() -> int | None:
    """Host memory free for this process: ``MemAvailable``, capped by a cgroup's limit (None: unknown)."""
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if available is None and hasattr(os, "sysconf"):
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            pass
    for limit_path, usage_path in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        limit, usage = _read_int(limit_path), _read_int(usage_path)
        if limit is not None and usage is not None and limit < 2**60:
            room = max(limit - usage, 0)
            available = room if available is None else min(available, room)
    return available


def device_available_bytes(device) -> int | None:
    """Free memory of an accelerator from its ``memory_stats`` (None: it reports none)."""
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if not stats or "bytes_limit" not in stats:
        return None
    return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))


def format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def _largest_leaf(shapes):
    leaves = [(path, x) for path, x in jax.tree_util.tree_flatten_with_path(shapes)[0] if hasattr(x, "shape")]
    return max(leaves, key=lambda item: math.prod(item[1].shape) * np.dtype(item[1].dtype).itemsize)


def _sized_by(config, shape) -> list[str]:
    """The integer options of ``config`` whose value is a dimension of ``shape``."""
    return [
        f"{name}={getattr(config, name)}"
        for name in options_of(type(config))
        if isinstance(getattr(config, name), int)
        and not isinstance(getattr(config, name), bool)
        and getattr(config, name) > 1
        and getattr(config, name) in shape
    ]


def check_fits(
    state_shapes, output_shapes, *, config, num_settings: int, seeds: int, device_copies: int, host_copies: int,
    devices_used: list,
) -> dict:
    """Raise a one-line ConfigError if the run cannot fit; return the estimate otherwise.

    ``state_shapes`` has a leading member axis; the driver keeps ``device_copies`` of it on the
    devices (the running state, and the state one chunk back while a diverging member is
    replayed) and ``host_copies`` in host memory (the checkpoint copies), plus ``output_shapes``
    (one chunk's metrics). On a CPU the devices are host memory too.
    """
    state = tree_bytes(state_shapes)
    outputs = tree_bytes(output_shapes)
    members = num_settings * seeds
    on_cpu = all(d.platform == "cpu" for d in devices_used)
    device_need = device_copies * state + outputs
    host_need = host_copies * state + outputs
    checks = []
    if on_cpu:
        checks.append(("host", device_need + host_need, host_available_bytes(), device_copies + host_copies))
    else:
        free = [device_available_bytes(d) for d in devices_used]
        if None not in free:
            checks.append((f"{devices_used[0].platform} device", device_need / len(devices_used), min(free), device_copies))
        checks.append(("host", host_need, host_available_bytes(), host_copies))
    estimate = {"state_bytes": state, "output_bytes": outputs, "checks": checks}
    for where, need, free, copies in checks:
        if free is None or need <= free:
            continue
        path, leaf = _largest_leaf(state_shapes)
        sized_by = _sized_by(config, leaf.shape[1:])
        per_device = "" if where == "host" else f" over {len(devices_used)} device(s)"
        raise ConfigError(
            f"the run cannot fit: it needs about {format_bytes(need)} of {where} memory{per_device} but "
            f"{format_bytes(free)} is free (state {format_bytes(state / members)} per member x {members} members "
            f"= {num_settings} setting(s) x {seeds} seed(s), kept {copies} times; the largest part, "
            f"state{jax.tree_util.keystr(path)} {list(leaf.shape[1:])} {np.dtype(leaf.dtype).name} per member"
            + (f", is sized by {', '.join(sized_by)}" if sized_by else "")
            + f"); lower {', '.join(n.partition('=')[0] for n in sized_by) + ', ' if sized_by else ''}"
            "seeds or the sweep"
        )
    return estimate
