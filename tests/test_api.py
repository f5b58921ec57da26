"""The public surface: every exported name imports, is documented, and its examples run."""

import doctest
import importlib
import inspect
import pkgutil

import pytest

import jaxlogits as jl

FUNCTIONS = [n for n in jl.__all__ if inspect.isfunction(getattr(jl, n))]


def test_all_is_sorted_and_importable():
  assert list(jl.__all__) == sorted(jl.__all__)
  for name in jl.__all__:
    assert getattr(jl, name) is not None


@pytest.mark.parametrize("name", jl.__all__)
def test_every_public_name_has_a_docstring(name):
  doc = inspect.getdoc(getattr(jl, name))
  assert doc and len(doc.splitlines()[0]) > 10, name


@pytest.mark.parametrize("name", FUNCTIONS)
def test_functions_document_args_returns_and_an_example(name):
  doc = inspect.getdoc(getattr(jl, name))
  params = [p for p in inspect.signature(getattr(jl, name)).parameters.values()
            if p.kind is not p.VAR_KEYWORD]
  if params:
    assert "Args:" in doc, name
  assert "Returns:" in doc, name
  assert ">>>" in doc, f"{name} has no example"


MODULES = sorted(
    m.name for m in pkgutil.iter_modules(jl.__path__, "jaxlogits.")
    if not m.name.split(".")[-1].startswith("_"))


@pytest.mark.parametrize("module", MODULES)
def test_docstring_examples_run(module):
  mod = importlib.import_module(module)
  result = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
  assert result.failed == 0
