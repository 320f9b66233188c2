"""mjsynth:, lmdb: and tfds: sources on fixtures the tests build: a miniature MJSynth tree,
an LMDB in the deep-text-recognition-benchmark layout, and a tiny synth_words dataset."""

import io
import os
import pickle

import numpy as np
import pytest
from PIL import Image, ImageDraw

from crnn_jax.charset import Charset
from crnn_jax.data import formats, index, readers, specs, tfds_source

BUCKETS = (64, 128)


def _word_image(text: str, mode: str = "RGB", fmt: str = "JPEG") -> bytes:
  """A dark word on a light background, about 32 px tall, encoded as ``fmt``."""
  image = Image.new(mode, (12 + 7 * len(text), 32), "white")
  ImageDraw.Draw(image).text((6, 10), text, fill="black")
  buf = io.BytesIO()
  image.save(buf, format=fmt)
  return buf.getvalue()


def _prepare(source, **kw):
  args = dict(charset=Charset(), height=32, width_buckets=BUCKETS, cache=True)
  args.update(kw)
  return index.build_index(source, **args)


def _cached(prep, field):
  """``field`` ('text' or 'key') of every cached example."""
  return [getattr(c, field) for c in prep.cache.values()]


# ----------------------------------------------------------------------------
# MJSynth.

MJ_GOOD = [
    "1/1/23_Hello_456.jpg",
    "1/1/24_world_9.jpg",
    "1/2/7_CAPITALS_31.jpg",
    "2/1/1_x_2.jpg",
    "2/3/88_Mixed42_1000.jpg",
    "3/1/5_again_77.jpg",
]
# On the community list of unreadable files: skipped without being opened.
MJ_KNOWN_BAD = "2069/4/192_whittier_86389.jpg"


