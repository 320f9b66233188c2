"""Every convolution implementation against ``lax.conv_general_dilated``, and the model with
the fast path against the model with plain convolutions."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crnn_jax import conv, models

# (input shape, output channels, kernel, padding). Cover: a single input channel (the
# image layer's direct path), Winograd with whole and partial tiles (H, W not multiples
# of 4, and smaller than a tile), even kernels and 'VALID' (im2col).
SHAPES = [
    ((2, 8, 12, 1), 6, (3, 3), "SAME"),
    ((2, 8, 12, 16), 24, (3, 3), "SAME"),
    ((2, 7, 9, 5), 8, (3, 3), "SAME"),
    ((3, 2, 3, 12), 10, (3, 3), "SAME"),
    ((2, 2, 9, 16), 8, (2, 2), "VALID"),
    ((2, 6, 7, 3), 5, (2, 2), "SAME"),
    ((2, 5, 6, 8), 4, (3, 3), "VALID"),
]
# 'auto' is 'winograd' on CPU (test_auto_is_the_fast_path_on_cpu_only).
IMPLS = ["im2col", "winograd", "winograd2"]


def _conv(impl):
  if impl == "winograd2":
    return lambda x, k, padding: conv.conv2d_winograd(x, k, padding, tile=2)
  return lambda x, k, padding: conv.conv2d(x, k, padding, impl)


def _data(shape, cout, kernel, padding):
  """Input, kernel, bias and an output-shaped weight for the loss (NumPy: no compiles)."""
  rng = np.random.RandomState(0)
  x = rng.standard_normal(shape).astype(np.float32)
  fan_in = kernel[0] * kernel[1] * shape[-1]
  k = (rng.standard_normal((*kernel, shape[-1], cout)) / np.sqrt(fan_in)).astype(np.float32)
  b = rng.standard_normal(cout).astype(np.float32)
  out = jax.eval_shape(lambda x, k: conv.conv2d_xla(x, k, padding), x, k)
  return x, k, b, rng.standard_normal(out.shape).astype(np.float32)


def _loss(fn, padding):
  # A nonlinear loss, so the output gradient differs at every pixel.
  def loss(x, k, b, r):
    return jnp.sum(jnp.sin(fn(x, k, padding) + b) * r)

  return loss


def _close(actual, expected, tol, scale=None):
  """Equal to ``tol`` relative to ``scale`` (default: the largest |expected|)."""
  actual, expected = np.asarray(actual), np.asarray(expected)
  assert actual.shape == expected.shape
  scale = np.abs(expected).max() if scale is None else scale
  np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale)


@pytest.mark.parametrize("shape,cout,kernel,padding", SHAPES)
@pytest.mark.parametrize("impl", IMPLS)
def test_outputs_and_gradients_match_lax(impl, shape, cout, kernel, padding):
  x, k, b, r = _data(shape, cout, kernel, padding)

  @jax.jit
  def both(x, k, b, r):
    # One program with both formulations: output, and gradients wrt input, kernel, bias.
    def run(fn):
      return fn(x, k, padding), jax.grad(_loss(fn, padding), argnums=(0, 1, 2))(x, k, b, r)

    return run(_conv(impl)), run(conv.conv2d_xla)

  (out, grads), (ref_out, ref_grads) = both(x, k, b, r)
  # F(4x4, 3x3) multiplies by up to 8^2 in its transforms: float32 rounding grows to ~1e-5.
  tol = 1e-4 if impl == "winograd" else 1e-5
  _close(out, ref_out, tol)
  for g, ref in zip(grads, ref_grads):
    _close(g, ref, tol)


# The seed model's layers at their real sizes (a 32x128 image, batch 2), each in the
# formulation the model uses on CPU ('auto'): conv1 the direct sum (one input channel),
# conv2-conv6 Winograd F(4x4, 3x3), conv7 (2x2 'VALID') im2col.
SEED_LAYERS = {
    "conv1": ((2, 32, 128, 1), 64, (3, 3), "SAME"),
    "conv2": ((2, 16, 64, 64), 128, (3, 3), "SAME"),
    "conv3": ((2, 8, 32, 128), 256, (3, 3), "SAME"),
    "conv4": ((2, 8, 32, 256), 256, (3, 3), "SAME"),
    "conv5": ((2, 4, 32, 256), 512, (3, 3), "SAME"),
    "conv6": ((2, 4, 32, 512), 512, (3, 3), "SAME"),
    "conv7": ((2, 2, 32, 512), 512, (2, 2), "VALID"),
}


def _conv_and_grads(fn, padding, x, k, b, r):
  """[output, d/dx, d/dkernel, d/dbias] of ``_loss``, as one jitted program."""

  def run(x, k, b, r):
    grads = jax.grad(_loss(fn, padding), argnums=(0, 1, 2))(x, k, b, r)
    return [fn(x, k, padding), *grads]

  return [np.asarray(a, np.float64) for a in jax.jit(run)(x, k, b, r)]


@pytest.mark.parametrize("layer", list(SEED_LAYERS))
def test_seed_layers_at_real_sizes_match_float64(layer):
  """Each seed layer's output and its three gradients against XLA's convolution in
  float64, each array held to its own scale: relative L2 error <= 2e-5, largest error
  <= 1e-4 of its largest entry.

  Measured: Winograd reaches relative L2 errors of up to 5.7e-6 (conv6's input gradient;
  largest error 2.1e-5 of the largest entry), XLA's own float32 convolution 5e-7. The
  transforms' rounding does not grow with the channel count (conv2 to conv6 alike).
  Breaking it (each mutant run at conv6's size): one Winograd constant off by 1e-4 of
  itself (B^T's -5 as -5.0005) gives relative L2 errors of 5.2e-5 to 7.1e-5 and fails;
  1/6 written as 0.1667 in G, 1/24 as 0.0417, or A^T's 8 as 8.001 give 2.3e-4 to 5.6e-4.
  (The whole-model test below, when it held gradients to 1e-3 of the largest gradient
  anywhere, let the first of these through; per leaf it fails it too.)
  """
  shape, cout, kernel, padding = SEED_LAYERS[layer]
  x, k, b, r = _data(shape, cout, kernel, padding)
  with jax.enable_x64(True):
    exact = _conv_and_grads(conv.conv2d_xla, padding, *(a.astype(np.float64) for a in (x, k, b, r)))
  got = _conv_and_grads(lambda x, k, p: conv.conv2d(x, k, p, "auto"), padding, x, k, b, r)
  for name, a, e in zip(
      ["output", "input gradient", "kernel gradient", "bias gradient"], got, exact
  ):
    rel_l2 = np.linalg.norm(a - e) / np.linalg.norm(e)
    assert rel_l2 <= 2e-5, f"{layer} {name}: relative L2 error {rel_l2:.2e}"
    _close(a, e, 1e-4)


def test_winograd_is_used_where_it_applies():
  # The seed's 3x3 layers take the Winograd path; a wrong dispatch would still pass the
  # numeric tests (every path is exact), so check the traced program.
  x = jnp.zeros((2, 8, 8, 16))
  k = jnp.zeros((3, 3, 16, 16))
  text = str(jax.make_jaxpr(lambda x, k: conv.conv2d(x, k, "SAME", "winograd"))(x, k))
  assert "custom_vjp_call" in text and "conv_general_dilated" not in text
  assert conv.winograd_applies(k.shape, "SAME", jnp.float32)
  assert not conv.winograd_applies((2, 2, 16, 16), "VALID", jnp.float32)
  assert not conv.winograd_applies((3, 3, 1, 16), "SAME", jnp.float32)
  assert not conv.winograd_applies(k.shape, "SAME", jnp.bfloat16)


def test_auto_is_the_fast_path_on_cpu_only():
  assert jax.default_backend() == "cpu"
  assert conv.resolve_impl("auto") == "winograd"
  assert conv.resolve_impl("auto", jnp.bfloat16) == "im2col"
  assert conv.resolve_impl("xla") == "xla"


def test_bad_arguments_are_clear_errors():
  x, k = jnp.zeros((1, 4, 4, 2)), jnp.zeros((3, 3, 2, 3))
  with pytest.raises(ValueError, match="impl must be one of"):
    conv.conv2d(x, k, "SAME", "cudnn")
  with pytest.raises(ValueError, match="padding must be 'SAME' or 'VALID'"):
    conv.conv2d(x, k, "CIRCULAR")
  with pytest.raises(ValueError, match="kernel"):
    conv.conv2d(x, jnp.zeros((3, 3, 5, 3)), "SAME")


@pytest.mark.parametrize("impl", ["xla", "im2col", "winograd"])
def test_conv_module_parameters_match_flax_conv(impl):
  x = np.random.RandomState(1).standard_normal((2, 6, 8, 5)).astype(np.float32)
  ours = conv.Conv(7, (3, 3), "SAME", impl=impl)
  variables = jax.jit(ours.init)(jax.random.key(2), x)
  flax_conv = nn.Conv(7, (3, 3), padding="SAME")
  flax_vars = jax.eval_shape(flax_conv.init, jax.random.key(2), x)
  assert jax.tree.map(jnp.shape, variables) == jax.tree.map(jnp.shape, flax_vars)
  _close(jax.jit(ours.apply)(variables, x), jax.jit(flax_conv.apply)(variables, x), 1e-4)
  with pytest.raises(ValueError, match="not one of"):
    conv.Conv(7, impl="fast").init(jax.random.key(2), x)


@pytest.mark.parametrize(
    "shape,window", [((2, 8, 12, 3), (2, 2)), ((2, 9, 7, 3), (2, 2)), ((3, 8, 6, 4), (2, 1))]
)
def test_max_pool_matches_flax_including_ties(shape, window):
  # Small integers: many windows hold their maximum twice, where only tie-breaking
  # decides which input gets the gradient.
  rng = np.random.RandomState(3)
  x = rng.randint(0, 3, size=shape).astype(np.float32)
  r = rng.standard_normal((shape[0], shape[1] // window[0], shape[2] // window[1], shape[3]))

  @jax.jit
  def both(x, r):
    def run(pool):
      return pool(x), jax.grad(lambda x: jnp.sum(pool(x) * r))(x)

    return run(lambda x: conv.max_pool(x, window)), run(lambda x: nn.max_pool(x, window, window))

  (out, grad), (ref, ref_grad) = both(x, r.astype(np.float32))
  np.testing.assert_array_equal(out, ref)
  np.testing.assert_array_equal(grad, ref_grad)


def test_model_with_fast_convolutions_matches_plain_model():
  # The model as a user gets it ('auto': Winograd, direct and im2col on CPU) against the
  # same parameters with lax convolutions: logits, every parameter gradient and the
  # BatchNorm statistics, in training mode with masked (partly padded) examples.
  kw = dict(num_classes=11, conv_features=(8, 8, 16, 16, 16, 16, 16), lstm_hidden=8)
  fast, plain = models.CRNN(**kw, conv_impl="auto"), models.CRNN(**kw, conv_impl="xla")
  images = np.random.RandomState(5).uniform(size=(3, 32, 24, 1)).astype(np.float32)
  widths = jnp.array([24, 17, 9])
  # Random parameters in place of init, whose compile (orthogonal LSTM kernels) is slow.
  shapes = jax.eval_shape(plain.init, jax.random.key(6), images, widths)
  rng = np.random.RandomState(6)

  def param(s):
    fan_in = np.prod(s.shape[:-1]) if len(s.shape) > 1 else 10
    return (rng.standard_normal(s.shape) / np.sqrt(fan_in)).astype(np.float32)

  variables = {
      "params": jax.tree.map(param, shapes["params"]),
      "batch_stats": jax.tree.map(
          lambda s: rng.uniform(0.5, 1.5, s.shape).astype(np.float32), shapes["batch_stats"]
      ),
  }

  def run(model):
    def loss(params):
      (logits, pads), updates = model.apply(
          {"params": params, "batch_stats": variables["batch_stats"]},
          images,
          widths,
          train=True,
          rngs={"dropout": jax.random.key(7)},
          mutable=["batch_stats"],
      )
      return jnp.sum(jnp.where(pads[..., None] < 0.5, jnp.tanh(logits), 0.0)), (logits, updates)

    return jax.jit(jax.grad(loss, has_aux=True))(variables["params"])

  (grads, (logits, updates)), (ref_grads, (ref_logits, ref_updates)) = run(fast), run(plain)
  _close(logits, ref_logits, 1e-4)
  # Each gradient to its own scale, except the biases of the convolutions that feed
  # BatchNorm: their true gradient is zero (BatchNorm subtracts them again), which both
  # formulations reach only up to rounding; those are held to their kernel's scale.
  flat = jax.tree_util.tree_flatten_with_path(ref_grads)[0]
  for (path, ref), g in zip(flat, jax.tree.leaves(grads)):
    name = "/".join(k.key for k in path)
    if name in ("cnn/conv5/bias", "cnn/conv6/bias"):
      kernel = float(np.abs(ref_grads["cnn"][path[1].key]["kernel"]).max())
      assert np.abs(g).max() <= 1e-5 * kernel and np.abs(ref).max() <= 1e-5 * kernel, name
    else:
      # Seen: at most 5.8e-6 of the leaf's largest entry (conv1's kernel).
      _close(g, ref, 1e-4)
  for s, ref in zip(jax.tree.leaves(updates), jax.tree.leaves(ref_updates)):
    _close(s, ref, 1e-4)
