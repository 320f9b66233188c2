"""The weights file: a trained model's parameters, BatchNorm statistics and metadata in one file.

A weights file is what ships a model (``crnn_jax/pretrained/crnn_seed.npz``): unlike an
Orbax checkpoint it is one small file without optimiser state, readable with numpy alone,
and its integrity is checked on every load. Orbax does not check array data (a flipped
byte in a checkpoint's array restores silently), so this format
carries its own SHA-256 digest.

Layout: an uncompressed ``.npz`` (a zip of ``.npy`` arrays, ``np.load`` reads it, no
pickle anywhere) holding

- ``meta.json``: the metadata (model config, charset, case_fold, width buckets, resize
  mode, provenance), UTF-8 JSON;
- ``<collection>/<module>/.../<name>.npy``: one array per leaf of the variables, e.g.
  ``params/cnn/conv0/kernel.npy`` and ``batch_stats/cnn/bn4/mean.npy``;
- the zip's archive comment, the file's last 90 bytes:
  ``crnn_jax.weights/1 sha256=<64 hex digits>``, the SHA-256 of every byte before it.

The digest covers the whole file except itself (the comment's length field included),
so any flipped byte is caught: in the body the digest no longer matches, in the comment
the stored digest changes. Verify one by hand:
``head -c -90 FILE | sha256sum`` against ``tail -c 64 FILE``.

Storage precision: parameters are stored in float16 by default (13 MB for the seed
model instead of 26 MB); float16 keeps 11 significant bits, a relative rounding error of
at most 2**-11, well below what changes a prediction. A parameter leaf stays float32
when float16 would overflow (a value above 65,504) or lose more than 2**-10 of the
leaf's largest magnitude (a leaf of values below float16's normal range, ~6e-5).
BatchNorm statistics always stay float32: there are only 2,048 of them (8 kB), and
inference subtracts the mean before dividing by the standard deviation, so a mean's
rounding error is amplified by mean/std, which can be large after ReLU. Loading returns
float32 arrays whatever the storage.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

FORMAT = "crnn_jax.weights/1"
# The file the package ships (package data, see pyproject.toml) and its name for
# ``init_from`` and the scripts.
PRETRAINED_FILE = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "pretrained", "crnn_seed.npz"
)
PRETRAINED = "pretrained"

META_MEMBER = "meta.json"
STORAGE_DTYPES = ("float16", "float32")
# Metadata every weights file has: what ``loading.model_from_meta`` needs.
REQUIRED_META = ("model", "charset")

_MARK = (FORMAT + " sha256=").encode("ascii")
_DIGEST_CHARS = 64  # hex SHA-256
_TRAILER = len(_MARK) + _DIGEST_CHARS
# Fixed zip timestamps and permissions: the same variables give the same bytes.
_DATE = (1980, 1, 1, 0, 0, 0)
_FLOAT16_MAX = float(np.finfo(np.float16).max)
_FLOAT16_LOSS = 2.0**-10  # of the leaf's largest magnitude


class Written(NamedTuple):
  """What ``save_weights`` wrote.

  Attributes:
    path: the file.
    sha256: the digest stored in it (hex).
    num_bytes: the file's size.
    float32_params: parameter leaves kept in float32 despite ``dtype='float16'``,
      as ``'params/...'`` names.
  """

  path: str
  sha256: str
  num_bytes: int
  float32_params: tuple[str, ...]


def pretrained_file() -> str:
  """The shipped weights file's path.

  Raises:
    ValueError: if this copy of crnn_jax has no pretrained model yet.
  """
  if not os.path.isfile(PRETRAINED_FILE):
    raise ValueError(
        f"The pretrained model is not in this copy of crnn_jax: {PRETRAINED_FILE} does not "
        f"exist (it is added once the seed model is trained). Give a model instead: a "
        f"weights file (--weights FILE, Recognizer.from_weights) or a training workdir "
        f"(--workdir DIR, Recognizer.from_checkpoint); scripts/export_weights.py writes the "
        f"file from a workdir."
    )
  return PRETRAINED_FILE


def resolve(path: str) -> str:
  """``path``, or the shipped file's path when ``path`` is ``'pretrained'``."""
  return pretrained_file() if path == PRETRAINED else path


