"""pgkit's built-in recipes, one module per algorithm, installed as ``pgkit.recipes``.

The folder is the repository's top-level ``recipes/``; ``pyproject.toml`` maps it to
``pgkit.recipes``, so no top-level ``recipes`` module is installed. A recipe follows the
protocol of ``pgkit.recipe`` and imports only pgkit, never another recipe.
"""

BUILTIN = ("reinforce", "a2c", "a3c", "actor_critic", "npg", "trpo", "ppo", "cem", "ddpg", "td3", "sac", "apg", "shac")
