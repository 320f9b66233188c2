"""TFDS builders for datasets users bring: ``mjsynth``, ``text_folder`` and ``lmdb_words``.

Each turns a dataset on disk into a TFDS dataset (ArrayRecord; no TensorFlow needed to
build or read), which ``tfds:NAME/CONFIG:SPLIT`` specs then read like ``synth_words``:

- ``mjsynth``: the official MJSynth tree (manual download: the folder holding
  ``annotation_{train,val,test}.txt``, i.e. ``90kDICT32px`` or the folder the tarball was
  unpacked in, given as ``manual_dir``). Splits ``train``, ``validation``, ``test``; labels
  from the file names; the known unreadable files and any that fail to decode are skipped.
- ``text_folder``: a folder with ``labels.tsv`` (``relative/path<TAB>label``); one split,
  ``train`` (make others with TFDS slicing, e.g. ``train[:90%]`` and ``train[90%:]``).
- ``lmdb_words``: LMDBs in the deep-text-recognition-benchmark layout, one per split.

Every example is checked while building: the image must decode and be non-empty and the
label non-empty UTF-8. What is skipped is logged (count by reason, up to three example
paths each) and stored in the dataset's metadata under ``skipped`` and ``skipped_examples``.
Images keep their original bytes when they are JPEG or PNG in mode L or RGB; other images
(alpha, palette, 16-bit, other formats) are stored as RGB PNG, transparent areas made white.
Features: ``image`` (``Image(shape=(None, None, 3))``, decoded by TFDS to 3 channels; the
project's ``tfds:`` reader decodes to gray itself), ``label`` (Text), ``key`` (Text: the
source path or record, for reports).

    from crnn_jax.data import tfds_builders
    tfds_builders.TextFolder(folder='data/plates', data_dir=DIR).download_and_prepare()
    # -> tfds:text_folder/plates:train,data_dir=DIR
    tfds_builders.LmdbWords(train='data_lmdb/training/MJ/MJ_train',
                            validation='data_lmdb/validation', config_name='mj',
                            data_dir=DIR).download_and_prepare()
    # -> tfds:lmdb_words/mj:train
    tfds_builders.build_mjsynth('/data/mjsynth', data_dir=DIR)
    # -> tfds:mjsynth:train, tfds:mjsynth:validation, tfds:mjsynth:test

Importing this module registers the three builders with TFDS (``tfds_source.TfdsSource`` imports
it for those names); a built dataset also opens by name from its files without it.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import io
import logging
import os
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import tensorflow_datasets as tfds
from PIL import Image

from crnn_jax.data import formats, readers

_log = logging.getLogger(__name__)


def _features() -> tfds.features.FeaturesDict:
  return tfds.features.FeaturesDict(
      {
          "image": tfds.features.Image(shape=(None, None, 3)),
          "label": tfds.features.Text(),
          "key": tfds.features.Text(),
      }
  )


def storable(data: bytes, key: str) -> bytes:
  """The bytes to store for an encoded image, after checking that it decodes.

  Raises:
    BadExample: 'corrupt_image' or 'empty_image', as ``formats.decode_image``.
  """
  if not data:
    raise readers.BadExample("corrupt_image", key, "empty file (0 bytes)")
  try:
    image = Image.open(io.BytesIO(data))
    fmt, mode = image.format, image.mode
    if fmt == "JPEG" and mode in ("L", "RGB"):
      image.draft("L", image.size)  # still decodes every block: a full check, 2x faster
    image.load()
  except Exception as e:  # noqa: BLE001 -- any decoder failure means an unusable file
    raise readers.BadExample("corrupt_image", key, f"unreadable image ({e})") from None
  if image.width == 0 or image.height == 0:
    raise readers.BadExample("empty_image", key, f"zero-size image {image.width}x{image.height}")
  if fmt in ("JPEG", "PNG") and mode in ("L", "RGB"):
    return data
  image = Image.open(io.BytesIO(data))
  if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
    rgba = image.convert("RGBA")
    image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
  elif image.mode.startswith("I"):  # 16/32-bit gray: scale to 8 bits
    image = image.point(lambda v: v / 256).convert("L")
  buf = io.BytesIO()
  image.convert("RGB").save(buf, format="PNG")
  return buf.getvalue()


class SkipLog:
  """Counts skipped examples by reason, keeps three keys each, and logs a summary."""

  def __init__(self, name: str):
    self.name = name
    self.counts: collections.Counter = collections.Counter()
    self.examples: dict = {}
    self.kept = 0

  def skip(self, e: readers.BadExample):
    self.counts[e.reason] += 1
    shown = self.examples.setdefault(e.reason, [])
    if len(shown) < 3:
      shown.append(f"{e.key} ({e.message})")

  def summary(self) -> str:
    lines = [f"{self.name}: kept {self.kept}, skipped {sum(self.counts.values())}"]
    for reason, n in self.counts.most_common():
      lines.append(f"  {n:>7}  {reason}: e.g. " + "; ".join(self.examples[reason]))
    return "\n".join(lines)


def checked_examples(
    read: Callable[[int], tuple[bytes, str, str]],
    indices: Sequence[int],
    skips: SkipLog,
    *,
    num_threads: int = 8,
    chunk: int = 256,
) -> Iterator[tuple[str, dict]]:
  """(key, example) for every index whose image decodes and whose label is non-empty.

  Args:
    read: index -> (encoded image bytes, label, key); raises ``BadExample``.
    indices: what to read, in order.
    skips: collects what was skipped.
    num_threads: threads reading and checking (Pillow decodes without the GIL).
  """

  def work(start: int) -> list:
    out = []
    for i in indices[start : start + chunk]:
      try:
        data, label, key = read(i)
        if not label:
          raise readers.BadExample("empty_label", key, "empty label")
        out.append((key, {"image": storable(data, key), "label": label, "key": key}))
      except readers.BadExample as e:
        out.append(e)
    return out

  with concurrent.futures.ThreadPoolExecutor(max(1, num_threads)) as pool:
    for items in pool.map(work, range(0, len(indices), chunk)):
      for item in items:
        if isinstance(item, readers.BadExample):
          skips.skip(item)
        else:
          skips.kept += 1
          yield item


class _ReportingBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Shared: ArrayRecord by default, skip reports logged and stored in the metadata."""

  def __init__(self, *, num_threads: int = 8, **kwargs: Any):
    kwargs.setdefault("file_format", "array_record")
    self._num_threads = num_threads
    super().__init__(**kwargs)

  def _generate_examples(self, split: str, read, indices) -> Iterator[tuple[str, dict]]:
    return self._generate(split, read, indices)

  def _generate(self, split: str, read, indices) -> Iterator[tuple[str, dict]]:
    skips = SkipLog(f"{self.name} {split}")
    yield from checked_examples(read, indices, skips, num_threads=self._num_threads)
    _log.warning("%s", skips.summary())
    metadata = self.info.metadata
    metadata.setdefault("skipped", {})[split] = dict(skips.counts)
    metadata.setdefault("skipped_examples", {})[split] = skips.examples


