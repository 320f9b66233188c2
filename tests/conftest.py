"""Test set-up: give JAX eight CPU devices so that sharded code paths are exercised, and a
model that reads for the end-to-end tests."""

import atexit
import os
import shutil
import tempfile

# Must happen before jax initialises its backends.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# One persistent compilation cache for the whole run, in and out of process: many tests
# compile the same tiny programs again (three training runs in one test, two processes
# that start twice, a script under test and the test beside it), and XLA's compile time
# is most of the suite's on 2 cores (one resume test: 111 s without, 62 s with, from an
# empty cache). A fresh folder per run, so nothing compiled by another version of the
# code is reused; the environment carries it into the scripts the tests start.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="crnn_jax_test_xla_")
  atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import jax  # noqa: E402
import pytest  # noqa: E402

from helpers import REAL  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)


def pytest_collection_modifyitems(config, items):
  """Skips the tests marked ``real_data``, with the reason, where the real crops are absent."""
  del config
  if os.path.isdir(REAL):
    return
  skip = pytest.mark.skip(
      reason=f"needs the real word crops in {REAL} (beside the "
      f"repository in CI; set CRNN_JAX_REAL_DATA=DIR to use another copy)"
  )
  for item in items:
    if "real_data" in item.keywords:
      item.add_marker(skip)


# Rows per call of the reading model; one width bucket: one compilation per caller.
READING_BATCH = 8
READING_BUCKETS = [128]


@pytest.fixture(scope="session")
def reading_weights(tmp_path_factory) -> str:
  """The shipped pretrained model as a weights file with one width bucket, 128 pixels.

  The end-to-end tests (export, evaluation script, predict script) compare two paths
  to the same answers; with random weights the texts are nearly constant and the
  confidences ~1e-18, so agreement could not fail. This model reads about 60% of the
  first SVT crops exactly, with confidences spread over 0.04-0.98. One bucket instead
  of the file's three keeps it to one compilation of the seed model per caller.
  """
  from crnn_jax import weights

  if not os.path.isfile(weights.PRETRAINED_FILE):
    pytest.skip(f"{weights.PRETRAINED_FILE} is not in this copy")
  variables, meta = weights.load_weights(weights.PRETRAINED_FILE)
  meta = dict(meta, data=dict(meta["data"], width_buckets=READING_BUCKETS))
  path = str(tmp_path_factory.mktemp("reading") / "pretrained_128.npz")
  # The shipped parameters are float16 values: stored again as float16, they are unchanged.
  weights.save_weights(path, variables, meta)
  return path


@pytest.fixture(scope="session")
def reading_model(reading_weights):
  """A Recognizer of ``reading_weights`` (greedy, batches of 8), shared by the test files."""
  from crnn_jax.recognizer import Recognizer

  return Recognizer.from_weights(reading_weights, batch_size=READING_BATCH)
