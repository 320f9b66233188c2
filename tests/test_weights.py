"""Tests for crnn_jax.weights and what uses a weights file: Recognizer.from_weights and
.pretrained, scripts/predict.py without a checkpoint, init_from=<weights file>, and the
shipped pretrained model (skipped until crnn_jax/pretrained/crnn_seed.npz exists)."""

import json
import os
import subprocess
import sys
import zipfile

import jax
import numpy as np
import pytest
import tiny_model

from crnn_jax import finetune, weights
from crnn_jax import recognizer as recognizer_lib
from crnn_jax.recognizer import Recognizer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts"))
import predict  # noqa: E402  scripts/predict.py

SVT = os.path.join(tiny_model.REAL, "svt_train", "images")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  return tiny_model.save_checkpoint(str(tmp_path_factory.mktemp("ckpt")), tiny_model.config())


@pytest.fixture(scope="module")
def loaded(workdir):
  return recognizer_lib.load_checkpoint(workdir)


def provenance_meta(loaded):
  return dict(
      loaded.meta,
      step=loaded.step,
      provenance={
          "checkpoint": loaded.where,
          "config": "tests/tiny_model.py",
          "note": "caf\u00e9 \u2013 non-ASCII survives",
      },
  )


@pytest.fixture(scope="module")
def weights_file(loaded, tmp_path_factory):
  """The tiny checkpoint as a float16 weights file."""
  path = str(tmp_path_factory.mktemp("weights") / "tiny.npz")
  weights.save_weights(path, loaded.variables, provenance_meta(loaded))
  return path


def same_tree(a, b, equal):
  """Same tree structure and ``equal(x, y)`` for every pair of leaves."""
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  flat_a = jax.tree_util.tree_flatten_with_path(a)[0]
  for (path, x), y in zip(flat_a, jax.tree.leaves(b)):
    assert equal(np.asarray(x), np.asarray(y)), jax.tree_util.keystr(path)


def test_round_trip_float16_params_exact_batch_stats(loaded, tmp_path):
  """Stored params equal the float16-rounded originals, returned as float32; BatchNorm
  statistics and params float16 cannot hold come back bit for bit.

  Breaks if the params are not rounded (or rounded twice, or to bfloat16), if BatchNorm
  statistics go through float16 (the 1234.567 means below would change), if a value over
  65,504 becomes inf or a leaf of 1e-6 values underflows, or if a leaf is lost or renamed.
  """
  rng = np.random.default_rng(0)
  variables = jax.tree.map(np.asarray, jax.device_get(loaded.variables))
  variables["batch_stats"] = jax.tree.map(
      lambda x: (1234.567 + 1000 * rng.standard_normal(x.shape)).astype(np.float32),
      variables["batch_stats"],
  )
  variables["params"]["cnn"]["conv1"]["bias"] = np.full_like(
      variables["params"]["cnn"]["conv1"]["bias"], 1e5
  )  # float16 overflows
  variables["params"]["classifier"]["bias"] = (
      1e-6 * rng.standard_normal(variables["params"]["classifier"]["bias"].shape)
  ).astype(
      np.float32
  )  # float16 underflows
  path = str(tmp_path / "w.npz")
  written = weights.save_weights(path, variables, provenance_meta(loaded))
  assert set(written.float32_params) == {"params/cnn/conv1/bias", "params/classifier/bias"}

  got, _ = weights.load_weights(path)
  same_tree(got, variables, lambda x, y: x.dtype == np.float32 and x.shape == y.shape)
  same_tree(got["batch_stats"], variables["batch_stats"], np.array_equal)
  with np.errstate(over="ignore"):
    rounded = jax.tree.map(lambda x: x.astype(np.float16).astype(np.float32), variables["params"])
  rounded["cnn"]["conv1"]["bias"] = variables["params"]["cnn"]["conv1"]["bias"]
  rounded["classifier"]["bias"] = variables["params"]["classifier"]["bias"]
  same_tree(got["params"], rounded, np.array_equal)
  # Something was rounded (the test would pass vacuously on float16-exact values).
  kernel = variables["params"]["cnn"]["conv2"]["kernel"]
  assert not np.array_equal(got["params"]["cnn"]["conv2"]["kernel"], kernel)
  # Float32 storage is exact everywhere, and bigger: about twice for the seed model, less
  # here where the zip and .npy headers of 49 small leaves weigh more.
  path32 = str(tmp_path / "w32.npz")
  written32 = weights.save_weights(path32, variables, provenance_meta(loaded), dtype="float32")
  same_tree(weights.load_weights(path32)[0], variables, np.array_equal)
  assert written.num_bytes < 0.65 * written32.num_bytes


