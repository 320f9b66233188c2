"""Tests for crnn_jax.export and crnn_jax/export_loader.py: the serialised artefact gives
the live model's outputs for any batch size and bucket, and the standalone loader reads
images as training does without importing crnn_jax."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import tiny_model
from PIL import Image

from crnn_jax import decode, export
from crnn_jax import export_loader as loader
from crnn_jax.data import preprocess
from crnn_jax.recognizer import Recognizer, read_image

from helpers import load_script

LOADER = os.path.abspath(loader.__file__)
SVT = os.path.join(tiny_model.REAL, "svt_train", "images")
PLATES = os.path.join(tiny_model.REAL, "plates_us", "images")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  return tiny_model.save_checkpoint(str(tmp_path_factory.mktemp("ckpt")), tiny_model.config())


@pytest.fixture(scope="module")
def recognizer(workdir):
  return Recognizer.from_checkpoint(workdir, batch_size=4)


@pytest.fixture(scope="module")
def export_dir(workdir, tmp_path_factory):
  """The checkpoint exported by the command line, ``scripts/export.py``."""
  directory = str(tmp_path_factory.mktemp("export"))
  assert load_script("export").main(["--workdir", workdir, "--out", directory]) in (0, None)
  return directory


@pytest.fixture(scope="module")
def reading_export(reading_model, tmp_path_factory):
  """The reading model (conftest.py) exported: texts and confidences worth comparing."""
  directory = str(tmp_path_factory.mktemp("reading_export"))
  exported = export.export_recognizer(reading_model)
  export.save(directory, exported, export.export_meta(reading_model, exported))
  return directory


def padded_batch(rng, batch, width, height=32):
  widths = rng.integers(8, width + 1, batch).astype(np.int32)
  images = rng.integers(0, 256, (batch, height, width), dtype=np.uint8)
  images *= (np.arange(width)[None, None, :] < widths[:, None, None]).astype(np.uint8)
  return images, widths


def test_round_trip_equals_the_live_model(recognizer, export_dir):
  exported, meta = export.load(export_dir)
  assert meta["charset"] == recognizer.charset.chars and meta["width_buckets"] == [64, 128]
  assert [str(d) for d in exported.in_avals[0].shape] == ["b", "32", "4*w"]
  live = jax.jit(
      lambda x, w: recognizer.model.apply(
          recognizer.variables, x.astype(np.float32)[..., None] / 255.0, w, train=False
      )
  )
  rng = np.random.default_rng(0)
  for batch, width in [(3, 64), (5, 128), (1, 96)]:  # symbolic batch and width
    images, widths = padded_batch(rng, batch, width)
    out = exported.call(images, widths)
    logits, pads = live(images, widths)
    assert out["logits"].shape == (batch, width // 4 - 1, recognizer.charset.num_classes)
    np.testing.assert_allclose(out["logits"], logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out["logit_paddings"], pads)
    greedy = decode.greedy_decode(logits, pads)
    np.testing.assert_array_equal(out["tokens"], greedy.tokens)
    np.testing.assert_array_equal(out["lengths"], greedy.lengths)
    np.testing.assert_allclose(out["scores"], greedy.scores, rtol=1e-5)


@pytest.mark.real_data
def test_loader_preprocesses_like_training():
  rng = np.random.default_rng(1)
  images = [
      rng.integers(0, 256, (20, 90), dtype=np.uint8),
      rng.integers(0, 256, (64, 500, 3), dtype=np.uint8),
      rng.random((30, 40, 1)).astype(np.float32),
      Image.fromarray(rng.integers(0, 256, (50, 120, 4), dtype=np.uint8), "RGBA"),
      read_image(os.path.join(SVT, "1.jpg")),
      read_image(os.path.join(PLATES, "ak1165.png")),
  ]
  for image in images:
    for mode in ("pad", "stretch"):
      np.testing.assert_array_equal(
          loader.resize(image, height=32, max_width=128, mode=mode, min_width=8),
          preprocess.resize(image, height=32, max_width=128, mode=mode),
      )


@pytest.mark.real_data
def test_standalone_loader_matches_the_recognizer(reading_model, reading_export, tmp_path):
  """The standalone loader, run as a plain script that must not import crnn_jax, prints
  for photos the texts and confidences the Recognizer gives, with a model that reads; a
  broken file is reported and the others still run. In-process, its own batching of
  photos of mixed sizes agrees too.

  Breaks if the loader's preprocessing, padding, batching or decoding drifts from the
  library's (other texts, or confidences off by more than the 4 printed decimals), if it
  imports crnn_jax, or if one bad file stops the run.
  """
  labelled = {"3.jpg": "THEATERS", "14.jpg": "MASTER", "18.jpg": "THE"}
  paths = [os.path.join(SVT, name) for name in labelled] + [os.path.join(PLATES, "ak1165.png")]
  broken = tmp_path / "broken.png"
  broken.write_bytes(b"not an image")
  # Run as a plain script; fail if anything imported crnn_jax.
  code = (
      f"import runpy, sys\nsys.argv = {[LOADER, reading_export] + paths + [str(broken)]!r}\n"
      f"try:\n  runpy.run_path({LOADER!r}, run_name='__main__')\n"
      f"except SystemExit as e:\n  status = e.code\n"
      f"assert not [m for m in sys.modules if m.startswith('crnn_jax')], 'imported crnn_jax'\n"
      f"sys.exit(status)\n"
  )
  proc = subprocess.run(
      [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300
  )
  assert proc.returncode == 1, proc.stderr  # 1: one file failed, the others ran
  assert f"error: {broken}" in proc.stderr
  rows = [line.split("\t") for line in proc.stdout.strip().splitlines()]
  expected = reading_model([read_image(p) for p in paths])
  assert sum(t == truth for (t, _), truth in zip(expected, labelled.values())) >= 2  # it reads
  assert [r[0] for r in rows] == paths
  assert [r[1] for r in rows] == [t for t, _ in expected]
  # Printed with 4 decimals.
  np.testing.assert_allclose([float(r[2]) for r in rows], [c for _, c in expected], atol=6e-5)

  # The same in-process, on photos of mixed sizes, with the loader's own batching (4+2).
  photos = [read_image(os.path.join(SVT, f"{i}.jpg")) for i in (1, 2, 5, 8, 9, 29)]
  ours = loader.ExportedRecognizer(reading_export, batch_size=4)(photos)
  theirs = reading_model(photos)
  assert len({a.width for a in photos}) > 1
  assert [t for t, _ in ours] == [t for t, _ in theirs]
  np.testing.assert_allclose([c for _, c in ours], [c for _, c in theirs], rtol=1e-4)


def test_load_rejects_other_folders(tmp_path):
  with pytest.raises(ValueError, match="not an exported model"):
    export.load(str(tmp_path))
  (tmp_path / export.META_FILE).write_text(json.dumps({"format": "other/9"}))
  (tmp_path / export.MODEL_FILE).write_bytes(b"")
  with pytest.raises(ValueError, match="format"):
    export.load(str(tmp_path))