@pytest.fixture(scope="module")
def mjsynth_tree(tmp_path_factory):
  """tmp/mnt/ramdisk/max/90kDICT32px as in the tarball, with problems of every kind."""
  top = tmp_path_factory.mktemp("mjsynth")
  root = top / "mnt" / "ramdisk" / "max" / "90kDICT32px"
  for rel in MJ_GOOD + [
      "4/1/3_truncated_5.jpg",
      "4/1/4_dash-word_6.jpg",
      "4/2/9_" + "ab" * 20 + "_1.jpg",
      "5/1/1_val_1.jpg",
  ]:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_bytes(_word_image(formats.mjsynth_label(rel)[:12]))
  data = (root / "4/1/3_truncated_5.jpg").read_bytes()
  (root / "4/1/3_truncated_5.jpg").write_bytes(data[: len(data) // 2])
  (root / MJ_KNOWN_BAD).parent.mkdir(parents=True)
  (root / MJ_KNOWN_BAD).write_bytes(b"")  # the real file is empty
  train = [f"./{rel} {rel.split('_')[-1][:-4]}" for rel in MJ_GOOD] + [
      f"./{MJ_KNOWN_BAD} 86389",
      "./4/1/3_truncated_5.jpg 5",
      "./4/1/404_missing_5.jpg 5",
      "./4/1/4_dash-word_6.jpg 6",  # '-' is not in the default charset
      "./4/2/9_" + "ab" * 20 + "_1.jpg 1",  # 40 characters: more frames than width 128 has
      "./4/1/noparts.jpg 3",
  ]
  (root / "annotation_train.txt").write_text("\r\n".join(train) + "\r\n")
  (root / "annotation_val.txt").write_text("./5/1/1_val_1.jpg 1")  # no final newline
  return top, root


def test_mjsynth_labels_come_from_file_names():
  assert formats.mjsynth_label("./3000/7/182_slinking_71711.jpg") == "slinking"
  assert formats.mjsynth_label("1/1/23_Hello_456.jpg") == "Hello"
  assert formats.mjsynth_label("1/1/noparts.jpg") is None


def test_mjsynth_reads_the_tree_and_reports_every_problem(mjsynth_tree):
  top, root = mjsynth_tree
  # Either the tarball folder or 90kDICT32px itself.
  for path in (top, root):
    source = specs.open_source(f"mjsynth:{path}")
    assert isinstance(source, formats.MJSynthSource) and len(source) == 12
  image, text, key = source.read(0)
  assert text == "Hello" and key == os.path.join(str(root), MJ_GOOD[0])
  assert image.size == Image.open(io.BytesIO(_word_image("Hello"))).size

  prep = _prepare(source)
  r = prep.report
  assert r.total == 12 and r.usable == 6
  assert r.skipped == {
      "corrupt_image": 2,
      "missing_file": 1,
      "unknown_chars": 1,
      "label_too_long": 1,
      "malformed_name": 1,
  }
  text = r.describe()
  for name in (
      "192_whittier_86389.jpg",
      "known unreadable",
      "3_truncated_5.jpg",
      "404_missing_5.jpg",
      "dash-word",
      "noparts.jpg",
  ):
    assert name in text, name
  labels = sorted(_cached(prep, "text"))
  assert labels == sorted(formats.mjsynth_label(p) for p in MJ_GOOD)


def test_mjsynth_known_unreadable_files_are_not_opened(mjsynth_tree, monkeypatch):
  _, root = mjsynth_tree
  source = formats.MJSynthSource(root)
  index = next(i for i in range(len(source)) if source.entry(i)[0] == MJ_KNOWN_BAD)
  monkeypatch.setattr(formats, "_read_file", lambda path: pytest.fail(f"opened {path}"))
  with pytest.raises(readers.BadExample, match="known unreadable") as e:
    source.read(index)
  assert e.value.reason == "corrupt_image"
  assert len(formats.MJSYNTH_UNREADABLE["train"]) == 26


def test_mjsynth_splits_probe_and_pickle(mjsynth_tree):
  _, root = mjsynth_tree
  val = specs.open_source(f"mjsynth:{root},split=val")
  assert len(val) == 1 and val.read(0)[1] == "val" and val.spec.endswith(",split=val")
  source = formats.MJSynthSource(root)
  width, height, text, _ = source.probe(0)
  assert (width, height) == source.read(0)[0].size and text == "Hello"
  again = pickle.loads(pickle.dumps(source))  # re-maps the annotation file
  assert len(again) == len(source) and again.read(1)[1] == "world"
  with pytest.raises(ValueError, match="split 'dev'"):
    specs.open_source(f"mjsynth:{root},split=dev")
  with pytest.raises(ValueError, match="annotation_train.txt"):
    specs.open_source(f"mjsynth:{root.parent}")
  with pytest.raises(ValueError, match="no annotation_test.txt"):
    formats.MJSynthSource(root, "test")


# ----------------------------------------------------------------------------
# LMDB.


def write_lmdb(path, items) -> None:
  """Writes ``[(image bytes or None, label str or None)]`` in the DTRB layout (1-based keys)."""
  import lmdb

  env = lmdb.open(str(path), map_size=1 << 26)
  with env.begin(write=True) as txn:
    for i, (image, label) in enumerate(items, start=1):
      if image is not None:
        txn.put(b"image-%09d" % i, image)
      if label is not None:
        txn.put(b"label-%09d" % i, label.encode("utf-8"))
    txn.put(b"num-samples", str(len(items)).encode())
  env.close()


LMDB_WORDS = ["street", "Hotel", "EXIT", "42", "cafe", "Parking", "OPEN", "sale"]


@pytest.fixture(scope="module")
def lmdb_path(tmp_path_factory):
  path = tmp_path_factory.mktemp("lmdb") / "train_lmdb"
  items = [(_word_image(w, "L", "PNG" if i % 2 else "JPEG"), w) for i, w in enumerate(LMDB_WORDS)]
  items += [
      (b"\xff\xd8\xff\xe0 not really a jpeg", "corrupt"),  # DTRB files hold such records
      (None, "noimage"),
      (_word_image("café", "RGB", "PNG"), "café"),
  ]  # outside the default charset
  write_lmdb(path, items)
  return path


def test_lmdb_reads_dtrb_layout_and_reports_bad_records(lmdb_path):
  source = specs.open_source(f"lmdb:{lmdb_path}")
  assert isinstance(source, formats.LmdbSource) and len(source) == 11
  image, text, key = source.read(1)
  assert text == "Hotel" and key.endswith("#000000002") and image.mode == "L"
  assert source.probe(1)[:3] == (*image.size, "Hotel")
  with pytest.raises(readers.BadExample, match="unreadable"):
    source.read(8)
  prep = _prepare(source)
  assert prep.report.total == 11 and prep.report.usable == 8
  assert prep.report.skipped == {"corrupt_image": 1, "missing_file": 1, "unknown_chars": 1}
  text = prep.report.describe()
  assert "#000000009" in text and "image-000000010" in text and "café" in text
  assert sorted(_cached(prep, "text")) == sorted(LMDB_WORDS)
  # Picklable for worker processes: the environment is re-opened there.
  assert pickle.loads(pickle.dumps(source)).read(0)[1] == "street"


def test_lmdb_errors_say_what_was_expected(tmp_path):
  with pytest.raises(ValueError, match="does not exist"):
    specs.open_source(f"lmdb:{tmp_path}/nope")
  write_lmdb(tmp_path / "nocount", [])
  import lmdb

  env = lmdb.open(str(tmp_path / "nocount"))
  with env.begin(write=True) as txn:
    txn.delete(b"num-samples")
  env.close()
  with pytest.raises(ValueError, match="no 'num-samples' key.*image-%09d"):
    formats.LmdbSource(tmp_path / "nocount")


# ----------------------------------------------------------------------------
# TFDS.

SYNTH = dict(num_train=40, num_validation=10, seed=3, difficulty=0.5)
SYNTH_NAME = "synth_words/n40_v10_s3_d50_h32"


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
  from crnn_jax.data import synth_words

  data_dir = tmp_path_factory.mktemp("tfds")
  synth_words.SynthWords(num_workers=0, data_dir=str(data_dir), **SYNTH).download_and_prepare()
  return data_dir


def test_tfds_spec_parsing():
  parse = tfds_source.parse_tfds_spec
  assert parse("synth_words/n1_v1_s0_d100_h32:validation,data_dir=/d", "s") == (
      "synth_words/n1_v1_s0_d100_h32",
      "validation",
      {"data_dir": "/d"},
  )
  assert parse("synth_words", "s") == ("synth_words", "train", {})
  assert parse("synth_words/num_train=5,num_validation=2:train[:50%],image=im,label=txt", "s") == (
      "synth_words/num_train=5,num_validation=2",
      "train[:50%]",
      {"image": "im", "label": "txt"},
  )


def test_tfds_source_reads_the_built_dataset(tfds_dir, monkeypatch):
  import tensorflow_datasets as tfds

  source = specs.open_source(f"tfds:{SYNTH_NAME}:train,data_dir={tfds_dir}")
  assert isinstance(source, tfds_source.TfdsSource) and len(source) == 40
  truth = tfds.builder(SYNTH_NAME, data_dir=str(tfds_dir)).as_data_source("train")
  for i in (0, 17, 39):
    image, text, key = source.read(i)
    assert text == truth[i]["label"].decode() and key == f"{SYNTH_NAME}:train[{i}]"
    np.testing.assert_array_equal(np.asarray(image), truth[i]["image"][:, :, 0])
    assert source.probe(i)[:3] == (image.width, image.height, text)
  # The data dir from the environment, and another split.
  monkeypatch.setenv("TFDS_DATA_DIR", str(tfds_dir))
  val = specs.open_source(f"tfds:{SYNTH_NAME}:validation")
  assert len(val) == 10 and val.read(0)[1] == truth_val(tfds_dir, 0)
  prep = _prepare(source)
  assert prep.report.total == 40 and prep.report.usable + sum(prep.report.skipped.values()) == 40
  assert prep.report.usable >= 35
  assert pickle.loads(pickle.dumps(source)).read(5)[1] == source.read(5)[1]


def truth_val(data_dir, i):
  import tensorflow_datasets as tfds

  return (
      tfds.builder(SYNTH_NAME, data_dir=str(data_dir))
      .as_data_source("validation")[i]["label"]
      .decode()
  )


def test_tfds_errors_name_the_problem_and_the_fix(tfds_dir, tmp_path):
  with pytest.raises(ValueError, match="not built.*make_dataset.py"):
    specs.open_source(f"tfds:synth_words/n7_v1_s0_d100_h32:train,data_dir={tmp_path}")
  with pytest.raises(ValueError, match="no dataset 'no_such_set'"):
    specs.open_source(f"tfds:no_such_set:train,data_dir={tmp_path}")
  with pytest.raises(ValueError, match="split 'dev'.*train.*validation"):
    specs.open_source(f"tfds:{SYNTH_NAME}:dev,data_dir={tfds_dir}")
  with pytest.raises(ValueError, match="no label feature 'text'"):
    specs.open_source(f"tfds:{SYNTH_NAME}:train,data_dir={tfds_dir},label=text")
  # Just built, named without its config: the error lists the exact spec to use.
  with pytest.raises(ValueError, match=f"name a config.*tfds:{SYNTH_NAME}:train,data_dir="):
    specs.open_source(f"tfds:synth_words:train,data_dir={tfds_dir}")


def test_two_processes_read_disjoint_shards_that_cover_the_dataset(tfds_dir, lmdb_path):
  for spec in (f"tfds:{SYNTH_NAME}:train,data_dir={tfds_dir}", f"lmdb:{lmdb_path}"):
    source = specs.open_source(spec)
    shards = [_prepare(source, process_index=p, process_count=2) for p in range(2)]
    keys = [set(_cached(prep, "key")) for prep in shards]
    assert keys[0] and keys[1] and not keys[0] & keys[1]
    whole = _prepare(source)
    assert keys[0] | keys[1] == set(_cached(whole, "key"))
    assert sum(s.report.total for s in shards) == len(source)


def test_image_header_sizes_match_decoding():
  for mode, fmt in (("L", "PNG"), ("RGB", "JPEG"), ("RGBA", "PNG"), ("RGB", "BMP")):
    data = _word_image("size", mode, fmt)
    assert formats.image_size(data, "k") == formats.decode_image(data, "k").size
  with pytest.raises(readers.BadExample, match="empty file"):
    formats.image_size(b"", "k")
  with pytest.raises(readers.BadExample, match="unreadable"):
    formats.decode_image(_word_image("cut")[:100], "k")


# ----------------------------------------------------------------------------
# TFDS builders for the formats above.


def test_mjsynth_builder_skips_and_records_bad_files(mjsynth_tree, tmp_path):
  from crnn_jax.data import tfds_builders

  top, _ = mjsynth_tree
  builder = tfds_builders.build_mjsynth(str(top), data_dir=str(tmp_path), num_threads=2)
  assert set(builder.info.splits.keys()) == {"train", "validation"}
  skipped = builder.info.metadata["skipped"]["train"]
  assert skipped == {"corrupt_image": 2, "missing_file": 1, "malformed_name": 1}
  assert any(
      "192_whittier_86389" in m
      for m in builder.info.metadata["skipped_examples"]["train"]["corrupt_image"]
  )
  source = specs.open_source(f"tfds:mjsynth:train,data_dir={tmp_path}")
  assert len(source) == 8  # the charset and length checks happen at training time
  labels = sorted(source.read(i)[1] for i in range(len(source)))
  assert labels == sorted([formats.mjsynth_label(p) for p in MJ_GOOD] + ["dash-word", "ab" * 20])
  assert specs.open_source(f"tfds:mjsynth:validation,data_dir={tmp_path}").read(0)[1] == "val"


def test_lmdb_and_text_folder_builders(lmdb_path, tmp_path):
  from crnn_jax.data import tfds_builders

  builder = tfds_builders.LmdbWords(
      train=str(lmdb_path), config_name="tiny", data_dir=str(tmp_path), num_threads=2
  )
  builder.download_and_prepare()
  assert builder.info.metadata["skipped"]["train"] == {"corrupt_image": 1, "missing_file": 1}
  source = specs.open_source(f"tfds:lmdb_words/tiny:train,data_dir={tmp_path}")
  assert sorted(source.read(i)[1] for i in range(len(source))) == sorted(LMDB_WORDS + ["café"])

  folder = tmp_path / "mine"
  folder.mkdir()
  Image.new("RGBA", (40, 20), (0, 0, 0, 0)).save(folder / "clear.png")  # stored as RGB PNG
  Image.new("P", (30, 20), 3).save(folder / "palette.gif")
  (folder / "bad.jpg").write_bytes(b"\xff\xd8 nope")
  (folder / "labels.tsv").write_text(
      "clear.png\tclear\npalette.gif\tgif\nbad.jpg\tbad\n" "no tab here\nclear.png\t\n"
  )
  builder = tfds_builders.TextFolder(folder=str(folder), data_dir=str(tmp_path), num_threads=1)
  assert builder.builder_config.name == "mine"
  builder.download_and_prepare()
  assert builder.info.metadata["skipped"]["train"] == {
      "corrupt_image": 1,
      "malformed_line": 1,
      "empty_label": 1,
  }
  records = builder.as_data_source("train")
  assert sorted(r["label"] for r in records) == [b"clear", b"gif"]
  images = {r["label"]: r["image"] for r in records}
  assert images[b"clear"].shape == (20, 40, 3) and images[b"clear"].min() == 255  # white
  assert images[b"gif"].shape == (20, 30, 3)
