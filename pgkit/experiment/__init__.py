"""The experiment driver: train, resume and evaluate any recipe over seeds x a hyperparameter grid.

One file per concern:

- :mod:`.driver`: the run loop (``train``, ``resume``), one compiled program per run, in chunks;
- :mod:`.store`: the run directory (config, metrics, checkpoints, progress, summary);
- :mod:`.memory`: the pre-flight that refuses a run that cannot fit, before it allocates;
- :mod:`.devices`: CPU cores as devices, XLA's threads and settings, members sharded over a mesh;
- :mod:`.distributed`: multi-process runs on ``jax.distributed`` (members over every process's devices);
- :mod:`.evaluate`: greedy evaluation of a run's final policies;
- :mod:`.registry`: where a recipe comes from (built-in name, module, file or dotted path).

A recipe is any module that follows :mod:`pgkit.recipe`, built-in or a researcher's own::

    from pgkit import experiment
    result = experiment.train(my_algo, seeds=4, sweep={"lr": [1e-3, 3e-4]}, out="runs/x")
    experiment.resume("runs/x"); experiment.evaluate("runs/x")
"""

from pgkit.experiment.devices import (
    use_compilation_cache as use_compilation_cache,
    use_cpu_cores as use_cpu_cores,
    use_unrolled_threefry as use_unrolled_threefry,
    xla_cpu_threads as xla_cpu_threads,
)
from pgkit.experiment import distributed as distributed
from pgkit.experiment.distributed import PeerLostError as PeerLostError
from pgkit.experiment.driver import (
    Interrupted as Interrupted,
    NonFiniteError as NonFiniteError,
    ChunkMetrics as ChunkMetrics,
    RunResult as RunResult,
    resume as resume,
    train as train,
)
from pgkit.experiment.evaluate import evaluate as evaluate
from pgkit.experiment.store import WriteError as WriteError
from pgkit.experiment.registry import (
    available_recipes as available_recipes,
    load_recipe as load_recipe,
)
from pgkit.recipe import ConfigError as ConfigError

__all__ = [
    "ChunkMetrics",
    "ConfigError",
    "Interrupted",
    "NonFiniteError",
    "PeerLostError",
    "WriteError",
    "RunResult",
    "available_recipes",
    "distributed",
    "evaluate",
    "load_recipe",
    "resume",
    "train",
    "use_compilation_cache",
    "use_cpu_cores",
    "use_unrolled_threefry",
    "xla_cpu_threads",
]
