"""Free-running actor threads feeding a learner: how the driver runs a recipe's ActorLearner.

One chunk of L updates (:class:`ThreadedChunks`, called as ``chunk(state, hparams)``, like
the driver's compiled chunk programs):

    every actor thread i = 0..A-1, until the learner has done L updates:
        (params, version) <- the latest the learner published
        part_i, message <- act(part_i, params)           (a rollout, and what the recipe's actor
                                                         computes from it; all members, vmapped)
        put (i, version, params, message) on the queue  (blocks while it holds queue_size)
    the learner (the calling thread), until L updates are done:
        take the oldest item; staleness = updates done - version
        staleness > max_staleness and drop_stale: drop it
        else: state, metrics <- learn(state, params, message, staleness); publish params(state)
    stop the actors (a rollout under way finishes; what is still queued is dropped), write their
    parts back into the state

The chunk's end state is consistent (the learner's state with every actor's environments as
they are), so the driver checkpoints and resumes it as any state; a resumed run restarts the
actors with the current parameters. Which message arrives when depends on the threads'
timing, so runs are not bit-reproducible. Each update's metrics gain ``staleness`` (from the
recipe), ``queue_wait`` (seconds the learner waited for the message) and ``dropped`` (items
dropped since the previous update); :attr:`ThreadedChunks.timing` keeps the last chunk's utilisation: the
fraction of the wall time each actor spent acting and the learner in updates.

JAX releases the interpreter lock while a compiled program runs, so the actors' rollouts and the
learner's updates run at the same time on the CPU's cores or on separate devices.
"""

from __future__ import annotations

import queue
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np

from ..recipe import ActorLearner

__all__ = ["ThreadedChunks"]

_POLL = 0.05  # seconds between checks of the stop flag while blocked on the queue


class ThreadedChunks:
    """``chunk(state, hparams) -> (state, metrics)``: ``length`` learner updates with actor threads.

    ``state`` and ``hparams`` have a leading member axis ``[M]``; ``metrics`` maps each name to an
    ``[M, length]`` array, as the driver's compiled chunks return them. An error in any thread
    stops all of them and is raised here.
    """

    def __init__(self, spec: ActorLearner, length: int):
        if spec.num_actors < 1 or spec.queue_size < 1:
            raise ValueError(f"num_actors and queue_size must be >= 1, got {spec.num_actors}, {spec.queue_size}")
        self.spec, self.length = spec, length
        self._part = jax.jit(jax.vmap(spec.actor_part, in_axes=(0, None)), static_argnums=1)
        self._act = jax.jit(jax.vmap(spec.act))

        def learn(state, params, message, staleness, hparams):  # and the parameters to publish: one dispatch
            state, metrics = spec.learn(state, params, message, staleness, hparams)
            return state, metrics, spec.params(state)

        self._learn = jax.jit(jax.vmap(learn, in_axes=(0, 0, 0, None, 0)))
        self._params = jax.jit(jax.vmap(spec.params))
        self._with_actors = jax.jit(jax.vmap(spec.with_actors))
        self.timing: dict = {}

    def __call__(self, state, hparams):
        spec = self.spec
        parts = [self._part(state, i) for i in range(spec.num_actors)]
        items: queue.Queue = queue.Queue(maxsize=spec.queue_size)
        stop = threading.Event()
        lock = threading.Lock()
        published = {"params": self._params(state), "version": 0}
        busy = [0.0] * spec.num_actors
        errors: list[BaseException] = []

        def actor(i):
            try:
                while not stop.is_set():
                    with lock:
                        params, version = published["params"], published["version"]
                    start = time.perf_counter()
                    parts[i], message = jax.block_until_ready(self._act(parts[i], params, hparams))
                    busy[i] += time.perf_counter() - start
                    while not stop.is_set():
                        try:
                            items.put((i, version, params, message), timeout=_POLL)
                            break
                        except queue.Full:
                            pass
            except BaseException as error:  # noqa: BLE001 - raised again in the learner's thread
                errors.append(error)
                stop.set()

        threads = [threading.Thread(target=actor, args=(i,), name=f"pgkit-actor-{i}", daemon=True)
                   for i in range(spec.num_actors)]
        wall = time.perf_counter()
        for thread in threads:
            thread.start()
        members = jax.tree.leaves(hparams)[0].shape[0]
        collected, learning, done = [], 0.0, 0
        dropped = dropped_total = 0  # since the last update, in the chunk
        try:
            while done < self.length:
                waited = time.perf_counter()
                item = None
                while item is None:
                    if errors:
                        raise errors[0]
                    try:
                        item = items.get(timeout=_POLL)
                    except queue.Empty:
                        pass
                waited = time.perf_counter() - waited
                _, version, params, message = item
                staleness = done - version
                if spec.drop_stale and staleness > spec.max_staleness:
                    dropped, dropped_total = dropped + 1, dropped_total + 1
                    continue
                start = time.perf_counter()
                state, metrics, new_params = self._learn(state, params, message, np.int32(staleness), hparams)
                jax.block_until_ready(new_params)
                learning += time.perf_counter() - start
                done += 1
                with lock:
                    published["params"], published["version"] = new_params, done
                metrics = dict(metrics)
                metrics["queue_wait"] = np.full((members,), waited, np.float32)
                metrics["dropped"] = np.full((members,), dropped, np.float32)
                collected.append(metrics)
                dropped = 0
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        wall = time.perf_counter() - wall
        if errors:
            raise errors[0]
        self.timing = {
            "wall_seconds": wall, "learner_busy": learning / wall, "actor_busy": [b / wall for b in busy],
            "updates": done, "dropped": dropped_total, "queued_at_end": items.qsize(),
        }
        state = self._with_actors(state, parts)
        metrics = {name: jnp.stack([m[name] for m in collected], axis=1) for name in collected[0]}
        return state, metrics
