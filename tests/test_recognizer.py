"""Tests for crnn_jax.recognizer and scripts/predict.py: loading, preprocessing like
training, one compilation per width bucket, order and batching, files and folders."""

import json
import os
import shutil
import sys

import jax
import numpy as np
import optax
import pytest
import tiny_model
from PIL import Image

from crnn_jax import charset as charset_lib
from crnn_jax import decode, recognizer as recognizer_lib
from crnn_jax.data import index, specs
from crnn_jax.recognizer import Recognizer

sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts")
)
import predict  # noqa: E402  scripts/predict.py

SVT = os.path.join(tiny_model.REAL, "svt_train")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  return tiny_model.save_checkpoint(str(tmp_path_factory.mktemp("ckpt")), tiny_model.config())


@pytest.fixture(scope="module")
def recognizer(workdir):
  return Recognizer.from_checkpoint(workdir, batch_size=4)


def mixed_images(rng):
  """Images of many sizes, modes and dtypes; widths cover both buckets (64, 128)."""
  out = []
  for h, w in [(20, 31), (45, 90), (32, 32), (64, 500), (17, 60), (100, 150), (8, 80)]:
    out.append(rng.integers(0, 256, (h, w), dtype=np.uint8))
  out.append(rng.integers(0, 256, (40, 100, 3), dtype=np.uint8))
  out.append(rng.random((30, 200, 1), dtype=np.float32))  # float in [0, 1]
  out.append(Image.fromarray(rng.integers(0, 256, (50, 120, 4), dtype=np.uint8), "RGBA"))
  out.append(Image.fromarray(rng.integers(0, 256, (24, 70, 3), dtype=np.uint8)).convert("P"))
  return out


def reference(recognizer, arrays):
  """Greedy texts and best-path confidences straight from the model, one image at a time."""
  apply = jax.jit(lambda x, w: recognizer.model.apply(recognizer.variables, x, w, train=False))
  out = []
  for a in arrays:
    x = np.zeros((1, recognizer.height, recognizer.bucket_of(a.shape[1]), 1), np.float32)
    x[0, :, : a.shape[1], 0] = a / 255.0
    r = decode.greedy_decode(*apply(x, np.array([a.shape[1]], np.int32)))
    n = int(r.lengths[0])
    out.append((recognizer.charset.decode(np.asarray(r.tokens[0, :n])), float(np.exp(r.scores[0]))))
  return out


def test_loads_the_checkpoint_config(recognizer):
  meta = recognizer.checkpoint.meta
  assert recognizer.width_buckets == tuple(meta["data"]["width_buckets"]) == (64, 128)
  assert recognizer.charset == charset_lib.Charset()
  assert recognizer.model.lstm_hidden == 16 and recognizer.model.conv_features == (
      8,
      8,
      16,
      16,
      16,
      16,
      16,
  )
  # Saved replicated over 8 devices, loaded onto one.
  leaf = jax.tree.leaves(recognizer.variables)[0]
  assert len(leaf.sharding.device_set) == 1


def test_mixed_sizes_match_the_model_and_compile_once_per_bucket(recognizer):
  """Any size, mode and dtype; results in input order; no compilation per image size."""
  compiles = []

  def listener(event, duration, **kwargs):
    if event == "/jax/core/compile/backend_compile_duration":
      compiles.append(kwargs.get("fun_name", ""))

  images = mixed_images(np.random.default_rng(0))
  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    first = recognizer(images)
    n_first = len(compiles)
    rng = np.random.default_rng(1)
    more = recognizer(
        [rng.integers(0, 256, (h, w), dtype=np.uint8) for h, w in rng.integers(9, 300, (9, 2))]
    )
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  arrays = [recognizer.preprocess(im) for im in images]
  buckets = {recognizer.bucket_of(a.shape[1]) for a in arrays}
  assert buckets == {64, 128}
  # 11 images of 11 sizes in 2 buckets, 3+ batches of 4: exactly one compile per bucket.
  assert n_first == 2, compiles
  assert len(compiles) == 2, compiles  # new sizes, same buckets: nothing compiles
  assert len(more) == 9
  expected = reference(recognizer, arrays)
  assert [t for t, _ in first] == [t for t, _ in expected]
  np.testing.assert_allclose([c for _, c in first], [c for _, c in expected], rtol=1e-4)


@pytest.mark.real_data
def test_preprocessing_is_the_training_pipeline(recognizer, tmp_path):
  """Real photos: the arrays the recognizer feeds equal those training batches hold."""
  lines = tiny_model.read_labels("svt_train")[:12]
  spec = tiny_model.write_tsv(str(tmp_path), "svt_train", lines)
  idx = index.build_index(
      specs.open_source(spec),
      charset=recognizer.charset,
      height=32,
      width_buckets=recognizer.width_buckets,
  )
  checked = 0
  for width, members in zip(idx.widths, idx.members):
    for i in members:
      cached = idx.cache[int(i)]
      mine = recognizer.preprocess(recognizer_lib.read_image(cached.key))
      if mine.shape[1] != cached.image.shape[1]:
        continue  # widened in training to fit its label's length
      np.testing.assert_array_equal(mine, cached.image)
      assert recognizer.bucket_of(mine.shape[1]) == width
      checked += 1
  assert checked >= 10


def test_bad_inputs_name_the_problem(recognizer):
  with pytest.raises(ValueError, match="list of images"):
    recognizer(np.zeros((32, 64), np.uint8))
  with pytest.raises(ValueError, match=r"images\[1\]"):
    recognizer([np.zeros((32, 64), np.uint8), np.zeros((3, 32, 64, 2), np.uint8)])
  with pytest.raises(ValueError, match="top_k"):
    Recognizer(
        recognizer.model, recognizer.variables, recognizer.charset, width_buckets=(64,), top_k=3
    )
  assert recognizer([]) == []


