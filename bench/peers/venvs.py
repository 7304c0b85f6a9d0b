"""Peer virtual environments under bench/.venvs/: created and filled by the benchmark itself.

Standard library only (compare.py imports it from whatever Python runs it). Each peer gets
its own venv so that nothing it installs reaches pgkit's. A venv is (re)built when its pinned
requirement list changes; the install time and the venv's size are recorded next to it in
``bench-install.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

VENVS_DIR = Path(__file__).resolve().parent.parent / ".venvs"

# Pinned so that results can be reproduced. torch==2.13.0 is the CPU wheel that pip takes
# from this machine's disk; other versions would download multi-GB CUDA builds.
# rejax 0.1.3 asks for jax>=0.4.34 and gymnax>=0.0.9; it runs on the same jax as pgkit
# (0.10.2), which keeps the comparison free of a jax-version effect.
PEERS = {
    "rejax": [
        ["rejax==0.1.3", "gymnax==0.0.9", "jax==0.10.2", "jaxlib==0.10.2"],
    ],
    "sb3": [
        ["torch==2.13.0"],  # first, alone: the local CPU wheel
        ["torch==2.13.0", "stable-baselines3==2.9.2", "sb3-contrib==2.9.2"],
    ],
}


def python_of(name: str) -> Path:
    return VENVS_DIR / name / "bin" / "python"


def _size_mb(path: Path) -> float:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            p = os.path.join(root, f)
            if not os.path.islink(p):
                total += os.path.getsize(p)
    return total / 2**20


def install_info(name: str) -> dict | None:
    path = VENVS_DIR / name / "bench-install.json"
    return json.loads(path.read_text()) if path.exists() else None


def ensure(name: str, *, base_python: str | None = None, log=print) -> Path:
    """Create ``bench/.venvs/<name>`` with the pinned requirements unless it already matches."""
    steps = PEERS[name]
    info = install_info(name)
    if info is not None and info.get("requirements") == steps and python_of(name).exists():
        return python_of(name)
    venv = VENVS_DIR / name
    if venv.exists():
        shutil.rmtree(venv)
    VENVS_DIR.mkdir(parents=True, exist_ok=True)
    base = base_python or getattr(sys, "_base_executable", None) or sys.executable
    log(f"# installing peer venv {venv} ({'; '.join(' '.join(s) for s in steps)}) ...")
    t0 = time.perf_counter()
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    pip = [str(python_of(name)), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    for step in steps:
        subprocess.run(pip + step, check=True)
    seconds = time.perf_counter() - t0
    frozen = subprocess.run(
        [str(python_of(name)), "-m", "pip", "freeze", "--disable-pip-version-check"],
        check=True, capture_output=True, text=True,
    ).stdout.split()
    info = {
        "requirements": steps,
        "install_seconds": round(seconds, 1),
        "size_mb": round(_size_mb(venv), 1),
        "python": subprocess.run(
            [str(python_of(name)), "-c", "import sys; print(sys.version.split()[0])"],
            check=True, capture_output=True, text=True,
        ).stdout.strip(),
        "freeze": frozen,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    (venv / "bench-install.json").write_text(json.dumps(info, indent=2) + "\n")
    log(f"# installed {name} in {seconds:.0f} s, {info['size_mb']:.0f} MB")
    return python_of(name)


if __name__ == "__main__":
    for peer in sys.argv[1:] or list(PEERS):
        ensure(peer)