def flip(data: bytes, offset: int) -> bytes:
  return data[:offset] + bytes([data[offset] ^ 0x5A]) + data[offset + 1 :]


def test_a_flipped_byte_anywhere_is_caught(weights_file, tmp_path):
  """One flipped byte at many offsets (the zip headers, meta.json, inside array data, the
  central directory, the comment's length field, the digest itself, random places), a
  truncated file and a missing file: each a ValueError naming the file.

  Breaks if the digest skips any part of the file (e.g. hashes only the arrays: a flip in
  a zip header or in meta.json would pass), if a flipped digest character is accepted, or
  if a zip or numpy error escapes as another exception type.
  """
  with open(weights_file, "rb") as f:
    data = f.read()
  variables, _ = weights.load_weights(weights_file)
  kernel = variables["params"]["bilstm1"]
  kernel = jax.tree.leaves(kernel)[0].astype(np.float16).tobytes()
  in_array = data.find(kernel) + len(kernel) // 2  # the middle of an LSTM kernel's data
  with zipfile.ZipFile(weights_file) as zf:
    central = data.rfind(b"PK\x01\x02")  # the last central-directory entry
    meta_at = zf.getinfo(weights.META_MEMBER).header_offset + 30 + len(weights.META_MEMBER)
  offsets = {
      0,
      14,
      meta_at + 3,
      in_array,
      central + 20,
      len(data) - 92,
      len(data) - 64,
      len(data) - 1,
  }
  offsets |= set(np.random.default_rng(0).integers(0, len(data), 24).tolist())
  assert data.find(kernel) > 0
  bad = str(tmp_path / "bad.npz")
  for offset in sorted(offsets):
    with open(bad, "wb") as f:
      f.write(flip(data, offset))
    with pytest.raises(ValueError, match="corrupt") as e:
      weights.load_weights(bad)
    assert bad in str(e.value), offset
  with open(bad, "wb") as f:
    f.write(data[:-100])
  with pytest.raises(ValueError, match="corrupt"):
    weights.load_weights(bad)
  with pytest.raises(ValueError, match="No weights file at .*nowhere.npz"):
    weights.load_weights(str(tmp_path / "nowhere.npz"))
  with pytest.raises(ValueError, match="is a folder"):
    weights.load_weights(str(tmp_path))


def test_metadata_kept_plain_npz_and_bad_arguments(loaded, weights_file, tmp_path):
  """The metadata comes back as saved; numpy alone reads the file (no pickle); the same
  input gives the same bytes; bad arguments are ValueErrors that say what to change.

  Breaks if a metadata field is dropped or altered (non-ASCII included), if the file
  needs pickle or crnn_jax to read, if the bytes depend on the time of writing, or if a
  bad dtype or metadata without a charset is written anyway.
  """
  _, meta = weights.load_weights(weights_file)
  # Everything but the checkpoint's per-array digests, which the file's own SHA-256 replaces.
  expected = {k: v for k, v in provenance_meta(loaded).items() if k != "digests"}
  assert "digests" in loaded.meta and "digests" not in meta
  assert meta == json.loads(json.dumps(expected))
  assert meta["charset"] == loaded.charset.chars and meta["data"]["width_buckets"] == [64, 128]
  with np.load(weights_file, allow_pickle=False) as npz:
    assert "params/classifier/kernel" in npz.files and "meta.json" in npz.files
    assert npz["params/classifier/kernel"].dtype == np.float16
    assert npz["batch_stats/cnn/bn5/mean"].dtype == np.float32
  again = str(tmp_path / "again.npz")
  written = weights.save_weights(again, loaded.variables, provenance_meta(loaded))
  with open(again, "rb") as a, open(weights_file, "rb") as b:
    assert a.read() == b.read()
  assert weights.read_digest(again) == written.sha256

  with pytest.raises(ValueError, match="dtype 'bfloat16'"):
    weights.save_weights(again, loaded.variables, loaded.meta, dtype="bfloat16")
  with pytest.raises(ValueError, match="charset"):
    weights.save_weights(again, loaded.variables, {"model": loaded.meta["model"]})
  with pytest.raises(ValueError, match="params"):
    weights.save_weights(again, {"batch_stats": {}}, loaded.meta)


