"""Part 2 of the quick zoo (tests/quick_zoo.py): a file of its own, so another worker runs it."""

import quick_zoo


def test_the_quick_zoo_runs_its_second_part_a_few_updates(tmp_path):
    quick_zoo.check_quick_zoo(tmp_path, 1)