def _flatten(tree: Mapping, prefix: str, out: dict[str, np.ndarray]) -> None:
  for key, value in tree.items():
    if not isinstance(key, str) or not key or "/" in key:
      raise ValueError(
          f"variables: key {key!r} under {prefix or 'the top'!r} must be a "
          f"non-empty string without '/'."
      )
    name = f"{prefix}/{key}" if prefix else key
    if isinstance(value, Mapping):
      _flatten(value, name, out)
    else:
      out[name] = np.asarray(value)


def _stored(name: str, x: np.ndarray, dtype: str) -> np.ndarray:
  """The array as stored: see the module docstring for which leaves stay float32."""
  if not np.issubdtype(x.dtype, np.floating):
    return x
  x = x.astype(np.float32)
  if dtype == "float32" or not name.startswith("params/"):
    return x
  with np.errstate(over="ignore", invalid="ignore"):
    half = x.astype(np.float16)
    overflow = bool(np.any(np.isfinite(x) & (np.abs(x) > _FLOAT16_MAX)))
    peak = float(np.max(np.abs(x), initial=0.0))
    loss = float(np.max(np.abs(half.astype(np.float32) - x), initial=0.0))
  return x if overflow or loss > _FLOAT16_LOSS * peak else half


def _npy(array: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
  return buffer.getvalue()


def _member(zf: zipfile.ZipFile, name: str, data: bytes) -> None:
  info = zipfile.ZipInfo(name, date_time=_DATE)
  info.external_attr = 0o644 << 16
  zf.writestr(info, data, compress_type=zipfile.ZIP_STORED)


def save_weights(
    path: str, variables: Mapping, meta: Mapping[str, Any], *, dtype: str = "float16"
) -> Written:
  """Writes a model's variables and metadata into one weights file.

  The file is written to ``path + '.tmp'`` and renamed, so a reader never sees half a
  file. The same variables and metadata give the same bytes.

  Args:
    path: the file to write (conventionally ``.npz``); parent folders are created.
    variables: ``{'params': ..., 'batch_stats': ...}`` nested dicts of arrays (numpy or
      jax, on any device).
    meta: JSON-serialisable metadata with at least ``model`` (the model config dict) and
      ``charset``; conventionally also ``case_fold``, ``data`` (``width_buckets``,
      ``resize_mode``), ``step`` and ``provenance``, as ``scripts/export_weights.py``
      writes them.
    dtype: storage of the parameters, ``'float16'`` or ``'float32'``. BatchNorm
      statistics, and parameters float16 cannot hold, are stored in float32.

  Returns:
    a ``Written``.

  Raises:
    ValueError: for an unknown ``dtype``, ``variables`` without ``params``, or ``meta``
      missing a required key or not serialisable to JSON.
  """
  if dtype not in STORAGE_DTYPES:
    raise ValueError(f"dtype {dtype!r} is not one of {STORAGE_DTYPES}.")
  if not isinstance(variables, Mapping) or "params" not in variables:
    keys = list(variables) if isinstance(variables, Mapping) else type(variables).__name__
    raise ValueError(
        f"variables must be a dict with a 'params' collection (and usually "
        f"'batch_stats'); got {keys}."
    )
  missing = [k for k in REQUIRED_META if k not in meta]
  if missing:
    raise ValueError(
        f"meta lacks {missing}; give the checkpoint's metadata (model config "
        f"and charset), e.g. loading.load_checkpoint(workdir).meta."
    )
  try:
    # A checkpoint's per-array digests (checkpoints.digests) describe its float32 arrays and
    # optimiser state, not this file: the file's own SHA-256 covers what it holds.
    meta_json = json.dumps(
        {k: v for k, v in meta.items() if k != "digests"},
        indent=1,
        sort_keys=True,
        ensure_ascii=False,
    )
  except (TypeError, ValueError) as e:
    raise ValueError(f"meta must be JSON-serialisable: {e}.") from None

  import jax  # only to fetch device arrays; the format itself needs numpy alone

  flat: dict[str, np.ndarray] = {}
  _flatten(jax.device_get(variables), "", flat)
  stored = {name: _stored(name, x, dtype) for name, x in flat.items()}
  kept32 = tuple(
      name
      for name, x in stored.items()
      if name.startswith("params/") and x.dtype == np.float32 and dtype == "float16"
  )

  buffer = io.BytesIO()
  with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
    _member(zf, META_MEMBER, meta_json.encode("utf-8"))
    for name in sorted(stored):
      _member(zf, name + ".npy", _npy(stored[name]))
    # A placeholder of the digest's length: the bytes before it are then final.
    zf.comment = _MARK + b"0" * _DIGEST_CHARS
  data = buffer.getvalue()
  body = data[:-_TRAILER]
  digest = hashlib.sha256(body).hexdigest()

  path = os.fspath(path)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path + ".tmp", "wb") as f:
    f.write(body + _MARK + digest.encode("ascii"))
  os.replace(path + ".tmp", path)
  return Written(path, digest, len(data), kept32)


