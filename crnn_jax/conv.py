"""The conv stack's convolution and max pooling, in forms that XLA runs fast on CPU.

One module so that the implementation can be chosen without touching the model:
every convolution implementation has the same parameters (``kernel (kh, kw, cin,
cout)``, ``bias (cout,)``, as ``flax.linen.Conv``) and computes the same function,
to float32 rounding.

Why: on the project's 2-core CPU, XLA ran the gradients of its convolutions (the
kernel gradient above all) 5-10x slower than matmuls with the same FLOPs, which made
the seed CRNN train 2-3x slower than in PyTorch (``docs/speed.md``). Here every
convolution and both of its gradients are matmuls plus memory-bound reshuffles:

* ``'winograd'`` (the CPU default): 3x3 stride-1 'SAME' convolutions by Winograd's
  minimal filtering F(4x4, 3x3) (Lavin & Gray, "Fast Algorithms for Convolutional
  Neural Networks", 2015): 36 batched matmuls per 4x4 output tile, 4x fewer
  multiplications than the direct form. A custom VJP computes the input gradient as
  the same Winograd convolution of the output gradient with the flipped kernel, and
  the kernel gradient as 36 batched matmuls. Layers with at most
  ``DIRECT_MAX_CHANNELS`` input channels (the image layer) are a sum of broadcast
  products, which XLA fuses with what follows; other shapes use ``'im2col'``.
* ``'im2col'``: patches (built from shifted slices, not a convolution) times the
  reshaped kernel; autodiff gives the kernel gradient as one matmul and the input
  gradient as a matmul plus shifted adds.
* ``'xla'``: ``lax.conv_general_dilated``, the reference formulation.
* ``'auto'``: ``'winograd'`` on CPU for float32, ``'im2col'`` on CPU for other dtypes
  (Winograd's transforms lose precision in 16-bit floats), ``'xla'`` on other
  backends, whose convolution libraries are fast.

``max_pool`` is ``flax.linen.max_pool`` for non-overlapping windows with the same
gradient, without XLA's slow select-and-scatter.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

IMPLS = ("auto", "xla", "im2col", "winograd")

# ((top, bottom), (left, right)) zero padding of the input.
Pads = tuple[tuple[int, int], tuple[int, int]]


def _pads(padding: str, kh: int, kw: int) -> Pads:
  if padding == "VALID":
    return ((0, 0), (0, 0))
  if padding == "SAME":
    # XLA's 'SAME' for stride 1: the extra row/column of an even kernel goes at the end.
    return (((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2))
  raise ValueError(f"Conv padding must be 'SAME' or 'VALID'; got {padding!r}.")


def conv2d_xla(x: ArrayLike, kernel: ArrayLike, padding: str) -> jax.Array:
  """Stride-1 NHWC convolution through ``lax.conv_general_dilated`` (the reference).

  Args:
    x: (B, H, W, Cin) array.
    kernel: (kh, kw, Cin, Cout) array.
    padding: 'SAME' or 'VALID'.

  Returns:
    (B, Ho, Wo, Cout) array.
  """
  kernel = jnp.asarray(kernel)
  return lax.conv_general_dilated(
      x,
      kernel,
      window_strides=(1, 1),
      padding=_pads(padding, *kernel.shape[:2]),
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
  )


def _shifted(x: jax.Array, kh: int, kw: int, pads: Pads) -> list[jax.Array]:
  """The kh * kw shifted views of the padded input, each (B, Ho, Wo, C), in (i, j) order."""
  xp = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
  ho = xp.shape[1] - kh + 1
  wo = xp.shape[2] - kw + 1
  return [xp[:, i : i + ho, j : j + wo, :] for i in range(kh) for j in range(kw)]


def _patches(x: jax.Array, kh: int, kw: int, pads: Pads) -> jax.Array:
  """(B, H, W, C) -> (B, Ho, Wo, kh * kw * C), features ordered (i, j, c) as a HWIO kernel.

  Built from shifted slices: ``lax.conv_general_dilated_patches`` is itself a
  convolution, and its gradient would be the slow kind again.
  """
  return jnp.concatenate(_shifted(x, kh, kw, pads), axis=-1)


def conv2d_im2col(x: ArrayLike, kernel: ArrayLike, padding: str) -> jax.Array:
  """Stride-1 NHWC convolution as patches @ reshaped kernel. Same contract as ``conv2d_xla``."""
  x = jnp.asarray(x)
  kernel = jnp.asarray(kernel)
  kh, kw, cin, cout = kernel.shape
  p = _patches(x, kh, kw, _pads(padding, kh, kw))
  return jnp.dot(p, kernel.reshape(kh * kw * cin, cout))


def _direct_forward(x: jax.Array, kernel: jax.Array, pads: Pads) -> jax.Array:
  kh, kw, cin, _ = kernel.shape
  taps = kernel.reshape(kh * kw, cin, -1)
  y = None
  for t, xt in enumerate(_shifted(x, kh, kw, pads)):
    for c in range(cin):
      term = xt[..., c : c + 1] * taps[t, c]  # (B, Ho, Wo, 1) * (Cout,)
      y = term if y is None else y + term
  return y


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _direct_conv(x: jax.Array, kernel: jax.Array, pads: Pads) -> jax.Array:
  return _direct_forward(x, kernel, pads)


def _direct_conv_fwd(x, kernel, pads):
  return _direct_forward(x, kernel, pads), (x, kernel)


def _direct_conv_bwd(pads, res, g):
  x, kernel = res
  kh, kw, cin, cout = kernel.shape
  # Kernel gradient as one matmul over every output pixel (autodiff of the
  # forward would read g once per tap); the input gradient (unused for the
  # image layer, so XLA drops it) through the im2col form.
  dk = jnp.einsum("bhwk,bhwo->ko", _patches(x, kh, kw, pads), g).reshape(kernel.shape)
  _, vjp = jax.vjp(
      lambda x: jnp.dot(_patches(x, kh, kw, pads), kernel.reshape(kh * kw * cin, cout)), x
  )
  return vjp(g)[0], dk


_direct_conv.defvjp(_direct_conv_fwd, _direct_conv_bwd)

# Up to this many input channels, ``'winograd'`` computes the convolution as a sum of
# broadcast products (the image layer: one channel). XLA fuses it with the bias,
# activation and pooling that follow, where a matmul with k = 9 would run slowly
# and write its full-resolution output once more.
DIRECT_MAX_CHANNELS = 4


class _Winograd(NamedTuple):
  """Matrices of Winograd's F(m x m, 3x3): Y = A^T [(G g G^T) * (B^T d B)] A."""

  m: int  # output tile size; input tiles are m + 2
  bt: np.ndarray  # (m + 2, m + 2)
  g: np.ndarray  # (m + 2, 3)
  at: np.ndarray  # (m, m + 2)


