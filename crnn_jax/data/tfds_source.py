"""``tfds:`` sources: one split of a built TFDS dataset, read with ``as_data_source`` (no
TensorFlow).

``tfds:NAME[/CONFIG][:SPLIT][,data_dir=DIR][,image=KEY][,label=KEY]``. The project's own
builders (``synth_words``, and ``mjsynth``, ``text_folder``, ``lmdb_words`` of
``tfds_builders``) are registered before a name is looked up. A name without its config
whose configs are built in the data dir is an error that lists them as ready specs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from crnn_jax import extras
from crnn_jax.data import formats
from crnn_jax.data.base import BadExample, Source

# ----------------------------------------------------------------------------
# TFDS.

_TFDS_OPTIONS = ("data_dir", "image", "label")


def parse_tfds_spec(rest: str, spec: str) -> tuple[str, str, dict]:
  """'NAME[/CONFIG][:SPLIT][,data_dir=D][,image=K][,label=K]' -> (name, split, options).

  Options are peeled from the right, so a config written as keyword arguments
  (``synth_words/num_train=100,num_validation=10``) keeps its commas.
  """
  items = rest.split(",")
  options = {}
  while len(items) > 1:
    key, sep, value = items[-1].partition("=")
    if not sep or key.strip() not in _TFDS_OPTIONS:
      break
    options[key.strip()] = value.strip()
    items.pop()
  head = ",".join(items)
  name, _, split = head.partition(":")
  if not name:
    raise ValueError(
        f"Dataset spec {spec!r}: expected tfds:NAME[/CONFIG][:SPLIT]" f"[,data_dir=DIR]."
    )
  return name, split or "train", options


def _register_builders(name: str):
  """Imports the project's builders a name may refer to, so TFDS can build or read them."""
  base = name.split("/")[0].split(":")[0]
  if base == "synth_words":
    from crnn_jax.data import synth_words  # noqa: F401
  elif base in ("mjsynth", "text_folder", "lmdb_words"):
    from crnn_jax.data import tfds_builders  # noqa: F401


def _built_configs(name: str, data_dir: str) -> list:
  """Configs of dataset ``name`` with a built version (``dataset_info.json``) in ``data_dir``."""
  root = os.path.join(data_dir, name)
  if not os.path.isdir(root):
    return []
  return sorted(
      c
      for c in os.listdir(root)
      if any(
          os.path.isfile(os.path.join(root, c, v, "dataset_info.json"))
          for v in (
              os.listdir(os.path.join(root, c)) if os.path.isdir(os.path.join(root, c)) else ()
          )
      )
  )


