"""Sources for the datasets users bring: MJSynth trees and LMDB word sets.

Each class here is a ``Source`` (random access, ``read(i) -> (image, text, key)``,
``BadExample`` for one unusable example), so the data path (``index``, ``loader``)
take them like ``tsv:`` and ``synth:``. They add ``probe(i) -> (width, height, text, key)``:
the image size from the file header alone, which ``index.build_index`` uses to bucket by
width without decoding pixels.

Spec strings (``specs.open_source`` dispatches them here):

- ``mjsynth:PATH[,split=train|val|test]``: the official MJSynth (Synth90k) tree, PATH the
  ``90kDICT32px`` folder (or the folder the tarball was unpacked in) holding
  ``annotation_{train,val,test}.txt``. The label is the middle part of the file name
  (``./1/1/23_Hello_456.jpg`` shows ``Hello``); the files the community lists as
  unreadable (``MJSYNTH_UNREADABLE``) are skipped without being opened, and any other file
  that does not decode is skipped too; both are counted and named in the data report.
- ``lmdb:PATH``: an LMDB in the deep-text-recognition-benchmark layout: ``num-samples``,
  ``image-%09d`` (encoded image bytes) and ``label-%09d`` (UTF-8), indices from 1.
(``tfds:`` specs live in ``tfds_source``, which uses this module's decoding.)

Images are decoded here with Pillow (JPEGs straight to grayscale, which is all the model
uses), never with TensorFlow, so a corrupt record is one counted ``BadExample`` instead of
an exception in the middle of a batch.
"""

from __future__ import annotations

import io
import mmap
import os
import struct
from collections.abc import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from crnn_jax import extras
from crnn_jax.data.base import BadExample, Source

# Files of the official MJSynth release that do not decode (empty or truncated JPEGs), as
# listed by the projects that train on it (deep-text-recognition-benchmark users, Fuel's
# converter, several CRNN ports). Relative to the 90kDICT32px folder, without './'.
MJSYNTH_UNREADABLE = {
    "train": frozenset(
        {
            "2194/2/334_EFFLORESCENT_24742.jpg",
            "2128/2/369_REDACTED_63458.jpg",
            "2069/4/192_whittier_86389.jpg",
            "2025/2/364_SNORTERS_72304.jpg",
            "2013/2/370_refract_63890.jpg",
            "1881/4/225_Marbling_46673.jpg",
            "1863/4/223_Diligently_21672.jpg",
            "1817/2/363_actuating_904.jpg",
            "1730/2/361_HEREON_35880.jpg",
            "1696/4/211_Queened_61779.jpg",
            "1650/2/355_stony_74902.jpg",
            "1332/4/224_TETHERED_78397.jpg",
            "936/2/375_LOCALITIES_44992.jpg",
            "913/4/231_randoms_62372.jpg",
            "905/4/234_Postscripts_59142.jpg",
            "869/4/234_TRIASSIC_80582.jpg",
            "627/6/83_PATRIARCHATE_55931.jpg",
            "596/2/372_Ump_81662.jpg",
            "554/2/366_Teleconferences_77948.jpg",
            "495/6/81_MIDYEAR_48332.jpg",
            "429/4/208_Mainmasts_46140.jpg",
            "384/4/220_bolts_8596.jpg",
            "368/4/232_friar_30876.jpg",
            "275/6/96_hackle_34465.jpg",
            "264/2/362_FORETASTE_30276.jpg",
            "173/2/358_BURROWING_10395.jpg",
        }
    ),
    "val": frozenset(
        {
            "2557/2/351_DOWN_23492.jpg",
            "2540/4/246_SQUAMOUS_73902.jpg",
            "2489/4/221_snored_72290.jpg",
        }
    ),
    "test": frozenset(
        {
            "2911/6/77_heretical_35885.jpg",
            "2852/6/60_TOILSOME_79481.jpg",
            "2749/6/101_Chided_13155.jpg",
        }
    ),
}
MJSYNTH_SPLITS = ("train", "val", "test")
# Where the folder sits inside the official tarball.
_MJSYNTH_TAR_PATH = os.path.join("mnt", "ramdisk", "max", "90kDICT32px")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------
# Decoding shared by the sources.


