"""The convolutional torso's two formulations: XLA's convolution against patches times a matrix.

pgkit.nn.ConvNetwork computes each convolution as the product of the image's k·k patches with
the kernel reshaped to a matrix (im2col). This script times, in one invocation, both ways:
PPO's whole update on Breakout-MinAtar (the torso=cnn default, 16 envs x 64 steps, seeds
vmapped as in a multi-seed run) and the bare gradient of a batch through the network, and
checks that the two formulations give the same outputs:

    python bench/conv_torso.py [--members 4] [--batch 512] [--repeats 5]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from pgkit import nn


def lax_conv_forward(net: nn.ConvNetwork, x):
    """The same network with ``jax.lax.conv_general_dilated`` for each convolution (the peer)."""
    sigma = nn.ACTIVATIONS[net.activation]
    z = jnp.reshape(x, net.image_shape)[None]
    for kernel, bias in zip(net.kernels, net.biases):
        z = jax.lax.conv_general_dilated(z, kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        z = sigma(z + bias)
    return net.head(jnp.reshape(z, (-1,)))


def median_ms(fn, *args, repeats):
    jax.block_until_ready(fn(*args))  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def ppo_update_ms(members, repeats):
    from pgkit.recipes import ppo

    recipe = ppo.make(ppo.Config(num_envs=16, num_steps=64, torso="cnn"), "Breakout-MinAtar")
    hp = jax.tree.map(lambda v: jnp.full((members,), v, jnp.float32), ppo.HParams())
    state = jax.jit(jax.vmap(recipe.init))(jax.random.split(jax.random.key(0), members), hp)
    return median_ms(jax.jit(jax.vmap(recipe.update)), state, hp, repeats=repeats)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=4, help="vmapped networks (seeds)")
    parser.add_argument("--batch", type=int, default=512, help="observations per member")
    parser.add_argument("--shape", type=int, nargs=3, default=(10, 10, 4), help="H W C (MinAtar: 10 10 C)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    shape = tuple(args.shape)
    print(f"PPO update on Breakout-MinAtar, {args.members} members, median of {args.repeats}:")
    library_call = nn.ConvNetwork.__call__
    for name, call in [("pgkit (im2col)", library_call), ("lax.conv_general_dilated", lax_conv_forward)]:
        nn.ConvNetwork.__call__ = call
        print(f"  {name:26s} {ppo_update_ms(args.members, args.repeats):8.1f} ms")
    nn.ConvNetwork.__call__ = library_call
    keys = jax.random.split(jax.random.key(0), args.members)
    nets = jax.vmap(lambda k: nn.ConvNetwork(shape, 3, key=k))(keys)
    x = jax.random.uniform(jax.random.key(1), (args.members, args.batch, int(np.prod(shape))))
    forwards = {"pgkit (im2col)": lambda net, xi: net(xi), "lax.conv_general_dilated": lax_conv_forward}
    outputs = {}
    print(f"{args.members} members x {args.batch} observations of {shape}, {jax.devices()[0].platform}, "
          f"gradient of a batch, median of {args.repeats}:")
    for name, forward in forwards.items():
        def loss(net, batch, forward=forward):
            return jax.vmap(lambda xi: forward(net, xi))(batch).sum()

        grad = jax.jit(jax.vmap(jax.grad(loss)))
        outputs[name] = jax.jit(jax.vmap(lambda net, b, f=forward: jax.vmap(lambda xi: f(net, xi))(b)))(nets, x)
        print(f"  {name:26s} {median_ms(grad, nets, x, repeats=args.repeats):8.2f} ms")
    a, b = outputs.values()
    print(f"  largest output difference {float(jnp.abs(a - b).max()):.3g}")


if __name__ == "__main__":
    main()