def _info(builder, description: str, **metadata) -> tfds.core.DatasetInfo:
  # DatasetInfo(builder=self, ...): dataset_info_from_configs() looks for a folder beside
  # this file and fails (NotADirectoryError) for a builder defined in one .py file.
  return tfds.core.DatasetInfo(
      builder=builder,
      description=description,
      features=_features(),
      supervised_keys=("image", "label"),
      metadata=tfds.core.MetadataDict(**metadata),
  )


# ----------------------------------------------------------------------------
# MJSynth.


def _mjsynth_read(source: formats.MJSynthSource, index: int) -> tuple[bytes, str, str]:
  path, label = source._check(index)
  return formats._read_file(path), label, path


class Mjsynth(_ReportingBuilder):
  """MJSynth (Synth90k, Jaderberg et al. 2014): 9M synthetic word images, 90k-word lexicon."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Official tree; labels from file names; unreadable files skipped."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Download mjsynth.tar.gz (about 10 GB) from the Visual Geometry Group's text-recognition "
      "data page and unpack it. Pass the 90kDICT32px folder (or the folder it was unpacked in) "
      "as manual_dir: download_and_prepare(download_config=tfds.download.DownloadConfig("
      "manual_dir=PATH)), or crnn_jax.data.tfds_builders.build_mjsynth(PATH, data_dir=DIR)."
  )

  def _info(self) -> tfds.core.DatasetInfo:
    return _info(
        self,
        "MJSynth word crops; label = the word in the file name (case kept).",
        unreadable_listed={k: sorted(v) for k, v in formats.MJSYNTH_UNREADABLE.items()},
    )

  def _split_generators(self, dl_manager):
    root = formats.mjsynth_root(dl_manager.manual_dir)
    out = {}
    for split, name in (("train", "train"), ("val", "validation"), ("test", "test")):
      if os.path.isfile(os.path.join(root, f"annotation_{split}.txt")):
        source = formats.MJSynthSource(root, split)
        out[name] = self._generate(
            name, lambda i, s=source: _mjsynth_read(s, i), range(len(source))
        )
    return out


def build_mjsynth(path: str, *, data_dir: str | None = None, num_threads: int = 8) -> Mjsynth:
  """Builds ``mjsynth`` from the official tree at ``path`` (a no-op when built)."""
  builder = Mjsynth(data_dir=data_dir, num_threads=num_threads)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=formats.mjsynth_root(path))
  )
  return builder


# ----------------------------------------------------------------------------
# A folder with labels.tsv.


def config_slug(text: str) -> str:
  """A TFDS-safe config name from a folder name: lower case, [a-z0-9_] only."""
  slug = re.sub(r"[^a-z0-9_]+", "_", os.path.basename(os.path.normpath(text)).lower()).strip("_")
  return slug or "data"


@dataclasses.dataclass(eq=False)
class FolderConfig(tfds.core.BuilderConfig):
  """Where the data is; the config name is the dataset's name under the builder."""

  paths: dict = dataclasses.field(default_factory=dict)  # split -> folder or LMDB path