def decode_image(data: bytes, key: str) -> Image.Image:
  """A loaded PIL image from encoded bytes; JPEGs are decoded straight to grayscale.

  Raises:
    BadExample: 'corrupt_image' when the bytes do not decode (unknown format, truncated
      data), 'empty_image' for a zero-size image.
  """
  if not data:
    raise BadExample("corrupt_image", key, "empty file (0 bytes)")
  try:
    image = Image.open(io.BytesIO(data))
    if image.format == "JPEG" and image.mode in ("RGB", "L"):
      # libjpeg's own colour conversion: about 2x faster than decoding RGB, and the
      # model only sees gray. The EXIF orientation is kept (format stays 'JPEG').
      image.draft("L", image.size)
    image.load()
  except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, struct.error) as e:
    raise BadExample("corrupt_image", key, f"unreadable image ({e})") from None
  if image.width == 0 or image.height == 0:
    raise BadExample("empty_image", key, f"zero-size image {image.width}x{image.height}")
  return image


def image_size(data: bytes, key: str) -> tuple[int, int]:
  """(width, height) from the header of encoded image bytes, without decoding pixels.

  Raises:
    BadExample: as ``decode_image`` does, for what the header already shows.
  """
  if not data:
    raise BadExample("corrupt_image", key, "empty file (0 bytes)")
  if data[:8] == _PNG_SIGNATURE and len(data) >= 24 and data[12:16] == b"IHDR":
    width, height = struct.unpack(">II", data[16:24])
  else:
    try:
      with Image.open(io.BytesIO(data)) as image:  # parses the header only
        width, height = image.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, struct.error) as e:
      raise BadExample("corrupt_image", key, f"unreadable image ({e})") from None
  if width == 0 or height == 0:
    raise BadExample("empty_image", key, f"zero-size image {width}x{height}")
  return width, height


def _read_file(path: str) -> bytes:
  try:
    with open(path, "rb") as f:
      return f.read()
  except FileNotFoundError:
    raise BadExample("missing_file", path, "file not found") from None
  except OSError as e:
    raise BadExample("missing_file", path, f"cannot read ({e})") from None


def _read_header(path: str, size: int = 65536) -> bytes:
  """The first bytes of a file: enough for a PNG or JPEG header (JPEG falls back to all)."""
  try:
    with open(path, "rb") as f:
      head = f.read(size)
      if head[:8] != _PNG_SIGNATURE:
        head += f.read()  # JPEG markers may sit anywhere before SOF; files are small
      return head
  except FileNotFoundError:
    raise BadExample("missing_file", path, "file not found") from None
  except OSError as e:
    raise BadExample("missing_file", path, f"cannot read ({e})") from None


def _text(value, key: str) -> str:
  """A label as str: TFDS Text features come back as bytes."""
  if isinstance(value, np.ndarray) and value.shape == ():
    value = value.item()
  if isinstance(value, bytes):
    try:
      return value.decode("utf-8")
    except UnicodeDecodeError:
      raise BadExample("bad_label", key, f"label is not UTF-8: {value[:40]!r}") from None
  if isinstance(value, str):
    return value
  raise BadExample("bad_label", key, f"label is not text: {type(value).__name__}")


# ----------------------------------------------------------------------------
# MJSynth.


