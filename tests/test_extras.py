"""crnn_jax.extras: the core install works without the extras, and a missing extra is an
error that names it and the pip command."""

import os
import subprocess
import sys

import pytest

from crnn_jax import extras
from crnn_jax.data import specs

from helpers import REPO

# (spec, extra, module the extra brings): one row per feature behind an extra.
FEATURES = [("synth:5", "synth", "wordfreq"), ("synth:5", "synth", "fontpkg"),
            ("synth:5", "synth", "skimage"), ("lmdb:/nowhere", "lmdb", "lmdb"),
            ("tfds:synth_words", "tfds", "tensorflow_datasets")]


@pytest.mark.parametrize("spec,extra,module", FEATURES)
def test_a_missing_extra_names_itself(monkeypatch, spec, extra, module):
  """Breaks if a spec reaches its package without checking first (an ImportError from deep
  inside, or a renderer silently drawing without its fonts or photos)."""
  monkeypatch.setitem(sys.modules, module, None)  # import fails, as if not installed
  with pytest.raises(extras.MissingExtraError) as e:
    specs.open_source(spec)
  kind = spec.split(":")[0]
  assert str(e.value) == (f"the {kind}: data spec needs the [{extra}] extra ({module} not "
                          f"installed): pip install 'crnn-jax[{extra}]'")
  assert isinstance(e.value, ImportError)  # callers catching ImportError still do


def test_every_extra_is_declared_in_pyproject():
  """The extras the code names are the ones pyproject.toml offers."""
  import tomllib
  with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
    declared = tomllib.load(f)["project"]["optional-dependencies"]
  assert set(extras.MODULES) <= set(declared)
  # [test] pulls in every extra: the suite exercises every feature.
  self_ref = next(r for r in declared["test"] if r.startswith("crnn-jax["))
  assert set(self_ref[len("crnn-jax["):-1].split(",")) == set(extras.MODULES)


# Imported as a core install would: every extra's modules fail to import.
_CORE_ONLY = f"""
import sys
BLOCKED = {sorted({m for ms in extras.MODULES.values() for m in ms})!r}
for name in BLOCKED:
  sys.modules[name] = None
import crnn_jax.decode, crnn_jax.train, crnn_jax.recognizer, crnn_jax.evaluation
import crnn_jax.export, crnn_jax.inputs, crnn_jax.cli
from crnn_jax.data import specs
from crnn_jax import extras
try:
  specs.open_source("synth:5")
except extras.MissingExtraError as e:
  print(e)
"""


def test_the_core_modules_import_without_any_extra():
  """Training, inference and export import with no extra installed (pip install . alone).

  Breaks if a module-level import of fontpkg, wordfreq, scikit-image, lmdb or
  tensorflow_datasets creeps into the training or inference path.
  """
  done = subprocess.run([sys.executable, "-c", _CORE_ONLY], capture_output=True, text=True,
                        cwd=REPO, env=dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO),
                        timeout=120)
  assert done.returncode == 0, done.stderr
  assert "needs the [synth] extra" in done.stdout
