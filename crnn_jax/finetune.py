"""Starting a training run from trained weights (``--config.init_from=SOURCE``).

``init_from`` replaces the freshly initialised parameters and BatchNorm statistics of a
new run with those of a checkpoint, a weights file (``crnn_jax/weights.py``), or the
pretrained model shipped with the package (``init_from=pretrained``). The conv stack and
the BiLSTMs must match in shape (the same ``model.conv_features``, ``lstm_hidden`` and
``lstm_layers``; the pretrained model is ``configs/base.py``'s). The output
layer (``classifier``) is kept when the charset is the same, character for character,
and re-initialised otherwise, because its rows are tied to the character ids. The
optimiser state starts fresh and the step counter at 0: this is a new run, not a resume.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np

from crnn_jax import charset as charset_lib
from crnn_jax import checkpoints as ckpt_lib
from crnn_jax import loading, models

# The layer whose rows are the charset's classes.
OUTPUT_LAYER = "classifier"


def _split(shapes: dict) -> tuple[dict, dict]:
  """``param_shapes`` -> (the output layer's entries, everything else)."""
  head = {k: v for k, v in shapes.items() if k.split("/")[0] == OUTPUT_LAYER}
  return head, {k: v for k, v in shapes.items() if k not in head}


def init_from(
    state, path: str, charset: charset_lib.Charset, *, log: Callable[[str], None] = print
):
  """A copy of ``state`` whose weights come from the checkpoint or weights file at ``path``.

  Args:
    state: the new run's freshly created ``TrainState`` (any sharding; the result has
      the same shardings, e.g. replicated over the mesh).
    path: ``'pretrained'`` (the shipped model), a weights file, or a checkpoint: a
      workdir (its best checkpoint, else its latest), its ``best/`` or ``checkpoints/``
      folder, or a step folder.
    charset: the new run's charset.
    log: where the report of what was kept and re-initialised goes.

  Returns:
    the state with the checkpoint's parameters and BatchNorm statistics (the output
    layer from ``state`` when the charsets differ), a fresh optimiser state, step 0.

  Raises:
    ValueError: if there is no checkpoint or weights file at ``path`` (or it is
      corrupt), or its model differs from this run's anywhere but in the output layer.
  """
  loaded = loading.load_model(path)
  saved_head, saved_body = _split(ckpt_lib.param_shapes(loaded.variables["params"]))
  new_head, new_body = _split(ckpt_lib.param_shapes(state.params))
  if saved_body != new_body:
    try:
      ckpt_lib.check_compatible(saved_body, new_body, loaded.where)
    except ValueError as e:
      raise ValueError(
          f"init_from: {e}\nOnly the output layer may differ when fine-tuning. The "
          f"{loaded.kind} was trained with model config {loaded.meta.get('model')}; set "
          f"model.conv_features, model.lstm_hidden and model.lstm_layers to match it."
      ) from None
  saved_stats = ckpt_lib.param_shapes(loaded.variables["batch_stats"])
  new_stats = ckpt_lib.param_shapes(state.batch_stats)
  if saved_stats != new_stats:
    ckpt_lib.check_compatible(saved_stats, new_stats, loaded.where + " (BatchNorm statistics)")

  keep_head = loaded.charset.chars == charset.chars
  params = jax.device_get(loaded.variables["params"])
  if not keep_head:
    # The fresh run's randomly initialised output layer, for the new charset's classes.
    params = dict(params)
    params[OUTPUT_LAYER] = jax.device_get(state.params[OUTPUT_LAYER])
  params = jax.tree.map(lambda new, old: np.asarray(new, old.dtype), params, state.params)
  batch_stats = jax.tree.map(
      lambda new, old: np.asarray(new, old.dtype),
      jax.device_get(loaded.variables["batch_stats"]),
      state.batch_stats,
  )

  shardings = lambda tree: jax.tree.map(lambda x: x.sharding, tree)  # noqa: E731
  params = jax.device_put(params, shardings(state.params))
  batch_stats = jax.device_put(batch_stats, shardings(state.batch_stats))
  opt_state = jax.jit(state.tx.init, out_shardings=shardings(state.opt_state))(params)
  step = state.step
  step = (
      jax.device_put(np.zeros(np.shape(step), np.asarray(step).dtype), step.sharding)
      if isinstance(step, jax.Array)
      else 0
  )

  body_count = sum(
      models.count_params(v) for k, v in loaded.variables["params"].items() if k != OUTPUT_LAYER
  )
  kept = ", ".join(k for k in params if k != OUTPUT_LAYER)
  log(
      f"init_from {loaded.where} (trained {loaded.step} steps): kept {body_count:,} "
      f"parameters ({kept}) and the BatchNorm statistics; optimiser state fresh, step 0."
  )
  if keep_head:
    log(
        f"init_from: same charset ({len(charset)} characters): output layer "
        f"'{OUTPUT_LAYER}' kept."
    )
  else:
    kernel = OUTPUT_LAYER + "/kernel"
    added = "".join(c for c in charset.chars if c not in loaded.charset.chars)
    dropped = "".join(c for c in loaded.charset.chars if c not in charset.chars)
    log(
        f"init_from: charset differs (checkpoint {len(loaded.charset)} characters "
        f"{_short(loaded.charset.chars)}, this run {len(charset)} {_short(charset.chars)}"
        + (f"; new: {_short(added)}" if added else "")
        + (f"; dropped: {_short(dropped)}" if dropped else "")
        + f"): output layer '{OUTPUT_LAYER}' re-initialised "
        f"({saved_head.get(kernel)} -> {new_head.get(kernel)})."
    )
  if loaded.charset.case_fold != charset.case_fold:
    log(
        f"init_from: note: case_fold was {loaded.charset.case_fold} in the {loaded.kind}, "
        f"{charset.case_fold} now."
    )
  return state.replace(step=step, params=params, batch_stats=batch_stats, opt_state=opt_state)


def _short(chars: str, limit: int = 40) -> str:
  return repr(chars if len(chars) <= limit else chars[:limit] + "...")
