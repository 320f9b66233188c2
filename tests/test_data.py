import os
import shutil

import numpy as np
import pytest
from PIL import Image

from crnn_jax import models
from crnn_jax.charset import Charset
from crnn_jax.data import batching, index, labels, plan, preprocess, specs

from helpers import real

SVT = real("svt_train")


def _prepare(spec_or_source, **kw):
  """A cached index (images preprocessed in memory), as evaluation sets and small sets get."""
  source = (
      specs.open_source(spec_or_source) if isinstance(spec_or_source, str) else (spec_or_source)
  )
  args = dict(charset=Charset(), height=32, width_buckets=(64, 128, 256), cache=True)
  args.update(kw)
  return index.build_index(source, **args)


def _images(idx):
  """(image, text) of every cached example, bucket by bucket."""
  return [
      (idx.cache[int(i)].image, idx.cache[int(i)].text) for members in idx.members for i in members
  ]


@pytest.mark.real_data
def test_tsv_reader_on_real_svt_odd_sizes_and_colour_jpegs():
  source = specs.open_source("tsv:" + SVT)
  assert len(source) == 257
  image, text, key = source.read(0)
  assert image.mode == "RGB" and key.endswith(".jpg") and text
  prep = _prepare(source)
  report = prep.report
  assert report.total == 257
  # Seven SVT labels hold an apostrophe, which the default charset lacks.
  assert report.skipped == {"unknown_chars": 7} and report.usable == 250
  assert "'" in report.describe() and "svt_train" in report.describe()
  for width, members in zip(prep.widths, prep.members):
    for i in members:
      img = prep.cache[int(i)].image
      assert img.shape[0] == 32 and img.dtype == np.uint8
      assert preprocess.MIN_WIDTH <= img.shape[1] <= width
  widths = [img.shape[1] for img, _ in _images(prep)]
  assert len(set(widths)) > 20  # aspect ratio kept, not one fixed size