@pytest.mark.real_data
def test_from_weights_reads_like_the_checkpoint(workdir, loaded, weights_file, tmp_path):
  """Recognizer.from_weights gives the texts of Recognizer.from_checkpoint on real photos,
  with confidences equal to 1e-6 (float32 file) and to 2% (float16 file).

  Breaks if the file's model config, charset, width buckets or resize mode are not used,
  if variables are misassigned (another layer's weights give other texts), or if float16
  storage were much coarser than float16.
  """
  path32 = str(tmp_path / "w32.npz")
  weights.save_weights(path32, loaded.variables, provenance_meta(loaded), dtype="float32")
  images = [recognizer_lib.read_image(os.path.join(SVT, f"{i}.jpg")) for i in range(1, 11)]
  for path in (path32, weights_file):
    rec = Recognizer.from_weights(path)  # not called: nothing compiles
    assert (rec.width_buckets, rec.resize_mode) == ((64, 128), "pad")
    assert rec.charset.chars == loaded.charset.chars and rec.model == loaded.model
    assert rec.checkpoint.kind == "weights" and rec.checkpoint.step == loaded.step
  # One bucket: one compilation per recognizer on this busy 2-core machine.
  options = dict(batch_size=10, width_buckets=(128,))
  ckpt = Recognizer.from_checkpoint(workdir, **options)(images)
  from_exact = Recognizer.from_weights(path32, **options)(images)
  from_half = Recognizer.from_weights(weights_file, **options)(images)
  assert [t for t, _ in from_exact] == [t for t, _ in ckpt]
  np.testing.assert_allclose([c for _, c in from_exact], [c for _, c in ckpt], rtol=1e-6)
  assert [t for t, _ in from_half] == [t for t, _ in ckpt]
  np.testing.assert_allclose([c for _, c in from_half], [c for _, c in ckpt], rtol=2e-2)
  assert len({t for t, _ in ckpt}) > 1  # not a degenerate model that reads one text


@pytest.mark.real_data
def test_predict_script_with_a_weights_file(weights_file):
  """``scripts/predict.py --weights FILE IMAGE`` in a fresh process prints the image's
  line with the text Recognizer.from_weights reads, and names the model on stderr.

  Breaks if --weights is not accepted, if the script still demands --workdir, if it
  loads another model than the file (other text), or if it says nothing on stderr.
  """
  image = os.path.join(SVT, "3.jpg")
  text, confidence = Recognizer.from_weights(weights_file)([recognizer_lib.read_image(image)])[0]
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  run = subprocess.run(
      [
          sys.executable,
          os.path.join(REPO, "scripts", "predict.py"),
          "--weights",
          weights_file,
          image,
      ],
      capture_output=True,
      text=True,
      env=env,
      timeout=120,
  )
  assert run.returncode == 0, run.stderr
  path, got_text, got_conf = run.stdout.strip().split("\t")
  assert (path, got_text) == (image, text)
  assert float(got_conf) == pytest.approx(confidence, rel=1e-3, abs=1e-4)
  assert f"model: weights file {weights_file} (step 1)" in run.stderr


@pytest.mark.real_data
def test_default_model_is_the_shipped_file(weights_file, tmp_path, monkeypatch, capsys):
  """Without a model argument, predict and Recognizer.pretrained use the package's file;
  while it does not exist they say so clearly; --help names the default.

  Breaks if the default is not the shipped path, if a missing file gives a traceback or
  an unclear error, or if --help does not tell which model is used by default.
  """
  monkeypatch.setattr(weights, "PRETRAINED_FILE", str(tmp_path / "absent.npz"))
  with pytest.raises(ValueError, match="pretrained model is not in this copy"):
    Recognizer.pretrained()
  image = os.path.join(SVT, "3.jpg")
  assert predict.main([image]) == 1
  assert "absent.npz does not exist" in capsys.readouterr().err

  monkeypatch.setattr(weights, "PRETRAINED_FILE", weights_file)
  rec = Recognizer.pretrained(batch_size=4)
  assert rec.checkpoint.kind == "pretrained" and rec.checkpoint.where == weights_file
  assert predict.main([image]) == 0
  out, err = capsys.readouterr()
  expected = rec([recognizer_lib.read_image(image)])[0][0]
  assert out.split("\t")[:2] == [image, expected]
  assert f"model: pretrained model {weights_file}" in err

  with pytest.raises(SystemExit):
    predict.parse_args(["--help"])
  assert "crnn_jax/pretrained/crnn_seed.npz" in capsys.readouterr().out.replace("\n", "")


