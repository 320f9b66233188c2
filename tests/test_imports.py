"""The shape of the package: the import contracts in pyproject.toml (layers, no cycles), no
import cycle anywhere in crnn_jax, a data layer that never touches device placement, and
modules short enough to have one job."""

import ast
import os
import re
import subprocess
import sys

import grimp
import pytest

from helpers import REPO

PACKAGE = os.path.join(REPO, "crnn_jax")
DATA = os.path.join(PACKAGE, "data")

# A module longer than this usually does two jobs (STYLE.md); one that must stay longer
# says why in its docstring, in a sentence starting "Over 600 lines:".
MAX_LINES = 600


def test_import_contracts_in_pyproject_hold():
  """lint-imports on the project's contracts. Breaking it: e.g. ``from crnn_jax import
  sharding`` (or ``train``, ``inputs``, ``ml_collections``) anywhere in crnn_jax/data;
  ``from crnn_jax import recognizer`` in finetune or models (a layer reaching up); a new
  module not given its layer."""
  lint = os.path.join(os.path.dirname(sys.executable), "lint-imports")
  done = subprocess.run([lint, "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stdout + done.stderr
  assert "0 broken" in done.stdout


def _cycles(graph) -> list:
  """Strongly connected components of more than one module (Tarjan, iteratively)."""
  adj = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
  index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
  for root in sorted(adj):
    if root in index:
      continue
    work = [(root, iter(adj[root]))]
    index[root] = low[root] = counter[0]
    counter[0] += 1
    stack.append(root)
    on.add(root)
    while work:
      v, children = work[-1]
      for w in children:
        if w not in index:
          index[w] = low[w] = counter[0]
          counter[0] += 1
          stack.append(w)
          on.add(w)
          work.append((w, iter(adj[w])))
          break
        if w in on:
          low[v] = min(low[v], index[w])
      else:
        work.pop()
        if work:
          low[work[-1][0]] = min(low[work[-1][0]], low[v])
        if low[v] == index[v]:
          comp = []
          while True:
            w = stack.pop()
            on.discard(w)
            comp.append(w)
            if w == v:
              break
          if len(comp) > 1:
            out.append(sorted(comp))
  return out


def test_no_import_cycle_inside_crnn_jax():
  """Every import counts, also those inside functions. Breaking it: e.g. a module of
  crnn_jax.data importing ``specs`` back, or recognizer importing train."""
  graph = grimp.build_graph("crnn_jax")
  assert _cycles(graph) == []


def test_cycle_finder_finds_a_cycle(tmp_path, monkeypatch):
  """The checker itself: two modules importing each other form one cycle."""
  pkg = tmp_path / "loopy"
  pkg.mkdir()
  (pkg / "__init__.py").write_text("")
  (pkg / "a.py").write_text("def f():\n  from loopy import b\n")
  (pkg / "b.py").write_text("from loopy import a\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  assert _cycles(grimp.build_graph("loopy")) == [["loopy.a", "loopy.b"]]


def _imported_names(path: str) -> set:
  """Every module name imported in a file, with ``from X import y`` also giving ``X.y``."""
  with open(path, encoding="utf-8") as f:
    tree = ast.parse(f.read(), path)
  names = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      names.add(node.module)
      names.update(f"{node.module}.{a.name}" for a in node.names)
  return names


@pytest.mark.parametrize("name", sorted(f for f in os.listdir(DATA) if f.endswith(".py")))
def test_data_layer_does_not_use_jax_sharding(name):
  """jax.sharding is the training loop's (lint-imports sees external packages only as a
  whole, so this is checked from the source). Breaking it: ``import jax.sharding`` or
  ``from jax.sharding import NamedSharding`` in a data module, or ``jax.sharding.X`` used
  through a plain ``import jax``."""
  path = os.path.join(DATA, name)
  names = _imported_names(path)
  assert not {n for n in names if n == "jax.sharding" or n.startswith("jax.sharding.")}
  with open(path, encoding="utf-8") as f:
    assert "jax.sharding" not in f.read()


def _length_problem(text: str, max_lines: int = MAX_LINES) -> str | None:
  """Why a module's source is too long, or None: over ``max_lines`` lines without a
  sentence in its docstring starting "Over 600 lines:" and giving a reason."""
  lines = text.count("\n")
  if lines <= max_lines:
    return None
  doc = ast.get_docstring(ast.parse(text)) or ""
  reason = re.search(r"Over 600 lines:\s*(.*?)(?:\.\s|\.?$)", doc, re.DOTALL)
  if reason and len(reason.group(1).split()) >= 3:
    return None
  return (
      f"{lines} lines: split it, or say why it is one module in a docstring sentence "
      f"starting 'Over 600 lines:'."
  )


def _modules() -> list[str]:
  return sorted(
      os.path.relpath(os.path.join(root, f), REPO)
      for root, _, files in os.walk(PACKAGE)
      for f in files
      if f.endswith(".py")
  )


@pytest.mark.parametrize("name", _modules())
def test_module_is_short_or_says_why(name):
  """Breaking it: a module growing past 600 lines with no "Over 600 lines:" reason."""
  with open(os.path.join(REPO, name), encoding="utf-8") as f:
    assert _length_problem(f.read()) is None, name


def test_length_check_wants_a_reason():
  """The checker itself: a long module passes only with a reason of a few words."""
  body = "x = 1\n" * 10
  assert _length_problem('"""Short."""\n' + body, max_lines=20) is None
  assert _length_problem('"""Long."""\n' + body, max_lines=5) is not None
  assert (
      _length_problem('"""Long.\n\nOver 600 lines: because.\n"""\n' + body, max_lines=5) is not None
  )
  assert (
      _length_problem(
          '"""Long.\n\nOver 600 lines: one job, split later. More.\n"""\n' + body, max_lines=5
      )
      is None
  )
