"""Test set-up: give JAX eight CPU devices so that sharded code paths are exercised."""

import os

# Must happen before jax initialises its backends.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402

from helpers import REAL  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)


def pytest_collection_modifyitems(config, items):
  """Skips the tests marked ``real_data``, with the reason, where the real crops are absent."""
  del config
  if os.path.isdir(REAL):
    return
  skip = pytest.mark.skip(reason=f"needs the real word crops in {REAL} (beside the "
                          f"repository in CI; set CRNN_JAX_REAL_DATA=DIR to use another copy)")
  for item in items:
    if "real_data" in item.keywords:
      item.add_marker(skip)
