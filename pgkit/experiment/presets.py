"""Presets: tuned option values per (recipe, environment), applied when a run trains on that environment.

The built-in recipes' presets are data, in ``pgkit/experiment/presets.toml`` (one table per
recipe and environment, with the sweep that tuned it); a researcher's own recipe may carry its
own as a module attribute ``PRESETS = {"Pendulum-v1": {"lr": 1e-3, "num_envs": 8}}``. The
file's ``[no-preset]`` table says why the environments without a built-in preset have none
(:func:`environments_without_preset`; ``pgkit list`` prints it).

``pgkit.experiment.train`` looks up the run's environment (the exact name, so
``CartPole-v1[0,2]`` has presets of its own), takes the preset's values as the defaults, and lets
the caller's ``config``/``hparams`` (the CLI's ``--set`` and ``--steps``) override them;
``config.json`` records which preset was applied and its values. ``preset=False`` (the CLI's
``--no-preset``) trains with the recipe's own defaults::

    experiment.train("ppo", env="Pendulum-v1", seeds=4)                 # the ppo/Pendulum-v1 preset
    experiment.train("ppo", env="Pendulum-v1", config={"num_envs": 16})  # the preset, one option changed
"""

from __future__ import annotations

import functools
import tomllib
import types
import typing
from pathlib import Path
from typing import NamedTuple

from pgkit.experiment import registry
from pgkit.recipe import ConfigError, options_of

__all__ = [
    "NO_PRESET",
    "PRESETS_FILE",
    "Preset",
    "builtin_presets",
    "environments_without_preset",
    "lookup",
    "presets_of",
    "split_options",
]

PRESETS_FILE = Path(__file__).with_name("presets.toml")
NO_PRESET = "no-preset"  # the table of presets.toml that says why an environment has no preset (not a recipe name)


class Preset(NamedTuple):
    """One preset: option values for ``recipe`` on ``env``.

    Attributes:
      recipe: the recipe's name.
      env: the environment's name (exact, observation indices included).
      options: ``{option: value}`` over the recipe's ``Config`` and ``HParams`` fields.
      tuned: how the values were chosen (the sweep and its outcome), "" if not recorded.
      reference: a published figure for this environment to compare with, "" if none.
    """

    recipe: str
    env: str
    options: dict
    tuned: str = ""
    reference: str = ""

    @property
    def name(self) -> str:
        return f"{self.recipe}/{self.env}"


def _table() -> dict:
    try:
        return tomllib.loads(PRESETS_FILE.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"cannot read the presets file {str(PRESETS_FILE)!r}: {error}") from None


def environments_without_preset() -> dict[str, str]:
    """``{env: reason}``: the environments of ``pgkit list`` that no built-in preset covers, and why
    (the ``[no-preset]`` table of :data:`PRESETS_FILE`: an environment no policy can learn, one that
    cannot be built offline, one too slow to tune on a CPU)."""
    reasons = _table().get(NO_PRESET, {})
    if not all(isinstance(reason, str) and reason for reason in reasons.values()):
        raise ConfigError(f"[{NO_PRESET}] in {PRESETS_FILE.name}: each environment needs a reason string")
    return dict(reasons)


@functools.cache
def builtin_presets() -> dict[str, dict[str, Preset]]:
    """``{recipe: {env: Preset}}`` read from :data:`PRESETS_FILE` (a ConfigError if it is malformed)."""
    presets = {}
    for recipe, envs in _table().items():
        if recipe == NO_PRESET:
            continue
        presets[recipe] = {}
        for env, entry in envs.items():
            unknown = set(entry) - {"set", "tuned", "reference"}
            if unknown or not isinstance(entry.get("set"), dict):
                raise ConfigError(
                    f"preset {recipe}/{env} in {PRESETS_FILE.name}: expected a 'set' table and optional "
                    f"'tuned' and 'reference' strings, got keys {', '.join(sorted(entry))}"
                )
            presets[recipe][env] = Preset(recipe, env, dict(entry["set"]), entry.get("tuned", ""), entry.get("reference", ""))
    return presets


def presets_of(module: types.ModuleType) -> dict[str, Preset]:
    """``{env: Preset}`` of a recipe module: its ``PRESETS`` attribute, else the built-in table's entry.

    Only the built-in module of a name gets the table's presets: a researcher's file that happens
    to be called ``ppo.py`` does not.
    """
    name = registry.recipe_name(module)
    own = getattr(module, "PRESETS", None)
    if own is not None:
        if not isinstance(own, dict) or not all(isinstance(v, dict) for v in own.values()):
            raise ConfigError(f"recipe {name!r}: PRESETS must map environment names to {{option: value}} dicts")
        return {env: Preset(name, env, dict(values)) for env, values in own.items()}
    if registry.recipe_source(module) == {"builtin": name}:
        return builtin_presets().get(name, {})
    return {}


def lookup(module: types.ModuleType, env: str) -> Preset | None:
    """The preset of ``module`` for the environment named exactly ``env``, or None."""
    return presets_of(module).get(env)


def split_options(module: types.ModuleType, preset: Preset) -> tuple[dict, dict]:
    """``(config, hparams)``: a preset's values sorted into the recipe's ``Config`` and ``HParams`` fields.

    Lists become tuples (``hidden_sizes``) and ints become floats for float fields; a name that is
    neither field is a ConfigError naming the preset.
    """
    config_fields, hparam_fields = options_of(module.Config), options_of(module.HParams)
    config, hparams = {}, {}
    for option_name, value in preset.options.items():
        if option_name in config_fields:
            kind = typing.get_type_hints(module.Config)[option_name]
            config[option_name] = tuple(value) if typing.get_origin(kind) is tuple else value
        elif option_name in hparam_fields:
            hparams[option_name] = float(value) if isinstance(value, int) and not isinstance(value, bool) else value
        else:
            raise ConfigError(
                f"preset {preset.name} sets unknown option {option_name!r}; available: "
                f"{', '.join([*config_fields, *hparam_fields])}"
            )
    return config, hparams
