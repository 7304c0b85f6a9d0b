"""The quick zoo CI runs (every built-in preset started and run for two updates), split in parts.

The presets compile one program each (about 10 s; a Brax preset about 30 s), so one file of all
of them ran alone at the end of the suite: ``tests/test_recipe_presets*.py`` each check one part,
and pytest-xdist hands the files to different workers.
"""

import numpy as np

from pgkit import plot
from pgkit.experiment import zoo

PARTS = 3


def part(index: int) -> list[str]:
    """Every ``PARTS``-th preset from the ``index``-th: the parts cover the table once."""
    return [preset.name for preset in zoo.selected_presets()][index::PARTS]


def check_quick_zoo(out, index: int) -> None:
    """Run part ``index`` of the quick zoo in ``out``; check its table, plots and metrics."""
    names = part(index)
    rows = zoo.zoo(out, runs=out / "runs", quick=True, only=names, log=None)
    assert [row["preset"] for row in rows] == names
    table = (out / "zoo.md").read_text()
    for row in rows:
        assert f"| {row['preset']} |" in table
        assert (out / row["plot"]).stat().st_size > 0
        metrics = plot.read_metrics(out / "runs" / f"{row['recipe']}-{row['env']}")
        assert len(np.unique(metrics["update"])) == zoo.QUICK_UPDATES  # two updates, logged
        assert np.isfinite(metrics["env_steps"]).all() and row["seeds"] == zoo.QUICK_SEEDS
