"""2-D convolution layer used by the conv stack.

One module so that the implementation (XLA's native convolution, or a form that
trains faster on CPU) can be chosen without touching the model: every
implementation has the same parameters (``kernel (kh, kw, cin, cout)``, ``bias
(cout,)``, as ``flax.linen.Conv``) and computes the same function.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

IMPLS = ("auto", "xla")


def conv2d_xla(x: jax.Array, kernel: jax.Array, padding: str) -> jax.Array:
  """Stride-1 NHWC convolution through ``lax.conv_general_dilated``."""
  return lax.conv_general_dilated(
      x, kernel, window_strides=(1, 1), padding=padding,
      dimension_numbers=("NHWC", "HWIO", "NHWC"))


class Conv(nn.Module):
  """A stride-1 2-D convolution with bias, NHWC.

  Attributes:
    features: output channels.
    kernel_size: (kh, kw).
    padding: 'SAME' or 'VALID'.
    impl: which formulation computes it; see ``IMPLS``.
  """
  features: int
  kernel_size: Sequence[int] = (3, 3)
  padding: str = "SAME"
  impl: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.impl not in IMPLS:
      raise ValueError(f"Conv impl {self.impl!r} is not one of {IMPLS}.")
    kh, kw = self.kernel_size
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (kh, kw, x.shape[-1], self.features), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
    y = conv2d_xla(x, kernel.astype(x.dtype), self.padding)
    return y + bias.astype(x.dtype)
