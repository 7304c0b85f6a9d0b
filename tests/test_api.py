"""The flat public API: every exported estimator is documented to the house standard."""

import doctest
import inspect

import pytest

import pgkit

REQUIRED_SECTIONS = ("Args:", "Returns:", "Gradients:", "Example:", "Reference:")


def test_api_is_not_empty():
    assert len(pgkit.__all__) > 0


@pytest.mark.parametrize("name", pgkit.__all__)
def test_exported_name_is_documented(name):
    obj = getattr(pgkit, name)
    doc = inspect.getdoc(obj)
    assert doc, f"pgkit.{name} has no docstring"
    if inspect.isfunction(obj):
        missing = [s for s in REQUIRED_SECTIONS if s not in doc]
        assert not missing, f"pgkit.{name} docstring lacks {missing}"


@pytest.mark.parametrize("module", pgkit.ESTIMATOR_MODULES, ids=lambda m: m.__name__)
def test_docstring_examples_run(module):
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(module, module.__name__, globs={"pgkit": pgkit}):
        runner.run(test)
    assert runner.failures == 0, f"{runner.failures} failing docstring example(s) in {module.__name__}"