def _corrupt(path: str, why: str) -> ValueError:
  return ValueError(
      f"Weights file {path!r} is corrupt or not a crnn_jax weights file "
      f"({why}). Download or export it again (scripts/export_weights.py)."
  )


def read_digest(path: str) -> str:
  """The SHA-256 stored in a weights file (hex), without verifying it."""
  with open(path, "rb") as f:
    f.seek(-_DIGEST_CHARS, os.SEEK_END)
    return f.read().decode("ascii", "replace")


def load_weights(path: str) -> tuple[dict, dict]:
  """Reads and verifies a weights file written by ``save_weights``.

  Args:
    path: the file.

  Returns:
    ``(variables, meta)``: ``{'params': ..., 'batch_stats': ...}`` nested dicts of numpy
    float32 arrays (whatever the storage dtype), and the metadata as saved.

  Raises:
    ValueError: if the file does not exist, or is corrupt (its SHA-256 digest does not
      match its content, it is truncated, or it is not a weights file); the message
      names the file.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise ValueError(
        f"No weights file at {path!r}"
        + (
            " (it is a folder; a training workdir or checkpoint goes with "
            "--workdir/--checkpoint or Recognizer.from_checkpoint)"
            if os.path.isdir(path)
            else ""
        )
        + "."
    )
  with open(path, "rb") as f:
    data = f.read()
  body, mark, stored = data[:-_TRAILER], data[-_TRAILER:-_DIGEST_CHARS], data[-_DIGEST_CHARS:]
  if len(data) < _TRAILER or mark != _MARK:
    raise _corrupt(path, f"it does not end with the {FORMAT} digest record")
  if hashlib.sha256(body).hexdigest().encode("ascii") != stored:
    raise _corrupt(path, "its SHA-256 digest does not match its content")
  # The digest matched, so what follows reads what save_weights wrote; the handlers
  # are for files made by other means.
  try:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
      meta = json.loads(zf.read(META_MEMBER).decode("utf-8"))
      variables: dict = {}
      for member in zf.namelist():
        if member == META_MEMBER:
          continue
        if not member.endswith(".npy"):
          raise ValueError(f"unexpected member {member!r}")
        x = np.lib.format.read_array(io.BytesIO(zf.read(member)), allow_pickle=False)
        if np.issubdtype(x.dtype, np.floating):
          x = x.astype(np.float32)
        *parents, leaf = member[: -len(".npy")].split("/")
        node = variables
        for key in parents:
          node = node.setdefault(key, {})
        node[leaf] = x
  except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError, UnicodeDecodeError) as e:
    raise _corrupt(path, f"unreadable: {e}") from None
  missing = [k for k in REQUIRED_META if k not in meta]
  if "params" not in variables or missing:
    raise _corrupt(
        path, "no parameters" if "params" not in variables else f"its metadata lacks {missing}"
    )
  variables.setdefault("batch_stats", {})
  return variables, meta