def test_init_from_weights_file_with_another_charset(weights_file, monkeypatch):
  """init_from=<weights file> (and =pretrained) with a 36-character charset: conv and
  LSTM parameters and BatchNorm statistics equal the file's, leaf by leaf; the classifier
  is the fresh one, shaped for 37 classes; step 0.

  Breaks if weights files are not accepted by init_from, if the file's values are not
  what the run starts from (e.g. the fresh init kept), or if the 63-way classifier is
  kept for a 37-way charset.
  """
  cfg = tiny_model.config(**{"model.charset": tiny_model.UPPER_DIGITS})
  state, charset = tiny_model.make_state(cfg, seed=1)
  saved, _ = weights.load_weights(weights_file)
  for source in (weights_file, "pretrained"):
    monkeypatch.setattr(weights, "PRETRAINED_FILE", weights_file)
    logs = []
    new = finetune.init_from(state, source, charset, log=logs.append)
    assert set(new.params) == {"cnn", "bilstm1", "classifier"}
    for name in ("cnn", "bilstm1"):
      same_tree(new.params[name], saved["params"][name], np.array_equal)
    same_tree(new.batch_stats, saved["batch_stats"], np.array_equal)
    same_tree(new.params["classifier"], state.params["classifier"], np.array_equal)
    assert new.params["classifier"]["kernel"].shape == (32, 37)
    assert saved["params"]["classifier"]["kernel"].shape == (32, 63)
    assert int(new.step) == 0
    report = "\n".join(logs)
    assert f"init_from {weights_file}" in report and "re-initialised" in report


# ----------------------------------------------------------------------------
# The shipped model.

shipped = pytest.mark.skipif(
    not os.path.isfile(weights.PRETRAINED_FILE),
    reason=f"{os.path.relpath(weights.PRETRAINED_FILE, REPO)} is not in the repository yet "
    f"(write it with scripts/export_weights.py once the seed model is trained)",
)


@shipped
def test_shipped_model_reads_clean_words_and_the_example():
  """The shipped file verifies, is the seed model, reads at least 28 of 40 words rendered
  at difficulty 0 (the benchmark protocol: case and punctuation ignored), and
  ``scripts/predict.py examples/word.png`` prints the word.

  The interim model shipped at step 3,000 of the pretraining run reads 32 of 40 (30
  exactly); an untrained or random model reads none.

  Breaks if the file is corrupt or another model, if it was exported from an untrained
  or broken checkpoint, or if the default model path of predict.py does not reach it.
  """
  sys.path.insert(0, os.path.join(REPO, "examples"))
  import make_word  # examples/make_word.py

  from crnn_jax import metrics, models
  from crnn_jax.data.render import Renderer

  rec = Recognizer.pretrained()
  assert len(rec.charset) == 62 and rec.height == 32
  assert models.count_params(rec.variables["params"]) == 6_617_663
  assert models.count_params(rec.variables["batch_stats"]) == 2_048
  renderer = Renderer(seed=7, height=32, difficulty=0.0)
  images, texts = zip(*(renderer.render(i) for i in range(40)))
  read = [t for t, _ in rec(list(images))]
  right = sum(
      metrics.benchmark_normalize(a) == metrics.benchmark_normalize(b) for a, b in zip(read, texts)
  )
  assert right >= 28, list(zip(texts, read))

  example = os.path.join(REPO, "examples", "word.png")
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  run = subprocess.run(
      [sys.executable, os.path.join(REPO, "scripts", "predict.py"), example],
      capture_output=True,
      text=True,
      env=env,
      timeout=120,
  )
  assert run.returncode == 0, run.stderr
  assert run.stdout.split("\t")[1] == make_word.WORD
  assert "model: pretrained model" in run.stderr


def test_export_averages_checkpoints(tmp_path, capsys):
  """--average-steps writes the mean of the listed checkpoints: a file of one of them, or
  of their sum, or the first step's metadata, fails here."""
  import export_weights  # scripts/export_weights.py

  work = str(tmp_path / "run")
  cfg = tiny_model.config()
  for seed, step in ((0, 1), (1, 2)):
    tiny_model.save_checkpoint(work, cfg, seed=seed, step=step)
  a, b = (recognizer_lib.load_checkpoint(f"{work}/checkpoints/{s}") for s in (1, 2))
  out = str(tmp_path / "mean.npz")
  args = ["--workdir", work, "--average-steps", "1,2", "--out", out, "--num-check-images", "2"]
  assert export_weights.main(args) == 0
  assert "mean of steps 1,2" in capsys.readouterr().out
  variables, meta = weights.load_weights(out)
  assert meta["step"] == 2
  mean = jax.tree.map(lambda x, y: (np.asarray(x) + np.asarray(y)) / 2, a.variables, b.variables)
  # Parameters are stored in float16: 2^-11 relative.
  same_tree(variables, mean, lambda x, y: np.allclose(x, y, rtol=2**-10, atol=1e-6))
  assert not np.allclose(
      a.variables["params"]["classifier"]["kernel"],
      variables["params"]["classifier"]["kernel"],
      atol=1e-3,
  )
  assert export_weights.main(args[:3] + ["1", "--out", out]) == 1
  assert "two or more different step numbers" in capsys.readouterr().err
