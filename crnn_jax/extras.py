"""Which optional feature needs which extra, and the error that names it.

The core install (``pip install crnn-jax``) trains and reads your own data; the renderer,
LMDB and TFDS datasets need an extra each (pyproject.toml lists their packages). Code that
uses one calls ``require`` first, so a missing package is an error that says what to
install instead of an ``ImportError`` from deep inside a worker.
"""

import importlib.util

# extra -> the modules it brings that the code imports (one per package is enough).
MODULES = {
    "synth": ("fontpkg", "wordfreq", "skimage"),
    "lmdb": ("lmdb",),
    "tfds": ("tensorflow_datasets",),
}


class MissingExtraError(ImportError):
  """A feature's optional packages are not installed; the message names the extra."""


def missing(extra: str) -> list[str]:
  """The modules of ``extra`` that cannot be imported here."""
  return [m for m in MODULES[extra] if not _importable(m)]


def require(extra: str, feature: str) -> None:
  """Raises ``MissingExtraError`` unless every module of ``extra`` is importable.

  Args:
    extra: a key of ``MODULES``.
    feature: what needs it, as the user named it, e.g. ``"the synth: data spec"``.

  Raises:
    MissingExtraError: saying which modules are missing and the pip command to run.
  """
  absent = missing(extra)
  if absent:
    raise MissingExtraError(
        f"{feature} needs the [{extra}] extra ({', '.join(absent)} not installed): "
        f"pip install 'crnn-jax[{extra}]'"
    )


def _importable(module: str) -> bool:
  try:
    return importlib.util.find_spec(module) is not None
  except (ImportError, ValueError):  # a parent package missing, or a stub module
    return False