def mjsynth_root(path: str | os.PathLike) -> str:
  """The folder holding ``annotation_train.txt``: PATH itself or PATH/mnt/ramdisk/max/90kDICT32px.

  Raises:
    ValueError: if neither holds the annotation files, saying what was expected.
  """
  path = os.path.expanduser(os.fspath(path))
  for root in (path, os.path.join(path, _MJSYNTH_TAR_PATH)):
    if any(os.path.isfile(os.path.join(root, f"annotation_{s}.txt")) for s in MJSYNTH_SPLITS):
      return root
  raise ValueError(
      f"Dataset mjsynth:{path}: no annotation_train.txt / annotation_val.txt / "
      f"annotation_test.txt in {path!r} or {os.path.join(path, _MJSYNTH_TAR_PATH)!r}. Expected "
      f"the official MJSynth (90kDICT32px) tree, lines like './1/1/23_Hello_456.jpg 456'."
  )


def mjsynth_label(relative_path: str) -> str | None:
  """'./3000/7/182_slinking_71711.jpg' -> 'slinking' (None when the name has no such part)."""
  stem = os.path.splitext(os.path.basename(relative_path))[0]
  parts = stem.split("_")
  if len(parts) < 3:
    return None
  return "_".join(parts[1:-1])


class MJSynthSource(Source):
  """One split of the official MJSynth tree; example i is line i of ``annotation_{split}.txt``.

  The annotation file is memory-mapped and only the line offsets are kept (58 MB for the
  7.2M training lines), so every worker process can hold the whole index.

  Args:
    root: the ``90kDICT32px`` folder or the folder the tarball was unpacked in.
    split: 'train', 'val' (or 'validation') or 'test'.

  Raises:
    ValueError: if the tree or the split's annotation file is missing, or the split unknown.
  """

  def __init__(self, root: str | os.PathLike, split: str = "train"):
    split = "val" if split == "validation" else split
    if split not in MJSYNTH_SPLITS:
      raise ValueError(
          f"Dataset mjsynth:{root}: split {split!r} is not one of " f"{MJSYNTH_SPLITS}."
      )
    self.root = mjsynth_root(root)
    self.split = split
    self.spec = f"mjsynth:{self.root}" + (f",split={split}" if split != "train" else "")
    self.annotation = os.path.join(self.root, f"annotation_{split}.txt")
    if not os.path.isfile(self.annotation):
      raise ValueError(
          f"Dataset {self.spec}: no {os.path.basename(self.annotation)} in " f"{self.root!r}."
      )
    self.unreadable = MJSYNTH_UNREADABLE[split]
    self._open()

  def _open(self):
    with open(self.annotation, "rb") as f:
      size = os.fstat(f.fileno()).st_size
      self._buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
    data = np.frombuffer(self._buf, np.uint8) if size else np.zeros((0,), np.uint8)
    ends = np.flatnonzero(data == ord("\n"))
    if size and (not len(ends) or ends[-1] != size - 1):
      ends = np.append(ends, size)  # last line without a newline
    starts = np.concatenate([[0], ends[:-1] + 1]) if len(ends) else ends
    keep = ends - starts > 1  # blank lines (and lone '\r') are not examples
    self._starts, self._ends = starts[keep], ends[keep]

  def __getstate__(self):
    state = dict(self.__dict__)
    for k in ("_buf", "_starts", "_ends"):  # the mmap cannot be pickled; rebuilt (~1 s)
      state.pop(k)
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._open()

  def __len__(self) -> int:
    return len(self._starts)

  def entry(self, index: int) -> tuple[str, str | None]:
    """(relative path without './', label) of line ``index``."""
    line = bytes(self._buf[self._starts[index] : self._ends[index]]).decode("utf-8", "replace")
    rel = line.strip().split(" ")[0]
    rel = rel[2:] if rel.startswith("./") else rel
    return rel, mjsynth_label(rel)

  def _check(self, index: int) -> tuple[str, str]:
    rel, label = self.entry(index)
    path = os.path.join(self.root, rel)
    if rel in self.unreadable:
      raise BadExample(
          "corrupt_image", path, "known unreadable MJSynth file (on the community list; not opened)"
      )
    if label is None:
      raise BadExample(
          "malformed_name",
          f"{self.annotation}:{index + 1}",
          f"file name {rel!r} is not INDEX_WORD_LEXICON.jpg",
      )
    return path, label

  def read(self, index: int):
    path, label = self._check(index)
    return decode_image(_read_file(path), path), label, path

  def probe(self, index: int) -> tuple[int, int, str, str]:
    """(width, height, label, path) from the JPEG header; raises ``BadExample`` as ``read``."""
    path, label = self._check(index)
    width, height = image_size(_read_header(path), path)
    return width, height, label, path