def _tsv_read(source: readers.TsvSource, index: int) -> tuple[bytes, str, str]:
  rel, label, lineno, line = source.entries[index]
  if rel is None:
    raise readers.BadExample(
        "malformed_line", f"labels.tsv:{lineno}", f"no TAB between path and label in {line[:80]!r}"
    )
  path = os.path.join(source.folder, rel)
  return formats._read_file(path), label, path


class _FolderBuilder(_ReportingBuilder, skip_registration=True):
  """A builder whose config is made from constructor arguments (``paths``, ``config_name``)."""

  def __init__(
      self,
      *,
      paths: dict | None = None,
      config_name: str | None = None,
      config: Any = None,
      **kwargs: Any,
  ):
    if paths is not None:
      paths = {k: os.path.abspath(os.path.expanduser(v)) for k, v in paths.items() if v}
      name = config_name or config_slug(next(iter(paths.values())))
      # Passed by name, resolved by get_builder_config (TFDS refuses a config object whose
      # name get_builder_config also answers).
      self._configs()[name] = FolderConfig(
          name=name, description=f"built from {paths}", paths=paths
      )
      config = name
    super().__init__(config=config, **kwargs)

  @classmethod
  def _configs(cls) -> dict:
    return cls.__dict__.get("_made") or setattr(cls, "_made", {}) or cls._made

  @classmethod
  def get_builder_config(cls, name: str, version: Any = None) -> FolderConfig:
    """Any name: a built dataset is opened by name alone (its paths are in its metadata)."""
    return cls._configs().get(name) or FolderConfig(name=name, description="opened by name")

  def _info(self) -> tfds.core.DatasetInfo:
    paths = getattr(self.builder_config, "paths", {}) if self.builder_config else {}
    return _info(self, self.__doc__.splitlines()[0], source_paths=paths)


class TextFolder(_FolderBuilder):
  """Word or line images listed in a folder's labels.tsv (relative/path<TAB>label).

  Args:
    folder: the folder holding ``labels.tsv``.
    config_name: the dataset's name under ``text_folder/`` (default: the folder's name).
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First version."}

  def __init__(self, *, folder: str | None = None, **kwargs: Any):
    super().__init__(paths={"train": folder} if folder else None, **kwargs)

  def _split_generators(self, dl_manager):
    del dl_manager
    source = readers.TsvSource(self.builder_config.paths["train"])
    return {"train": self._generate("train", lambda i: _tsv_read(source, i), range(len(source)))}


def _lmdb_read(source: formats.LmdbSource, index: int) -> tuple[bytes, str, str]:
  with formats._lmdb_env(source.path).begin(write=False) as txn:
    return source._get(txn, index)


class LmdbWords(_FolderBuilder):
  """Word images from LMDBs in the deep-text-recognition-benchmark layout, one per split.

  Args:
    train, validation, test: LMDB paths (folders holding data.mdb); any may be omitted.
    config_name: the dataset's name under ``lmdb_words/`` (default: the first path's name).
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First version."}

  def __init__(
      self,
      *,
      train: str | None = None,
      validation: str | None = None,
      test: str | None = None,
      **kwargs: Any,
  ):
    paths = {"train": train, "validation": validation, "test": test}
    super().__init__(paths=paths if any(paths.values()) else None, **kwargs)

  def _split_generators(self, dl_manager):
    del dl_manager
    out = {}
    for split, path in self.builder_config.paths.items():
      source = formats.LmdbSource(path)
      out[split] = self._generate(split, lambda i, s=source: _lmdb_read(s, i), range(len(source)))
    return out
