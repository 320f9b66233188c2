"""Shared test fixtures: tiny configs and paths to the real data beside the repo.

Tests that read the real word crops (``../shared/data/real``; CI has them, a fresh clone
does not) carry ``@pytest.mark.real_data``; conftest.py skips them, saying why, where the
folder is absent. ``CRNN_JAX_REAL_DATA=DIR`` points them at another copy.
"""

import importlib.util
import os

from configs import base

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REAL = os.environ.get("CRNN_JAX_REAL_DATA") or os.path.join(
    os.path.dirname(REPO), "shared", "data", "real"
)


def real(name: str) -> str:
  return os.path.join(REAL, name)


def tiny_config(**overrides):
  """The seed config shrunk to a model that compiles and steps in about a second."""
  config = base.get_config()
  config.model.conv_features = (4, 8, 8, 8, 8, 8, 8)
  config.model.lstm_hidden = 8
  config.model.lstm_layers = 1
  config.data.train = "tsv:" + real("captcha_digits")
  config.data.eval = "tsv:" + real("svt_train")
  config.data.width_buckets = (64, 128)
  config.train.batch_size = 16
  config.train.num_steps = 2
  config.train.log_every_steps = 1
  config.eval.batch_size = 64
  config.eval.every_steps = 1000
  config.checkpoint.every_steps = 1000
  for key, value in overrides.items():
    group, field = key.split(".")
    config[group][field] = value
  return config


def load_script(name: str):
  """``scripts/<name>.py`` as a module, so a test can call its ``main(argv)`` in process."""
  spec = importlib.util.spec_from_file_location(
      f"script_{name}", os.path.join(REPO, "scripts", f"{name}.py")
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module