def _folder_with_problems(tmp_path):
  folder = tmp_path / "mine"
  (folder / "img").mkdir(parents=True)
  lines = []
  for name in sorted(os.listdir(os.path.join(SVT, "images")))[:6]:
    shutil.copy(os.path.join(SVT, "images", name), folder / "img" / name)
    lines.append(f"img/{name}\tWORD{len(lines)}")
  lines.append("img/not_there.jpg\tGHOST")
  (folder / "img" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
  lines.append("img/bad.png\tBROKEN")
  good = Image.open(folder / "img" / sorted(os.listdir(folder / "img"))[0])
  good.save(folder / "img" / "trunc.jpg")
  data = (folder / "img" / "trunc.jpg").read_bytes()
  (folder / "img" / "trunc.jpg").write_bytes(data[: len(data) // 3])
  lines.append("img/trunc.jpg\tCUT")
  lines.append("line without a tab")
  lines.append(f"img/{name}\t")  # empty label
  (folder / "labels.tsv").write_text("\n".join(lines) + "\n")
  return folder


@pytest.mark.real_data
def test_missing_and_corrupt_files_are_skipped_counted_and_named(tmp_path):
  folder = _folder_with_problems(tmp_path)
  prep = _prepare("tsv:" + str(folder))
  r = prep.report
  assert r.total == 11 and r.usable == 6 and len(prep) == 6
  assert r.skipped == {"missing_file": 1, "corrupt_image": 2, "malformed_line": 1, "empty_label": 1}
  text = r.describe()
  assert "not_there.jpg" in text and "bad.png" in text and "trunc.jpg" in text
  assert sorted(t for _, t in _images(prep)) == [f"WORD{i}" for i in range(6)]


@pytest.mark.real_data
def test_empty_or_unusable_dataset_is_a_clear_error(tmp_path):
  with pytest.raises(ValueError, match="no labels.tsv"):
    specs.open_source(f"tsv:{tmp_path}")
  with pytest.raises(ValueError, match="does not exist"):
    specs.open_source(f"tsv:{tmp_path}/nope")
  (tmp_path / "labels.tsv").write_text("")
  prep = _prepare(f"tsv:{tmp_path}")
  with pytest.raises(ValueError, match=r"0 of 0 examples usable"):
    labels.check_usable(prep.report)
  # All labels use characters the charset lacks.
  prep = _prepare("tsv:" + real("captcha_digits"), charset=Charset("abc"))
  with pytest.raises(
      ValueError,
      match=r"(?s)0 of 2000 examples usable.*2000 +labels with "
      r"characters outside the charset.*captcha_digits",
  ):
    labels.check_usable(prep.report)


@pytest.mark.real_data
def test_unknown_chars_error_mode_names_character():
  with pytest.raises(ValueError, match='Character "\'" in text'):
    _prepare("tsv:" + SVT, unknown_chars="error")


def test_long_labels_fit_or_are_reported(tmp_path):
  folder = tmp_path / "long"
  folder.mkdir()
  Image.new("L", (60, 30), 255).save(folder / "short_img.png")
  lines = [
      "short_img.png\t" + "ab" * 20,  # 40 chars: needs a wider image than 60 px
      "short_img.png\t" + "a" * 80,
  ]  # 80 repeats need 159 frames > 63 at width 256
  (folder / "labels.tsv").write_text("\n".join(lines))
  prep = _prepare(f"tsv:{folder}")
  assert prep.report.usable == 1 and prep.report.skipped == {"label_too_long": 1}
  assert "width 256" in prep.report.describe()
  ((img, _),) = _images(prep)
  assert int(models.num_frames(img.shape[1])) >= 40  # widened to give the label its frames


@pytest.mark.real_data
def test_stretch_mode_is_the_seed_resize():
  prep = _prepare("tsv:" + SVT, resize_mode="stretch", width_buckets=(128,))
  assert prep.widths == [128]
  assert {img.shape for img, _ in _images(prep)} == {(32, 128)}


def test_preprocess_accepts_arrays_pil_and_alpha():
  rgba = np.zeros((40, 100, 4), np.uint8)
  rgba[..., 3] = 0  # fully transparent -> white paper
  out = preprocess.resize(Image.fromarray(rgba, "RGBA"), height=32, max_width=256)
  assert out.shape == (32, 80) and out.min() == 255
  floats = np.random.default_rng(0).uniform(size=(16, 16)).astype(np.float32)
  assert preprocess.resize(floats, height=32, max_width=256).shape == (32, 32)
  assert preprocess.resize(np.zeros((64, 2000, 3), np.uint8), height=32, max_width=256).shape == (
      32,
      256,
  )
  with pytest.raises(ValueError, match="shape"):
    preprocess.resize(np.zeros((2, 3, 4, 5)), height=32, max_width=64)


def test_spec_errors_name_the_spec():
  with pytest.raises(ValueError, match="unknown kind 'foo'"):
    specs.open_source("foo:bar")
  with pytest.raises(ValueError, match="no kind"):
    specs.open_source("justapath")
  with pytest.raises(ValueError, match="unknown option"):
    specs.open_source("synth:10,colour=red")


def test_synth_spec_passes_the_renderer_looks():
  source = specs.open_source("synth:5,seed=3,soft=0.5,extrude=0.25")
  assert source.spec == "synth:5,seed=3,soft=0.5,extrude=0.25"
  renderer = source._renderer()
  assert (renderer.soft, renderer.extrude) == (0.5, 0.25)
  with pytest.raises(ValueError, match="soft"):
    specs.open_source("synth:5,soft=2").read(0)


def test_synth_spec_reads_the_renderer():
  """``synth:N,seed=S,difficulty=D`` with a height and charset: N examples, each the
  renderer's image and text for (S, index), the same whether read one by one or as a
  range; ``synth:inf`` is endless; another seed gives other words.

  Breaks if an option is dropped or misparsed (seed, difficulty, height or charset not
  reaching the renderer gives other images), if the length is not N, or if the spec the
  source reports would not open the same source again.
  """
  from crnn_jax.data import render

  chars = "abcdefghijklmnopqrstuvwxyz"
  source = specs.open_source("synth:4,seed=3,difficulty=0.0", height=24, charset=chars)
  assert len(source) == 4 and source.spec == "synth:4,seed=3,difficulty=0.0"
  renderer = render.Renderer(seed=3, height=24, difficulty=0.0, charset=chars)
  one_by_one = [source.read(i) for i in range(4)]
  for i, (image, text, key) in enumerate(one_by_one):
    want_image, want_text = renderer.render(i)
    np.testing.assert_array_equal(image, want_image)
    assert text == want_text == source.text(i) and key == f"synth[{i}]"
    assert image.shape[0] == 24 and text and set(text) <= set(chars)
  for (a, ta, _), (b, tb, _) in zip(one_by_one, source.read_many(range(4))):
    np.testing.assert_array_equal(a, b)
    assert ta == tb
  # The default difficulty (1) draws other images of the same words.
  harder = specs.open_source("synth:4,seed=3", height=24, charset=chars)
  assert harder.text(0) == one_by_one[0][1]
  assert not np.array_equal(harder.read(0)[0], one_by_one[0][0])
  other_seed = specs.open_source("synth:4,seed=4,difficulty=0.0", height=24, charset=chars)
  assert [other_seed.text(i) for i in range(4)] != [t for _, t, _ in one_by_one]
  endless = specs.open_source("synth:inf,seed=3,difficulty=0", height=24, charset=chars)
  assert endless.endless and len(endless) > 10**15
  np.testing.assert_array_equal(endless.read(2)[0], one_by_one[2][0])


def _epoch_plan(seed):
  prep = _prepare("tsv:" + SVT)
  prep = prep.merge_up(prep.counts(), 8)
  return prep, plan.EpochPlan(prep.counts(), 8, seed, prep.counts(), "svt")


@pytest.mark.real_data
def test_epoch_plan_is_a_pure_function_of_step():
  _, a = _epoch_plan(3)
  _, b = _epoch_plan(3)
  _, c = _epoch_plan(4)
  steps = [0, 5, a.steps_per_epoch + 2, 3 * a.steps_per_epoch - 1]
  for s in reversed(steps):  # any access order, on a fresh plan
    x, y = a.slots(s), b.slots(s)
    assert x.bucket == y.bucket
    np.testing.assert_array_equal(x.refs, y.refs)
  assert not np.array_equal(a.slots(0).refs, c.slots(0).refs)


@pytest.mark.real_data
def test_an_epoch_visits_each_example_at_most_once_and_widths_never_mix():
  prep, p = _epoch_plan(0)
  seen = set()
  for s in range(p.steps_per_epoch):
    slots = p.slots(s)
    rows = [int(i) for i in prep.members[slots.bucket][slots.refs]]
    assert len(rows) == 8 and not seen & set(rows)
    seen |= set(rows)
  assert p.steps_per_epoch == sum(len(m) // 8 for m in prep.members)


@pytest.mark.real_data
def test_eval_batches_cover_every_example_once():
  prep = _prepare("tsv:" + SVT)
  texts, rows = [], 0
  for batch, t, _ in batching.eval_batches(prep, 32, 32):
    assert batch["images"].shape[0] == 32
    assert int(batch["mask"].sum()) == len(t)
    assert (batch["widths"][len(t) :] == 0).all()
    texts += t
    rows += 32
  assert sorted(texts) == sorted(t for _, t in _images(prep))
  assert len(texts) == 250 and rows > 250  # last batch of each bucket padded, not dropped


@pytest.mark.real_data
def test_bucket_merging_fills_batches():
  prep = _prepare("tsv:" + SVT)
  counts = prep.counts()
  merged = prep.merge_up(counts, int(counts[0]) + 1)
  assert merged.widths == [128, 256]
  assert len(merged) == len(prep)
  assert sorted(np.concatenate(merged.members)) == sorted(np.concatenate(prep.members))


def test_process_shards_are_disjoint_and_complete():
  n = 257
  parts = [index.shard_range(n, i, 3) for i in range(3)]
  assert sorted(x for p in parts for x in p) == list(range(n))


@pytest.mark.real_data
def test_tsv_include_and_exclude_split_a_folder(tmp_path):
  names = [line.split("\t")[0] for line in open(os.path.join(SVT, "labels.tsv"))]
  (tmp_path / "val.txt").write_text("# a comment\n" + "\n".join(names[:10]) + "\n")
  val = specs.open_source(f"tsv:{SVT},include={tmp_path}/val.txt")
  train = specs.open_source(f"tsv:{SVT},exclude={tmp_path}/val.txt")
  assert len(val) == 10 and len(train) == len(names) - 10
  keys = {val.read(i)[2] for i in range(10)} | {train.read(i)[2] for i in range(len(train))}
  assert len(keys) == len(names)  # together exactly the folder, no overlap
  (tmp_path / "other.txt").write_text("images/not_in_svt.jpg\n")
  with pytest.raises(ValueError, match="not in labels.tsv"):
    specs.open_source(f"tsv:{SVT},include={tmp_path}/other.txt")
  with pytest.raises(ValueError, match="does not exist"):
    specs.open_source(f"tsv:{SVT},exclude={tmp_path}/missing.txt")
  with pytest.raises(ValueError, match="unknown option"):
    specs.open_source(f"tsv:{SVT},only={tmp_path}/val.txt")


def test_label_check_gives_ids_or_a_reason():
  cs = Charset()
  assert labels.check_label("ab", cs, 5) == cs.encode("ab")
  assert labels.check_label("", cs, 5)[0] == "empty_label"
  assert labels.check_label("a-b", cs, 5)[0] == "unknown_chars"
  assert labels.check_label("a-b", cs, 5, "drop") == cs.encode("ab")
  assert labels.check_label("'-'", cs, 5, "drop")[0] == "unknown_chars"  # nothing left
  assert labels.check_label("a-a", cs, 2, "drop")[0] == "label_too_long"  # a, blank, a
  assert labels.check_label("aab", cs, 3)[0] == "label_too_long"  # a, blank, a, b: 4 frames
  assert labels.check_label("aab", cs, 4) == cs.encode("aab")
  assert labels.required_frames([1, 1, 1, 2]) == 6
