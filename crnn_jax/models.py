"""The CRNN model (Shi et al. 2015): a conv stack, bidirectional LSTMs, a classifier.

Images are ``(B, H, W, 1)`` with per-example valid widths; the model turns width
into time: ``T = W / 4 - 1`` frames (31 at width 128) for the seed layout. Columns
beyond an example's width are zeroed after every layer and excluded from
BatchNorm statistics, and the LSTMs run only over each example's frames, so what
lies in padded columns cannot change any valid output.

Parameters are always float32. The model computes in ``dtype``: with bfloat16 the
convolutions, the LSTMs' matmuls and the classifier run in bfloat16 on float32 weights
cast at use, while BatchNorm statistics, the LSTM cell state and the returned logits
stay float32 (``COMPUTE_DTYPES``, ``resolve_compute_dtype``). The dtype changes how the
model runs, never its variables: a checkpoint serves every compute dtype.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from crnn_jax import conv as conv_lib

# The seed's conv stack: channel widths of its seven convolutions. Pools follow
# convs 1 and 2 (2x2) and convs 4 and 6 (2x1, height only); convs 5 and 6 carry
# BatchNorm; conv 7 is a 2x2 'VALID' convolution that brings height 2 to 1.
SEED_CONV_FEATURES = (64, 128, 256, 256, 512, 512, 512)

# Total down-sampling of width by the two 2x2 pools.
WIDTH_STRIDE = 4

# Values of ``model.compute_dtype``.
COMPUTE_DTYPES = ("auto", "float32", "bfloat16")

# Backends where 'auto' computes in bfloat16: their matrix units run it several times
# faster than float32. XLA's CPU backend does not (measured on a 2-core CPU: bfloat16 gained
# nothing, and the CPU fast-path convolutions are float32 algorithms).
_BFLOAT16_BACKENDS = ("gpu", "cuda", "rocm", "tpu")


def resolve_compute_dtype(name: str, backend: str | None = None) -> jnp.dtype:
  """The dtype ``model.compute_dtype`` stands for on ``backend`` (default: JAX's default).

  Args:
    name: one of ``COMPUTE_DTYPES``; ``'auto'`` is bfloat16 on GPU and TPU, float32
      elsewhere.
    backend: a platform name as ``jax.default_backend()`` gives it.

  Returns:
    ``jnp.float32`` or ``jnp.bfloat16``.

  Raises:
    ValueError: for a name not in ``COMPUTE_DTYPES``.
  """
  if name not in COMPUTE_DTYPES:
    raise ValueError(f"model.compute_dtype must be one of {COMPUTE_DTYPES}; got {name!r}.")
  if name == "auto":
    backend = jax.default_backend() if backend is None else backend
    name = "bfloat16" if backend in _BFLOAT16_BACKENDS else "float32"
  return jnp.dtype(name)


def num_frames(widths: np.ndarray | jax.Array | int):
  """Frames the model produces for images of these pixel widths: ceil(w / 4) - 1, at least 1."""
  xp = jnp if isinstance(widths, jax.Array) else np
  return xp.maximum(-(-xp.asarray(widths) // WIDTH_STRIDE) - 1, 1)


def min_width_for_frames(frames: int) -> int:
  """Smallest image width giving at least ``frames`` frames."""
  return WIDTH_STRIDE * (frames + 1)


def _column_mask(widths: jax.Array, width: int, stride: int) -> jax.Array:
  """(B, 1, width, 1) float mask of the columns valid at a resolution down-sampled by ``stride``."""
  valid = -(-widths // stride)  # ceil
  return (jnp.arange(width)[None, :] < valid[:, None]).astype(jnp.float32)[:, None, :, None]


class ConvStack(nn.Module):
  """The seed's convolutional feature extractor, with per-example width masking.

  Attributes:
    features: channel widths of the seven convolutions.
    conv_impl: passed to ``crnn_jax.conv.Conv``.
    dtype: computation dtype.
  """

  features: Sequence[int] = SEED_CONV_FEATURES
  conv_impl: str = "auto"
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, widths: jax.Array, *, train: bool) -> jax.Array:
    """images: (B, H, W, C); widths: (B,) valid pixel widths. Returns (B, 1, W/4 - 1, F)."""
    if len(self.features) != 7:
      raise ValueError(
          f"model.conv_features must list 7 channel widths (the seed layout); got {self.features}."
      )
    f = self.features
    stride = 1
    x = images.astype(self.dtype) * _column_mask(widths, images.shape[2], stride).astype(self.dtype)

    def conv(x, i, kernel=(3, 3), padding="SAME", batch_norm=False):
      x = conv_lib.Conv(f[i], kernel, padding, impl=self.conv_impl, name=f"conv{i + 1}")(x)
      mask = _column_mask(widths, x.shape[2], stride)
      if batch_norm:
        x = nn.BatchNorm(
            use_running_average=not train,
            momentum=0.99,
            epsilon=1e-3,
            dtype=self.dtype,
            name=f"bn{i + 1}",
        )(x, mask=jnp.broadcast_to(mask > 0, x.shape))
      return nn.relu(x) * mask.astype(x.dtype)

    # Where the convolutions take the CPU fast path, so does pooling: the same function and
    # gradient as nn.max_pool, without its slow select-and-scatter gradient on XLA's CPU.
    if conv_lib.resolve_impl(self.conv_impl, self.dtype) == "xla":
      pool = lambda x, window: nn.max_pool(x, window, window)
    else:
      pool = conv_lib.max_pool

    x = conv(x, 0)
    x = pool(x, (2, 2))
    stride *= 2
    x = conv(x, 1)
    x = pool(x, (2, 2))
    stride *= 2
    x = conv(x, 2)
    x = conv(x, 3)
    x = pool(x, (2, 1))
    x = conv(x, 4, batch_norm=True)
    x = conv(x, 5, batch_norm=True)
    x = pool(x, (2, 1))
    x = conv(x, 6, kernel=(2, 2), padding="VALID")
    return x


class BiLSTM(nn.Module):
  """A bidirectional LSTM over (B, T, F), forward and backward outputs concatenated.

  Attributes:
    hidden: units per direction.
    dropout: input dropout rate.
    dtype: dtype of the gate matmuls. The carry is created in the parameters' float32
      and stays float32 (a bfloat16 gate times a float32 cell state is float32), so the
      cell state does not lose precision over the sequence; the output is float32.
  """

  hidden: int
  dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, seq_lengths: jax.Array, *, train: bool) -> jax.Array:
    """x: (B, T, F); seq_lengths: (B,) valid frames. Returns (B, T, 2 * hidden)."""
    # Keras' LSTM(dropout=...) drops input features with one mask for all time steps.
    x = nn.Dropout(self.dropout, broadcast_dims=(1,), deterministic=not train)(x)
    return nn.Bidirectional(
        nn.RNN(nn.LSTMCell(self.hidden, dtype=self.dtype), name="forward"),
        nn.RNN(nn.LSTMCell(self.hidden, dtype=self.dtype), name="backward"),
    )(x, seq_lengths=seq_lengths)


class CRNN(nn.Module):
  """Conv stack -> squeeze height -> BiLSTMs -> per-frame logits.

  Attributes:
    num_classes: outputs per frame, the charset's characters plus the blank.
    height: the image height the model is built for (32 for the seed).
    conv_features: channel widths of the seven convolutions.
    lstm_hidden: units per LSTM direction.
    lstm_layers: number of BiLSTM layers.
    dropout: input dropout of each BiLSTM layer.
    conv_impl: see ``crnn_jax.conv``.
    dtype: the compute dtype (float32 or bfloat16; see the module docstring). Parameters
      are float32 whatever it is.
  """

  num_classes: int
  height: int = 32
  conv_features: Sequence[int] = SEED_CONV_FEATURES
  lstm_hidden: int = 128
  lstm_layers: int = 2
  dropout: float = 0.2
  conv_impl: str = "auto"
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, widths: jax.Array, *, train: bool = False):
    """Runs the model.

    Args:
      images: (B, H, W, 1) or (B, H, W) array: integer pixels 0-255 (uint8, as the data
        pipeline and the Recognizer give them), scaled here to [0, 1], or floats already
        in [0, 1]. Padded columns may hold anything.
      widths: (B,) int array, the valid width of each image in pixels.
      train: use batch statistics and dropout.

    Returns:
      logits: (B, T, K) float32 array, T = W / 4 - 1, K = num_classes.
      logit_paddings: (B, T) float32 array, 1.0 where a frame lies beyond the image.

    Raises:
      ValueError: if the image height is not ``height`` or the rank is wrong.
    """
    if images.ndim == 3:
      images = images[..., None]
    if images.ndim != 4:
      raise ValueError(f"CRNN images must be (B, H, W, 1); got shape {images.shape}.")
    if images.shape[1] != self.height:
      raise ValueError(
          f"CRNN images have height {images.shape[1]}, but the model is built for height "
          f"{self.height}: resize images to height {self.height} (the data pipeline does) "
          f"or set model.height."
      )
    if images.shape[2] % WIDTH_STRIDE:
      raise ValueError(
          f"CRNN image width {images.shape[2]} is not a multiple of {WIDTH_STRIDE}: pad it."
      )
    if widths.shape != images.shape[:1]:
      raise ValueError(f"CRNN widths must have shape {images.shape[:1]}; got {widths.shape}.")
    if jnp.issubdtype(images.dtype, jnp.integer):
      # The one place pixels become [0, 1]: uint8 travels to the device (4x less than
      # float32) and every caller (training, the Recognizer, export) scales the same way.
      images = images.astype(jnp.float32) / 255.0
    widths = widths.astype(jnp.int32)
    x = ConvStack(self.conv_features, self.conv_impl, self.dtype, name="cnn")(
        images, widths, train=train
    )
    if x.shape[1] != 1:
      raise ValueError(
          f"Conv stack left height {x.shape[1]} instead of 1 for image height {self.height}: "
          f"the seed layout needs height 32."
      )
    x = x[:, 0]  # [B, 1, T, F] -> [B, T, F]
    frames = num_frames(widths)
    for i in range(self.lstm_layers):
      x = BiLSTM(self.lstm_hidden, self.dropout, self.dtype, name=f"bilstm{i + 1}")(
          x, frames, train=train
      )
    # The loss and the decoders take float32 logits (log-softmax of bfloat16 logits would
    # round probabilities to 3 significant digits).
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name="classifier")(x)
    logits = logits.astype(jnp.float32)
    logit_paddings = (jnp.arange(x.shape[1])[None, :] >= frames[:, None]).astype(jnp.float32)
    return logits, logit_paddings


def from_config(model_config, num_classes: int, *, compute_dtype: str | None = None) -> CRNN:
  """The ``CRNN`` a ``config.model`` group (or its dict, as checkpoints store it) describes.

  The one place that maps a model config to a module: training builds its model here and
  so does every loader of saved weights. ``compute_dtype`` is resolved here, once, for
  the default backend (configs and checkpoints from before the field existed mean
  ``'auto'``).

  Args:
    model_config: a ``config.model`` group or a checkpoint's ``meta['model']``.
    num_classes: outputs per frame.
    compute_dtype: overrides the config's ``compute_dtype`` (one of ``COMPUTE_DTYPES``).

  Raises:
    ValueError: for an unknown compute dtype.
  """
  m = model_config
  if compute_dtype is None:
    compute_dtype = m.get("compute_dtype", "auto")
  return CRNN(
      num_classes=num_classes,
      height=m["height"],
      conv_features=tuple(m["conv_features"]),
      lstm_hidden=m["lstm_hidden"],
      lstm_layers=m["lstm_layers"],
      dropout=m["dropout"],
      conv_impl=m.get("conv_impl", "auto"),
      dtype=resolve_compute_dtype(compute_dtype),
  )


def count_params(tree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def param_summary(variables) -> str:
  """A table of parameter counts per top-level module, with totals."""
  params = variables["params"]
  lines = [f"{'module':<14}{'parameters':>14}"]
  for name, sub in params.items():
    lines.append(f"{name:<14}{count_params(sub):>14,}")
  lines.append(f"{'total':<14}{count_params(params):>14,}")
  stats = count_params(variables.get("batch_stats", {}))
  lines.append(f"{'+ BN stats':<14}{stats:>14,}")
  return "\n".join(lines)