def word_log_probs(recognizer, arrays, words):
  """log P(word | image) summed over all CTC alignments (optax's CTC), per image and word."""
  apply = jax.jit(lambda x, w: recognizer.model.apply(recognizer.variables, x, w, train=False))
  out = []
  for a in arrays:
    x = np.zeros((1, recognizer.height, recognizer.bucket_of(a.shape[1]), 1), np.float32)
    x[0, :, : a.shape[1], 0] = a / 255.0
    logits, pads = apply(x, np.array([a.shape[1]], np.int32))
    row = {}
    for word in words:
      ids = np.array([recognizer.charset.encode(word)], np.int32)
      row[word] = -float(optax.ctc_loss(logits, pads, ids, np.zeros(ids.shape, np.float32))[0])
    out.append(row)
  return out


def test_beam_candidates_sorted_and_lexicon_restricted(workdir):
  """Beam candidates are distinct and sorted; lexicon mode returns both words of a
  two-word lexicon with their exact probabilities (a beam of 8 holds every prefix of
  "Inn" and "ROOM", so the search is exact), compared with optax's CTC over the logits.

  Breaks if lexicon mode returns ("", 0.0) or any word other than the likelier one, if
  its confidences are not the words' probabilities, or if a word with a character the
  charset lacks is not skipped.
  """
  beam = Recognizer.from_checkpoint(workdir, batch_size=4, decode="beam", beam_size=4, top_k=3)
  images = [
      np.full((32, 60), 200, np.uint8),
      np.random.default_rng(2).integers(0, 256, (32, 60), dtype=np.uint8),
  ]
  cands = beam.candidates(images)
  for hyps in cands:
    assert 1 <= len(hyps) <= 3
    confs = [c for _, c in hyps]
    assert confs == sorted(confs, reverse=True)
    assert len({t for t, _ in hyps}) == len(hyps)
  assert beam(images) == [h[0] for h in cands]
  words = ["Inn", "ROOM", "caf\u00e9"]  # the last has a character the charset lacks
  lex = Recognizer.from_checkpoint(
      workdir, batch_size=4, decode="lexicon", beam_size=8, top_k=2, lexicon=words
  )
  assert (lex.lexicon_size, lex.lexicon_skipped) == (2, 1)
  expected = word_log_probs(lex, [lex.preprocess(im) for im in images], words[:2])
  got = lex.candidates(images)
  for hyps, logp in zip(got, expected):
    assert [t for t, _ in hyps] == sorted(logp, key=logp.get, reverse=True), (hyps, logp)
    np.testing.assert_allclose([np.log(c) for _, c in hyps], [logp[t] for t, _ in hyps], atol=1e-3)
  assert lex(images) == [h[0] for h in got]


@pytest.mark.real_data
def test_predict_folder_with_a_corrupt_file(reading_weights, reading_model, tmp_path, capsys):
  """scripts/predict.py on a folder (a JPEG, an RGBA PNG in a subfolder, a truncated file,
  a text file) with a model that reads: the texts and confidences printed are those of
  the Recognizer, the truncated file is reported and the others still run.

  Breaks if the script preprocesses, orders or batches differently from the Recognizer
  (other texts or confidences than ``reading_model``'s, which reads "THE" and "MASTER"),
  if a bad file stops the run or is not reported, or if --json --top-k loses candidates.
  """
  folder = tmp_path / "photos"
  (folder / "sub").mkdir(parents=True)
  shutil.copy(os.path.join(SVT, "images", "18.jpg"), folder / "a.jpg")  # THE
  Image.open(os.path.join(SVT, "images", "14.jpg")).convert("RGBA").save(
      folder / "sub" / "b.png"
  )  # MASTER
  with open(os.path.join(SVT, "images", "3.jpg"), "rb") as f:
    (folder / "broken.jpg").write_bytes(f.read()[:200])  # truncated
  (folder / "notes.txt").write_text("not an image")  # not an image extension: not taken
  code = predict.main(["--weights", reading_weights, "--batch-size", "4", str(folder)])
  out, err = capsys.readouterr()
  assert code == 1
  rows = [line.split("\t") for line in out.strip().splitlines()]
  assert [r[0] for r in rows] == [str(folder / "a.jpg"), str(folder / "sub" / "b.png")]
  assert all(len(r) == 3 for r in rows)
  assert f"error: {folder / 'broken.jpg'}" in err and "notes.txt" not in out + err

  images = [
      recognizer_lib.read_image(str(folder / "a.jpg")),
      recognizer_lib.read_image(str(folder / "sub" / "b.png")),
  ]
  expected = reading_model(images)
  assert [t for t, _ in expected] == ["THE", "MASTER"]  # a model that reads
  assert [r[1] for r in rows] == [t for t, _ in expected]
  # Printed with 4 decimals.
  np.testing.assert_allclose([float(r[2]) for r in rows], [c for _, c in expected], atol=6e-5)

  code = predict.main(
      [
          "--weights",
          reading_weights,
          "--json",
          "--top-k",
          "2",
          "--beam-size",
          "2",
          str(folder / "a.jpg"),
          str(folder / "broken.jpg"),
      ]
  )
  lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  assert code == 1
  first = lines[0]
  assert first["path"].endswith("a.jpg") and len(first["candidates"]) == 2
  assert (first["text"], first["confidence"]) == tuple(first["candidates"][0].values())
  # Beam search sums the word's alignments: at least the best path's probability.
  assert first["text"] == "THE" and first["confidence"] >= expected[0][1] * (1 - 1e-5)
  assert first["candidates"][1]["confidence"] <= first["confidence"]
  assert lines[1]["path"].endswith("broken.jpg") and "error" in lines[1]
