"""crnn_jax.extras: the core install works without the extras, and a missing extra is an
error that names it and the pip command."""

import ast
import os
import sys

import pytest

from crnn_jax import extras
from crnn_jax.data import specs

from helpers import REPO

# (spec, extra, module the extra brings): one row per feature behind an extra.
FEATURES = [
    ("synth:5", "synth", "wordfreq"),
    ("synth:5", "synth", "fontpkg"),
    ("synth:5", "synth", "skimage"),
    ("lmdb:/nowhere", "lmdb", "lmdb"),
    ("tfds:synth_words", "tfds", "tensorflow_datasets"),
]


@pytest.mark.parametrize("spec,extra,module", FEATURES)
def test_a_missing_extra_names_itself(monkeypatch, spec, extra, module):
  """Breaks if a spec reaches its package without checking first (an ImportError from deep
  inside, or a renderer silently drawing without its fonts or photos)."""
  monkeypatch.setitem(sys.modules, module, None)  # import fails, as if not installed
  with pytest.raises(extras.MissingExtraError) as e:
    specs.open_source(spec)
  kind = spec.split(":")[0]
  assert str(e.value) == (
      f"the {kind}: data spec needs the [{extra}] extra ({module} not "
      f"installed): pip install 'crnn-jax[{extra}]'"
  )
  assert isinstance(e.value, ImportError)  # callers catching ImportError still do


def test_every_extra_is_declared_in_pyproject():
  """The extras the code names are the ones pyproject.toml offers."""
  import tomllib

  with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
    declared = tomllib.load(f)["project"]["optional-dependencies"]
  assert set(extras.MODULES) <= set(declared)
  # [test] pulls in every extra: the suite exercises every feature.
  self_ref = next(r for r in declared["test"] if r.startswith("crnn-jax["))
  assert set(self_ref[len("crnn-jax[") : -1].split(",")) == set(extras.MODULES)


# What a core install runs: training, inference, evaluation, export, the CLI, the decoders.
CORE_ENTRY_POINTS = (
    "crnn_jax.train",
    "crnn_jax.recognizer",
    "crnn_jax.evaluation",
    "crnn_jax.export",
    "crnn_jax.cli",
    "crnn_jax.decode",
    "crnn_jax.data.specs",
)


def _import_time_imports(module: str) -> set[str]:
  """Modules ``module`` imports when it is imported: statements outside function bodies."""
  path = os.path.join(REPO, *module.split("."))
  path = os.path.join(path, "__init__.py") if os.path.isdir(path) else path + ".py"
  with open(path, encoding="utf-8") as f:
    tree = ast.parse(f.read())
  out, todo = set(), list(tree.body)
  while todo:
    node = todo.pop()
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
      continue  # runs when called, not when imported
    if isinstance(node, ast.Import):
      out.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      out.add(node.module)
      out.update(f"{node.module}.{alias.name}" for alias in node.names)
    todo.extend(ast.iter_child_nodes(node))
  return out


def _is_module(name: str) -> bool:
  path = os.path.join(REPO, *name.split("."))
  return os.path.isdir(path) or os.path.isfile(path + ".py")


def test_the_core_path_imports_no_extra_at_import_time():
  """Nothing that training, inference or the scripts import pulls in an extra's package
  at import time (pip install . alone must run them). Breaks on e.g. a module-level
  ``import tensorflow_datasets`` or ``import wordfreq`` anywhere on that path."""
  blocked = {m for modules in extras.MODULES.values() for m in modules}
  seen, todo, offenders = set(), list(CORE_ENTRY_POINTS), []
  while todo:
    module = todo.pop()
    if module in seen:
      continue
    seen.add(module)
    parents = [module.rsplit(".", k)[0] for k in range(1, module.count(".") + 1)]
    for name in _import_time_imports(module) | set(parents):
      if name.split(".")[0] in blocked:
        offenders.append((module, name))
      elif name.startswith("crnn_jax") and _is_module(name):
        todo.append(name)
  assert "crnn_jax.data.readers" in seen and "crnn_jax.models" in seen  # it did walk
  assert not offenders, offenders
