"""Loading a trained model for inference: a training checkpoint or a weights file.

Saving lives beside it (``checkpoints`` writes checkpoints, ``weights`` writes weights
files); this module reads either back into a ``Loaded``: the ``CRNN`` rebuilt from the
metadata saved with it (``models.from_config``), its variables on one device, and its
charset. No training config is needed. The ``Recognizer`` and fine-tuning
(``init_from``) both start here, so neither has to reach into the other.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import orbax.checkpoint as ocp

from crnn_jax import charset as charset_lib
from crnn_jax import checkpoints as ckpt_lib
from crnn_jax import models
from crnn_jax import weights as weights_lib


@dataclasses.dataclass
class Loaded:
  """A checkpoint ready for inference.

  Attributes:
    model: the ``CRNN`` module, built from the saved model config.
    variables: ``{'params': ..., 'batch_stats': ...}`` on one device.
    charset: the saved charset.
    meta: the checkpoint's JSON metadata.
    step: the training step of the checkpoint.
    where: the checkpoint's directory (or weights file), for messages.
    kind: ``'checkpoint'``, ``'weights'`` (a weights file) or ``'pretrained'`` (the
      shipped weights file).
  """

  model: models.CRNN
  variables: dict
  charset: charset_lib.Charset
  meta: dict
  step: int
  where: str
  kind: str = "checkpoint"

  def describe(self) -> str:
    """One line naming the model, e.g. for the scripts to print which one they use."""
    what = {
        "checkpoint": "checkpoint",
        "weights": "weights file",
        "pretrained": "pretrained model",
    }.get(self.kind, self.kind)
    return f"{what} {self.where} (step {self.step})"


def model_from_meta(meta: dict) -> tuple[models.CRNN, charset_lib.Charset]:
  """The model and charset a checkpoint's metadata describes, built as training builds them."""
  charset = charset_lib.Charset(meta["charset"], case_fold=bool(meta.get("case_fold", False)))
  return models.from_config(meta["model"], charset.num_classes), charset


def load_checkpoint(path: str, *, device: jax.Device | None = None) -> Loaded:
  """Restores a checkpoint's model, parameters and BatchNorm statistics for inference.

  Args:
    path: a training workdir (its best checkpoint is used, else its latest), its
      ``best/`` or ``checkpoints/`` folder, or one step folder inside them.
    device: where the variables go; default ``jax.devices()[0]``.

  Returns:
    a ``Loaded``. The variables load whatever device layout the checkpoint was
    saved with (e.g. replicated over 8 devices) onto this one device.

  Raises:
    ValueError: if there is no checkpoint at ``path``.
    checkpoints.CheckpointError: (a ValueError) if it cannot be read or its arrays
      differ from the digests saved with it.
  """
  manager, step = ckpt_lib.open_checkpoint(path)
  where = os.path.join(str(manager.directory), str(step))
  meta = ckpt_lib.guarded_read(lambda: ckpt_lib.read_meta(manager, step), where)
  device = device or jax.devices()[0]
  one = jax.sharding.SingleDeviceSharding(device)
  # No target tree: the optimiser's structure is not in the metadata. The fallback
  # sharding applies when the saved device layout does not exist in this process.
  state = ckpt_lib.guarded_read(
      lambda: manager.restore(
          step, args=ocp.args.Composite(state=ocp.args.StandardRestore(fallback_sharding=one))
      )["state"],
      where,
  )
  # Every array, optimiser state included: a damaged file anywhere means a damaged copy.
  ckpt_lib.verify(state, meta, where)
  variables = jax.device_put(
      {"params": state["params"], "batch_stats": state.get("batch_stats") or {}}, one
  )
  model, charset = model_from_meta(meta)
  return Loaded(model, variables, charset, meta, step, where)


def load_weights_file(path: str, *, device: jax.Device | None = None) -> Loaded:
  """Loads a weights file (``weights.save_weights``) for inference, like ``load_checkpoint``.

  Args:
    path: the file, or ``'pretrained'`` for the one shipped with the package.
    device: where the variables go; default ``jax.devices()[0]``.

  Returns:
    a ``Loaded`` with float32 variables; ``step`` is the training step the file records.

  Raises:
    ValueError: if the file is missing or corrupt, or ``'pretrained'`` is asked for
      and this copy of the package has none.
  """
  kind = "pretrained" if path == weights_lib.PRETRAINED else "weights"
  path = weights_lib.resolve(path)
  variables, meta = weights_lib.load_weights(path)
  variables = jax.device_put(
      variables, jax.sharding.SingleDeviceSharding(device or jax.devices()[0])
  )
  model, charset = model_from_meta(meta)
  return Loaded(model, variables, charset, meta, int(meta.get("step", 0)), path, kind)


def load_model(path: str, *, device: jax.Device | None = None) -> Loaded:
  """A model from any source: ``'pretrained'``, a weights file, or a checkpoint.

  Args:
    path: ``'pretrained'`` (the shipped weights), a file (a weights file), or anything
      ``load_checkpoint`` takes (a workdir, its ``best/`` or ``checkpoints/`` folder, a
      step folder).
    device: where the variables go; default ``jax.devices()[0]``.

  Raises:
    ValueError: if there is no model at ``path``.
  """
  if path == weights_lib.PRETRAINED or os.path.isfile(path):
    return load_weights_file(path, device=device)
  return load_checkpoint(path, device=device)
