#!/usr/bin/env bash
# The GPU check as one command for the device tool, after bench/gpu_wheels.sh ran here:
#   run(command="bash bench/gpu_device.sh", carry=[".whl"], timeout_s=540)
# Installs the carried wheels, prints the GPU and the package versions, and runs bench/gpu.py
# (arguments pass through; the default fits a 15-minute lease: PPO CartPole 1, 2048 and 4096
# seeds x 5e5 steps, the target row being 2048; SAC Pendulum 1 and 256 seeds x 20,000).
# Results land in $OUT (gpu.json, gpu.log): copy them to docs/benchmark_results/ and the table
# into docs/benchmarks.md ("GPU").
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD:$PWD/bench" PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.log"
python3 -c "import jax, equinox, optax, distrax, gymnax; print('jax', jax.__version__, jax.devices(), 'equinox', equinox.__version__, 'optax', optax.__version__)" 2>&1 | tee -a "$OUT/gpu.log"
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(--ppo-seeds 1 2048 4096 --sac-seeds 1 256)
python3 bench/gpu.py "${args[@]}" --json "$OUT/gpu.json" 2>&1 | tee -a "$OUT/gpu.log"