# ----------------------------------------------------------------------------
# LMDB (deep-text-recognition-benchmark layout).

# One environment per (path, process): LMDB forbids opening the same file twice in a process.
_LMDB_ENVS: dict = {}


def _lmdb_env(path: str):
  import lmdb  # only needed for lmdb: specs

  key = (path, os.getpid())
  if key not in _LMDB_ENVS:
    _LMDB_ENVS[key] = lmdb.open(
        path,
        subdir=os.path.isdir(path),
        readonly=True,
        lock=False,
        readahead=False,
        meminit=False,
        max_readers=512,
    )
  return _LMDB_ENVS[key]


class LmdbSource(Source):
  """An LMDB of word images: ``num-samples``, ``image-%09d``, ``label-%09d`` (1-based).

  Example i is record i + 1. The environment is opened read-only and without locks, once
  per process (it is re-opened after pickling into a worker).

  Raises:
    ValueError: if PATH is missing, is not an LMDB, or has no ``num-samples`` key.
    crnn_jax.extras.MissingExtraError: without the [lmdb] extra.
  """

  def __init__(self, path: str | os.PathLike):
    extras.require("lmdb", "the lmdb: data spec")
    import lmdb

    self.path = os.path.expanduser(os.fspath(path))
    self.spec = f"lmdb:{self.path}"
    if not os.path.exists(self.path):
      raise ValueError(f"Dataset {self.spec}: {self.path!r} does not exist.")
    try:
      with _lmdb_env(self.path).begin(write=False) as txn:
        raw = txn.get(b"num-samples")
    except lmdb.Error as e:
      raise ValueError(f"Dataset {self.spec}: not an LMDB database ({e}).") from None
    if raw is None:
      raise ValueError(
          f"Dataset {self.spec}: no 'num-samples' key. Expected the deep-text-recognition-"
          f"benchmark layout: num-samples, image-%09d, label-%09d with indices from 1."
      )
    try:
      self.n = int(raw)
    except ValueError:
      raise ValueError(
          f"Dataset {self.spec}: num-samples is {raw[:40]!r}, not an integer."
      ) from None

  def __len__(self) -> int:
    return self.n

  def _get(self, txn, index: int) -> tuple[bytes, str, str]:
    key = f"{self.path}#{index + 1:09d}"
    image = txn.get(b"image-%09d" % (index + 1))
    label = txn.get(b"label-%09d" % (index + 1))
    if image is None or label is None:
      missing = "image" if image is None else "label"
      raise BadExample("missing_file", key, f"no {missing}-{index + 1:09d} record")
    return image, _text(label, key), key

  def read(self, index: int):
    item = self.read_many([index])[0]
    if isinstance(item, BadExample):
      raise item
    return item

  def read_many(self, indices: Sequence[int]) -> list:
    out = []
    with _lmdb_env(self.path).begin(write=False, buffers=False) as txn:
      for i in indices:
        try:
          data, label, key = self._get(txn, i)
          out.append((decode_image(data, key), label, key))
        except BadExample as e:
          out.append(e)
    return out

  def probe(self, index: int) -> tuple[int, int, str, str]:
    with _lmdb_env(self.path).begin(write=False) as txn:
      data, label, key = self._get(txn, index)
    width, height = image_size(data, key)
    return width, height, label, key