class TfdsSource(Source):
  """One split of a built TFDS dataset, through ``as_data_source`` (random access, no TF).

  Images are fetched encoded (``tfds.decode.SkipDecoding``) and decoded here, so one
  corrupt record is one ``BadExample`` and ``probe`` reads sizes from headers.

  Args:
    name: ``NAME`` or ``NAME/CONFIG`` as ``tfds.builder`` takes it.
    split: a split name (TFDS slicing such as ``train[:10%]`` works too).
    data_dir: TFDS data dir; None: ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``.
    image_key, label_key: features to read; default the supervised keys, else
      'image' and 'label'.

  Raises:
    ValueError: if the dataset, the split or the features do not exist, or it is not built
      (saying how to build it).
    crnn_jax.extras.MissingExtraError: without the [tfds] extra.
  """

  def __init__(
      self,
      name: str,
      split: str = "train",
      data_dir: str | None = None,
      image_key: str | None = None,
      label_key: str | None = None,
  ):
    extras.require("tfds", "the tfds: data spec")
    import tensorflow_datasets as tfds

    self.name, self.split = name, split
    # Read here, not at TFDS's import, so a TFDS_DATA_DIR set later still counts.
    data_dir = data_dir or os.environ.get("TFDS_DATA_DIR") or None
    self.data_dir = os.path.expanduser(data_dir) if data_dir else None
    self.spec = f"tfds:{name}:{split}" + (f",data_dir={self.data_dir}" if data_dir else "")
    _register_builders(name)
    try:
      builder = tfds.builder(name, data_dir=self.data_dir)
    except tfds.core.registered.DatasetNotFoundError:
      raise ValueError(
          f"Dataset {self.spec}: no dataset {name.split('/')[0]!r} is registered or built in "
          f"{self.data_dir or 'the default TFDS data dir'}."
      ) from None
    except ValueError as e:  # unknown config and the like
      raise ValueError(f"Dataset {self.spec}: {e}") from None
    if not builder.is_prepared():
      built = _built_configs(
          name, os.path.dirname(os.path.dirname(os.path.dirname(builder.data_dir)))
      )
      if "/" not in name and built:
        raise ValueError(
            f"Dataset {self.spec}: name a config; built in this data dir: "
            + ", ".join(
                f"tfds:{name}/{c}:{split}" + (f",data_dir={self.data_dir}" if self.data_dir else "")
                for c in built
            )
            + "."
        )
      hint = (
          "python scripts/make_dataset.py --num N --data-dir DIR"
          if name.startswith("synth_words")
          else f"tfds.builder({name!r}, data_dir=...).download_and_prepare()"
      )
      raise ValueError(
          f"Dataset {self.spec}: not built in {builder.data_dir!r}. Build it "
          f"first ({hint}); see docs/data.md."
      )
    supervised = builder.info.supervised_keys or ("image", "label")
    self.image_key = image_key or supervised[0]
    self.label_key = label_key or supervised[1]
    features = builder.info.features
    for what, key in (("image", self.image_key), ("label", self.label_key)):
      if key not in features:
        raise ValueError(
            f"Dataset {self.spec}: no {what} feature {key!r}; features are "
            f"{sorted(features.keys())} (choose with ,{what}=KEY)."
        )
    decoders = None
    if isinstance(features[self.image_key], tfds.features.Image):
      decoders = {self.image_key: tfds.decode.SkipDecoding()}
    try:
      self.source = builder.as_data_source(split, decoders=decoders)
    except (ValueError, KeyError) as e:
      raise ValueError(
          f"Dataset {self.spec}: cannot read split {split!r} ({e}); splits are "
          f"{sorted(builder.info.splits.keys())}."
      ) from None
    self.info = builder.info

  def __len__(self) -> int:
    return len(self.source)

  def _key(self, index: int) -> str:
    return f"{self.name}:{self.split}[{index}]"

  def _example(self, record, index: int):
    key = self._key(index)
    label = formats._text(record[self.label_key], key)
    image = record[self.image_key]
    if isinstance(image, (bytes, np.bytes_)):
      image = formats.decode_image(bytes(image), key)
    return image, label, key

  def read(self, index: int):
    item = self.read_many([index])[0]
    if isinstance(item, BadExample):
      raise item
    return item

  def read_many(self, indices: Sequence[int]) -> list:
    indices = [int(i) for i in indices]
    records = self.source.__getitems__(indices)
    out = []
    for index, record in zip(indices, records):
      try:
        out.append(self._example(record, index))
      except BadExample as e:
        out.append(e)
    return out

  def probe(self, index: int) -> tuple[int, int, str, str]:
    record = self.source[int(index)]
    key = self._key(index)
    image = record[self.image_key]
    if isinstance(image, (bytes, np.bytes_)):
      width, height = formats.image_size(bytes(image), key)
    else:
      height, width = np.asarray(image).shape[:2]
    return width, height, formats._text(record[self.label_key], key), key

  def probe_many(self, indices: Sequence[int]) -> list:
    """``probe`` for several indices at once (one batched read); items may be ``BadExample``."""
    indices = [int(i) for i in indices]
    out = []
    for index, record in zip(indices, self.source.__getitems__(indices)):
      key = self._key(index)
      try:
        image = record[self.image_key]
        if isinstance(image, (bytes, np.bytes_)):
          width, height = formats.image_size(bytes(image), key)
        else:
          height, width = np.asarray(image).shape[:2]
        out.append((width, height, formats._text(record[self.label_key], key), key))
      except BadExample as e:
        out.append(e)
    return out
