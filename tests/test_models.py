import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crnn_jax import models

TINY = dict(conv_features=(4, 8, 8, 8, 8, 8, 8), lstm_hidden=8, lstm_layers=2)


def _init(model, width=64, batch=2):
  return jax.jit(model.init)(
      jax.random.key(0), jnp.zeros((batch, model.height, width, 1)), jnp.full((batch,), width)
  )


def test_seed_model_parameter_count_is_exact():
  model = models.CRNN(num_classes=63)
  shapes = jax.eval_shape(lambda: _init(model, 128))
  assert models.count_params(shapes["params"]) == 6_617_663
  assert models.count_params(shapes["batch_stats"]) == 2_048
  assert "6,617,663" in models.param_summary(shapes)


@pytest.fixture(scope="module")
def tiny():
  model = models.CRNN(num_classes=11, **TINY)
  return model, _init(model, 64)


@pytest.mark.parametrize("width,frames", [(128, 31), (256, 63), (64, 15), (32, 7), (100, 24)])
def test_frames_grow_with_width(tiny, width, frames):
  model, variables = tiny
  padded = -(-width // 4) * 4
  logits, pads = jax.jit(model.apply)(variables, jnp.zeros((1, 32, padded, 1)), jnp.array([width]))
  assert logits.shape == (1, padded // 4 - 1, 11)
  assert int((pads < 0.5).sum()) == frames == int(models.num_frames(width))
  assert models.num_frames(models.min_width_for_frames(frames)) >= frames


def test_wrong_height_is_a_clear_error(tiny):
  model, variables = tiny
  with pytest.raises(ValueError, match="height 48.*built for height 32"):
    model.apply(variables, jnp.zeros((1, 48, 64, 1)), jnp.array([64]))


def test_smaller_model_is_config_only():
  model = models.CRNN(
      num_classes=11, conv_features=(8, 8, 16, 16, 16, 16, 16), lstm_hidden=4, lstm_layers=3
  )
  shapes = jax.eval_shape(lambda: _init(model))
  assert set(shapes["params"]) == {"cnn", "bilstm1", "bilstm2", "bilstm3", "classifier"}


@pytest.mark.parametrize("train", [False, True])
def test_padded_columns_cannot_change_valid_outputs(tiny, train):
  """Zeros, garbage or 64 more columns of noise beyond each width: the same logits in the
  valid frames and, in training mode, the same updated BatchNorm running statistics.

  Breaks if padded columns leak into a valid output (a conv or LSTM reading past the
  width) or into the BatchNorm batch statistics (garbage and extra columns would move
  the means and variances).
  """
  model, variables = tiny
  rng = np.random.default_rng(0)
  widths = np.array([37, 64, 12])
  clean = rng.uniform(size=(3, 32, 64, 1)).astype(np.float32)
  for i, w in enumerate(widths):
    clean[i, :, w:] = 0.0
  garbage = clean.copy()
  for i, w in enumerate(widths):
    garbage[i, :, w:] = rng.uniform(-50, 50, size=garbage[i, :, w:].shape)
  wider = np.concatenate([garbage, rng.normal(size=(3, 32, 64, 1)).astype(np.float32)], axis=2)

  @jax.jit
  def run(images):
    return model.apply(
        variables,
        images,
        jnp.asarray(widths),
        train=train,
        mutable=["batch_stats"],
        rngs={"dropout": jax.random.key(1)},
    )

  ((a, pa), sa), ((b, _), sb), ((c, pc), sc) = run(clean), run(garbage), run(wider)
  frames = models.num_frames(widths)
  for i, t in enumerate(frames):
    np.testing.assert_allclose(a[i, :t], b[i, :t], atol=1e-5)
    np.testing.assert_allclose(a[i, :t], c[i, :t], atol=1e-5)
  np.testing.assert_array_equal(pa, pc[:, : pa.shape[1]])
  close = functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-6)
  jax.tree.map(close, sa, sb)
  jax.tree.map(close, sa, sc)
  if train:  # the statistics did move: the comparison above could fail
    moved = jax.tree.map(
        lambda x, y: not np.allclose(x, y), sa["batch_stats"], variables["batch_stats"]
    )
    assert all(jax.tree.leaves(moved))


def test_forward_under_jit_and_dtypes(tiny):
  model, variables = tiny
  f = jax.jit(lambda v, x, w: model.apply(v, x, w))
  logits, pads = f(variables, jnp.zeros((2, 32, 64)), jnp.array([64, 20]))
  assert logits.dtype == jnp.float32 and pads.dtype == jnp.float32
  assert logits.shape == (2, 15, 11)


@pytest.mark.parametrize("shape", [(2, 32, 64), (2, 32, 64, 1)])
def test_integer_pixels_are_scaled_to_the_unit_interval(tiny, shape):
  """uint8 pixels give the logits of the same pixels as floats / 255: the model is the one
  place that scales (training, the Recognizer and export all feed it uint8). Breaking it:
  dropping the scaling, or scaling floats too."""
  model, variables = tiny
  pixels = np.random.default_rng(0).integers(0, 256, shape, np.uint8)
  widths = jnp.array([64, 37])
  f = jax.jit(lambda v, x, w: model.apply(v, x, w))
  from_uint8, _ = f(variables, pixels, widths)
  from_floats, _ = f(variables, pixels.astype(np.float32) / 255.0, widths)
  np.testing.assert_allclose(from_uint8, from_floats, rtol=1e-6, atol=1e-6)
  assert float(jnp.abs(from_uint8).max()) > 0  # a real comparison, not two zero arrays
  int32_logits, _ = f(variables, pixels.astype(np.int32), widths)
  np.testing.assert_allclose(int32_logits, from_uint8, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "name,backend,want",
    [
        ("auto", "cpu", jnp.float32),
        ("auto", "gpu", jnp.bfloat16),
        ("auto", "tpu", jnp.bfloat16),
        ("float32", "gpu", jnp.float32),
        ("bfloat16", "cpu", jnp.bfloat16),
    ],
)
def test_compute_dtype_resolution(name, backend, want):
  assert models.resolve_compute_dtype(name, backend) == jnp.dtype(want)


def test_unknown_compute_dtype_is_a_clear_error():
  with pytest.raises(ValueError, match=r"model.compute_dtype must be one of .*'float16'"):
    models.resolve_compute_dtype("float16")


def test_from_config_without_the_field_means_auto():
  # Checkpoints saved before compute_dtype existed.
  meta = {
      "height": 32,
      "conv_features": TINY["conv_features"],
      "lstm_hidden": 8,
      "lstm_layers": 1,
      "dropout": 0.0,
  }
  assert models.from_config(meta, 11).dtype == models.resolve_compute_dtype("auto")
  assert models.from_config(dict(meta, compute_dtype="bfloat16"), 11).dtype == jnp.bfloat16
  assert models.from_config(meta, 11, compute_dtype="bfloat16").dtype == jnp.bfloat16


def _zeros(shapes):
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def _matmul_output_dtypes(model, train):
  """Output dtypes of every dot_general and convolution in the traced forward pass."""
  variables = _zeros(jax.eval_shape(lambda: _init(model.clone(dtype=jnp.float32))))
  fn = lambda v, x, w: model.apply(
      v, x, w, train=train, mutable=["batch_stats"], rngs={"dropout": jax.random.key(0)}
  )
  text = str(jax.make_jaxpr(fn)(variables, jnp.zeros((2, 32, 64, 1)), jnp.array([64, 20])))
  return {m for m in re.findall(r":(\w+)\[[\d,]*\] = (?:dot_general|conv_general_dilated)", text)}


def test_bfloat16_model_computes_in_bfloat16_on_float32_variables():
  # XLA's convolutions, as on accelerators; the LSTM gates and the classifier: all bf16.
  model = models.CRNN(num_classes=11, conv_impl="xla", dtype=jnp.bfloat16, **TINY)
  assert _matmul_output_dtypes(model, train=True) == {"bf16"}
  assert _matmul_output_dtypes(model.clone(dtype=jnp.float32), train=True) == {"f32"}
  variables = _zeros(jax.eval_shape(lambda: _init(model)))
  assert {x.dtype for x in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
  logits, pads = jax.eval_shape(
      lambda: model.apply(variables, jnp.zeros((2, 32, 64, 1)), jnp.array([64, 20]))
  )
  assert logits.dtype == jnp.float32 and pads.dtype == jnp.float32