# F(2x2, 3x3), points 0, 1, -1, infinity: 2.25x fewer multiplications than direct.
F2 = _Winograd(
    2,
    np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64),
    np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float64),
    np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64),
)

# F(4x4, 3x3), points 0, 1, -1, 2, -2, infinity: 4x fewer multiplications.
F4 = _Winograd(
    4,
    np.array(
        [
            [4, 0, -5, 0, 1, 0],
            [0, -4, -4, 1, 1, 0],
            [0, 4, -4, -1, 1, 0],
            [0, -2, -1, 2, 1, 0],
            [0, 2, -1, -2, 1, 0],
            [0, 4, 0, -5, 0, 1],
        ],
        np.float64,
    ),
    np.array(
        [
            [1 / 4, 0, 0],
            [-1 / 6, -1 / 6, -1 / 6],
            [-1 / 6, 1 / 6, -1 / 6],
            [1 / 24, 1 / 12, 1 / 6],
            [1 / 24, -1 / 12, 1 / 6],
            [0, 0, 1],
        ],
        np.float64,
    ),
    np.array(
        [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
        np.float64,
    ),
)


def _kron(mat: np.ndarray) -> np.ndarray:
  """mat (p, q) -> (p*p, q*q): the 2-D separable transform of a flattened q x q tile."""
  return np.kron(mat, mat).astype(np.float32)


# The transforms are small dense matmuls against Kronecker products of the 1-D
# matrices (36x36 at most), applied to all tiles at once. Writing them out as sums
# of shifted slices instead ran no faster and made XLA compile for half a minute a layer.


def _tiles(t: _Winograd, x: jax.Array, th: int, tw: int) -> jax.Array:
  """(B, H, W, C) -> ((m + 2)^2, B * th * tw * C): the overlapping input tiles, one row
  per tile position.

  The input is zero-padded by one pixel ('SAME' for 3x3) and on the bottom/right up
  to whole tiles. Tiles are cut with reshapes, not (m + 2)^2 strided slices: XLA took
  ~2 s to compile each such concatenation.
  """
  b, h, w, c = x.shape
  m = t.m
  # One spare tile row/column of zeros, so that "the next tile" exists for the last one.
  xp = jnp.pad(x, ((0, 0), (1, m * (th + 1) - 1 - h), (1, m * (tw + 1) - 1 - w), (0, 0)))

  def windows(z, axis, n):
    # Size m (n + 1) along axis -> (n, m + 2): tile i covers m i ... m i + m + 1.
    shape = z.shape[:axis] + (n, m) + z.shape[axis + 1 :]
    this = lax.slice_in_dim(z, 0, m * n, axis=axis).reshape(shape)
    after = lax.slice_in_dim(
        lax.slice_in_dim(z, m, m * n + m, axis=axis).reshape(shape), 0, 2, axis=axis + 1
    )
    return jnp.concatenate([this, after], axis=axis + 1)

  tiles = windows(windows(xp, 1, th), 3, tw)  # (B, th, m + 2, tw, m + 2, C)
  # [B, th, r, tw, s, C] -> [r, s, B, th, tw, C]
  return jnp.transpose(tiles, (2, 4, 0, 1, 3, 5)).reshape((m + 2) ** 2, -1)


def _winograd_input(t: _Winograd, x: jax.Array, th: int, tw: int) -> jax.Array:
  """(B, H, W, C) -> V: ((m + 2)^2, B * th * tw, C), B^T d B for every tile d."""
  v = jnp.dot(_kron(t.bt), _tiles(t, x, th, tw))
  return v.reshape(v.shape[0], -1, x.shape[-1])


def _winograd_kernel(t: _Winograd, kernel: jax.Array, flip: bool = False) -> jax.Array:
  """(3, 3, Cin, Cout) -> U: ((m + 2)^2, Cin, Cout), G g G^T for every channel pair.

  With ``flip``, of the kernel rotated by 180 degrees in space (channels stay put).
  """
  if flip:
    kernel = kernel[::-1, ::-1]
  u = jnp.dot(_kron(t.g), kernel.reshape(9, -1))
  return u.reshape(u.shape[0], *kernel.shape[2:])


def _winograd_kernel_transpose(t: _Winograd, du: jax.Array) -> jax.Array:
  """The transpose of ``_winograd_kernel``: ((m + 2)^2, Cin, Cout) -> (3, 3, Cin, Cout)."""
  dk = jnp.dot(_kron(t.g).T, du.reshape(du.shape[0], -1))
  return dk.reshape(3, 3, *du.shape[1:])


def _winograd_output(t: _Winograd, m: jax.Array, b: int, th: int, tw: int) -> jax.Array:
  """M: ((m + 2)^2, B * th * tw, N) -> (B, m th, m tw, N), A^T M A put in place."""
  n = m.shape[-1]
  y = jnp.dot(_kron(t.at), m.reshape(m.shape[0], -1))
  y = y.reshape(t.m, t.m, b, th, tw, n)
  # [i, j, B, th, tw, N] -> [B, th, i, tw, j, N] -> [B, m th, m tw, N]
  return jnp.transpose(y, (2, 3, 0, 4, 1, 5)).reshape(b, t.m * th, t.m * tw, n)


def _winograd_forward(
    t: _Winograd, v: jax.Array, kernel: jax.Array, b: int, h: int, w: int, adjoint: bool = False
) -> jax.Array:
  """The 'SAME' 3x3 convolution of the input whose transformed tiles are ``v``; with
  ``adjoint``, with the kernel rotated by 180 degrees and its in/out channels swapped
  (the input gradient)."""
  th, tw = -(-h // t.m), -(-w // t.m)
  u = _winograd_kernel(t, kernel, flip=adjoint)
  # Swapping channels is a transposed operand of the matmul, not a transposed copy.
  m = jnp.einsum("ptc,poc->pto" if adjoint else "ptc,pco->pto", v, u)
  return _winograd_output(t, m, b, th, tw)[:, :h, :w]


def _grid(t: _Winograd, x: jax.Array) -> tuple[int, int]:
  return -(-x.shape[1] // t.m), -(-x.shape[2] // t.m)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _winograd_conv(t: _Winograd, x: jax.Array, kernel: jax.Array) -> jax.Array:
  v = _winograd_input(t, x, *_grid(t, x))
  return _winograd_forward(t, v, kernel, *x.shape[:3])


def _winograd_conv_fwd(t, x, kernel):
  # Keep the transformed input for the kernel gradient (it replaces x: (m + 2)^2 / m^2
  # times its size) rather than transform x again.
  v = _winograd_input(t, x, *_grid(t, x))
  return _winograd_forward(t, v, kernel, *x.shape[:3]), (v, kernel)


def _winograd_conv_bwd(t, res, g):
  v, kernel = res
  b, h, w, _ = g.shape  # 'SAME': the input's height and width
  th, tw = -(-h // t.m), -(-w // t.m)
  a2 = (t.m + 2) ** 2
  # g's tiles feed both of its transforms: B^T g B, since the input gradient is the
  # 'SAME' convolution of g with the flipped, channel-swapped kernel; and A g A^T, the
  # transpose of the output transform, whose m x m tile is the middle of the padded
  # (m + 2) x (m + 2) one. (One matmul with both matrices stacked would write an output
  # that XLA then copies to split it.)
  tiles = _tiles(t, g, th, tw)
  middle = np.eye(t.m, t.m + 2, 1)  # (m, m + 2): picks rows 1 ... m of a padded tile
  dm = jnp.dot((_kron(t.at).T @ np.kron(middle, middle)).astype(np.float32), tiles)
  dx = _winograd_forward(
      t, jnp.dot(_kron(t.bt), tiles).reshape(a2, b * th * tw, -1), kernel, b, h, w, adjoint=True
  )
  du = jnp.einsum("ptc,pto->pco", v, dm.reshape(a2, b * th * tw, -1))
  return dx, _winograd_kernel_transpose(t, du)


_winograd_conv.defvjp(_winograd_conv_fwd, _winograd_conv_bwd)


def winograd_applies(kernel_shape: Sequence[int], padding: str, dtype) -> bool:
  """Whether ``conv2d_winograd`` uses Winograd's algorithm for this convolution."""
  kh, kw, cin, _ = kernel_shape
  return (
      (kh, kw) == (3, 3)
      and padding == "SAME"
      and cin > DIRECT_MAX_CHANNELS
      and jnp.dtype(dtype) in (jnp.float32, jnp.float64)
  )


def conv2d_winograd(x: ArrayLike, kernel: ArrayLike, padding: str, tile: int = 4) -> jax.Array:
  """Stride-1 NHWC convolution: the CPU fast path.

  Winograd F(tile x tile, 3x3) where ``winograd_applies`` (any H and W: the last
  tiles are zero-padded); a sum of broadcast products for at most
  ``DIRECT_MAX_CHANNELS`` input channels; im2col otherwise. Same contract as
  ``conv2d_xla``.
  """
  x = jnp.asarray(x)
  kernel = jnp.asarray(kernel)
  if kernel.shape[2] <= DIRECT_MAX_CHANNELS:
    return _direct_conv(x, kernel.astype(x.dtype), _pads(padding, *kernel.shape[:2]))
  if not winograd_applies(kernel.shape, padding, x.dtype):
    return conv2d_im2col(x, kernel, padding)
  return _winograd_conv(F4 if tile == 4 else F2, x, kernel.astype(x.dtype))


def resolve_impl(impl: str, dtype=jnp.float32) -> str:
  """The implementation that ``impl`` stands for on the default backend (see module doc)."""
  if impl not in IMPLS:
    raise ValueError(f"Conv impl must be one of {IMPLS}; got {impl!r}.")
  if impl != "auto":
    return impl
  if jax.default_backend() != "cpu":
    return "xla"
  return "winograd" if jnp.dtype(dtype) in (jnp.float32, jnp.float64) else "im2col"


def conv2d(x: ArrayLike, kernel: ArrayLike, padding: str, impl: str = "auto") -> jax.Array:
  """Stride-1 NHWC convolution with the chosen implementation.

  Args:
    x: (B, H, W, Cin) array.
    kernel: (kh, kw, Cin, Cout) array.
    padding: 'SAME' or 'VALID'.
    impl: one of ``IMPLS``.

  Returns:
    (B, Ho, Wo, Cout) array.

  Raises:
    ValueError: for an unknown ``impl`` or ``padding``, or mismatched channels.
  """
  x = jnp.asarray(x)
  kernel = jnp.asarray(kernel)
  if x.ndim != 4 or kernel.ndim != 4 or x.shape[-1] != kernel.shape[2]:
    raise ValueError(
        f"Conv expects x (B, H, W, C) and kernel (kh, kw, C, Cout); got x "
        f"{x.shape} and kernel {kernel.shape}."
    )
  _pads(padding, *kernel.shape[:2])  # validates padding
  impl = resolve_impl(impl, x.dtype)
  if impl == "xla":
    return conv2d_xla(x, kernel, padding)
  if impl == "im2col":
    return conv2d_im2col(x, kernel, padding)
  return conv2d_winograd(x, kernel, padding)


class Conv(nn.Module):
  """A stride-1 2-D convolution with bias, NHWC; parameters as ``flax.linen.Conv``.

  Attributes:
    features: output channels.
    kernel_size: (kh, kw).
    padding: 'SAME' or 'VALID'.
    impl: which formulation computes it; see ``IMPLS`` and the module docstring.
  """

  features: int
  kernel_size: Sequence[int] = (3, 3)
  padding: str = "SAME"
  impl: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: (B, H, W, Cin) -> (B, Ho, Wo, features)."""
    if self.impl not in IMPLS:
      raise ValueError(f"Conv impl {self.impl!r} is not one of {IMPLS}.")
    kh, kw = self.kernel_size
    kernel = self.param(
        "kernel", nn.initializers.lecun_normal(), (kh, kw, x.shape[-1], self.features), jnp.float32
    )
    bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
    y = conv2d(x, kernel.astype(x.dtype), self.padding, self.impl)
    return y + bias.astype(x.dtype)


def _window_view(x: jax.Array, window: tuple[int, int]) -> jax.Array:
  """(B, H, W, C) -> (B, H // ph, ph, W // pw, pw, C), dropping rows/columns that no
  whole window covers (as 'VALID' pooling does)."""
  b, h, w, c = x.shape
  ph, pw = window
  ho, wo = h // ph, w // pw
  return x[:, : ho * ph, : wo * pw].reshape(b, ho, ph, wo, pw, c)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _max_pool(x: jax.Array, window: tuple[int, int]) -> jax.Array:
  return jnp.max(_window_view(x, window), axis=(2, 4))


def _max_pool_fwd(x, window):
  y = _max_pool(x, window)
  return y, (x, y)


def _max_pool_bwd(window, res, g):
  x, y = res
  ph, pw = window
  xw = _window_view(x, window)
  # Each window's gradient goes to its first maximum in row-major order, as XLA's
  # select-and-scatter (the gradient of lax.reduce_window max) does on ties.
  taken = jnp.zeros(y.shape, bool)
  rows = []
  for i in range(ph):
    cols = []
    for j in range(pw):
      hit = (xw[:, :, i, :, j] == y) & ~taken
      taken = taken | hit
      cols.append(jnp.where(hit, g, jnp.zeros_like(g)))
    rows.append(jnp.stack(cols, axis=3))  # (B, Ho, Wo, pw, C)
  dx = jnp.stack(rows, axis=2).reshape(xw.shape[0], -1, xw.shape[3] * pw, xw.shape[-1])
  b, h, w, c = x.shape
  return (jnp.pad(dx, ((0, 0), (0, h - dx.shape[1]), (0, w - dx.shape[2]), (0, 0))),)


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


def max_pool(x: ArrayLike, window: Sequence[int]) -> jax.Array:
  """Non-overlapping 'VALID' max pooling (stride = window), NHWC.

  The same function and gradient as ``flax.linen.max_pool(x, window, window)``,
  ties included, but XLA's CPU backend runs the gradient of ``lax.reduce_window``
  (select-and-scatter, with an index tensor per dimension) 3-6x slower than this
  reshape-and-compare form.

  Args:
    x: (B, H, W, C) array.
    window: (ph, pw) window and stride.

  Returns:
    (B, H // ph, W // pw, C) array.
  """
  x = jnp.asarray(x)
  if x.ndim != 4 or len(window) != 2:
    raise ValueError(
        f"max_pool expects x (B, H, W, C) and a 2-D window; got x {x.shape} "
        f"and window {window}."
    )
  return _max_pool(x, (int(window[0]), int(window[1])))
