"""crnn_jax.memory: the glibc setting scripts/train.py applies before JAX starts."""

import os
import subprocess
import sys

from helpers import REPO

_CODE = (
    "import sys; sys.path.insert(0, {repo!r}); from crnn_jax import memory; "
    "print(memory.reuse_freed_memory(), 'jax' in sys.modules)"
)


def _run(env_value):
  env = dict(os.environ)
  env.pop("CRNN_JAX_MALLOC", None)
  if env_value is not None:
    env["CRNN_JAX_MALLOC"] = env_value
  out = subprocess.run(
      [sys.executable, "-c", _CODE.format(repo=REPO)],
      env=env,
      capture_output=True,
      text=True,
      check=True,
  ).stdout.split()
  return out


def test_applied_by_default_without_importing_jax():
  # glibc accepts the three settings; the module must not start JAX (threads) itself.
  assert _run(None) == ["True", "False"]


def test_system_keeps_glibc_defaults():
  assert _run("system") == ["False", "False"]
