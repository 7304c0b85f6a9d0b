#!/usr/bin/env bash
# Wheels the lent GPU machine lacks, fetched HERE (it reaches no package index) into .whl/
# (gitignored); `run` carries them (carry: [".whl"]) and bench/gpu_device.sh installs them there.
# The machine's image has Python 3.12 with jax, jaxlib (CUDA), equinox, optax, chex, flax,
# matplotlib and seaborn (/work/.library/device/KINDS.md); pgkit needs distrax and gymnax besides,
# and their requirements that the image lacks.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl && mkdir -p .whl
fetch() {
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl "$@"
}
fetch distrax==0.1.9 tfp-nightly==0.26.0.dev20261027 dm-tree==0.1.10 gast==0.7.0 decorator==5.3.1 \
  gymnax==1.0.1 gymnasium==1.3.0 farama-notifications==0.0.6
du -sh .whl && ls .whl
