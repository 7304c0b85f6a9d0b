"""pgkit: policy-gradient reinforcement learning in JAX.

Every estimator is a small pure function re-exported here (flat API). Topic modules hold them:
``pgkit.returns``, ``pgkit.estimators``, ``pgkit.baselines``, ``pgkit.importance``,
``pgkit.divergences``, ``pgkit.natural``, ``pgkit.objectives``, ``pgkit.actions``,
``pgkit.critics``, ``pgkit.targets``, ``pgkit.cem``, ``pgkit.traces``.
"""

from pgkit import (
    actions,
    baselines,
    cem,
    critics,
    divergences,
    estimators,
    importance,
    natural,
    objectives,
    returns,
    targets,
    traces,
)
from pgkit.actions import *  # noqa: F401,F403
from pgkit.baselines import *  # noqa: F401,F403
from pgkit.cem import *  # noqa: F401,F403
from pgkit.critics import *  # noqa: F401,F403
from pgkit.divergences import *  # noqa: F401,F403
from pgkit.estimators import *  # noqa: F401,F403
from pgkit.importance import *  # noqa: F401,F403
from pgkit.natural import *  # noqa: F401,F403
from pgkit.objectives import *  # noqa: F401,F403
from pgkit.returns import *  # noqa: F401,F403
from pgkit.targets import *  # noqa: F401,F403
from pgkit.traces import *  # noqa: F401,F403

ESTIMATOR_MODULES = (
    returns,
    estimators,
    baselines,
    importance,
    divergences,
    natural,
    objectives,
    actions,
    critics,
    targets,
    cem,
    traces,
)

__all__ = sorted({name for module in ESTIMATOR_MODULES for name in module.__all__})
__version__ = "0.4.0"
