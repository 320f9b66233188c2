"""The `synth_words` TFDS dataset: word images from `crnn_jax.data.render`, stored offline.

Builds and reads without TensorFlow: images are grayscale PNG bytes encoded with Pillow in
the render workers, written as ArrayRecord (`file_format='array_record'`), and read back with
`builder.as_data_source(split)` (random access). `tfds.load` / `as_dataset` need TensorFlow
and cannot read ArrayRecord; do not use them here.

Example `i` of `train` is `Renderer(seed, height, difficulty=...).render(i)`; example `i` of
`validation` is `render(VALIDATION_START + i)` of the same renderer, so the two splits never
share a rendered index (words do repeat: the lexicon is finite). Records are stored in index
order (`disable_shuffling=True`): record i of a split is index i, as above.

Importing this module registers the builder with TFDS. Ways to get one:

    import tensorflow_datasets as tfds
    from crnn_jax.data import synth_words

    b = synth_words.SynthWords(num_train=100_000, num_validation=2_000, seed=0,
                               difficulty=1.0, data_dir=DIR)
    b = tfds.builder('synth_words/num_train=100000,num_validation=2000', data_dir=DIR)
    b = tfds.builder('synth_words/n100000_v2000_s0_d100_h32', data_dir=DIR)  # same dataset
    b.download_and_prepare()             # renders it once; a no-op when already built
    train = b.as_data_source('train')    # train[i] == {'image': (32, W, 1) uint8, 'label': str}

Any sizes/seed/difficulty/height are encoded in the config name
`n{train}_v{validation}_s{seed}_d{round(100 * difficulty)}_h{height}`, so different datasets
never share a directory and a built one can be opened by its name alone (even without this
module imported: TFDS then reads it from its files).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
import time
from collections.abc import Iterator
from typing import Any

import tensorflow_datasets as tfds

from crnn_jax import charset as charset_lib
from crnn_jax.data import render

# Validation example i is rendered from index VALIDATION_START + i: disjoint from any train
# range a run could render (2**40 images would take decades at 1,000 images/s).
VALIDATION_START = 2**40

_NAME = re.compile(r"^n(\d+)_v(\d+)_s(\d+)_d(\d+)_h(\d+)$")

_log = logging.getLogger(__name__)


@dataclasses.dataclass(eq=False)
class SynthWordsConfig(tfds.core.BuilderConfig):
  """What to render: sizes, the renderer's seed, difficulty and image height."""

  num_train: int = 1_000_000
  num_validation: int = 10_000
  seed: int = 0
  difficulty: float = 1.0
  height: int = 32


def config_name(
    num_train: int, num_validation: int, seed: int, difficulty: float, height: int
) -> str:
  """The canonical config name, e.g. 'n1000_v100_s0_d100_h32' (difficulty in percent)."""
  return f"n{num_train}_v{num_validation}_s{seed}_d{round(100 * difficulty)}_h{height}"


def make_config(
    num_train: int, num_validation: int, seed: int = 0, difficulty: float = 1.0, height: int = 32
) -> SynthWordsConfig:
  """Returns the config for these settings, named by `config_name`.

  Raises:
    ValueError: if a size is not positive, the seed negative, the difficulty outside [0, 1]
      or not a whole percent, or the height below 8.
  """
  for name, value in (("num_train", num_train), ("num_validation", num_validation)):
    if not isinstance(value, int) or value < 1:
      raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
  if not isinstance(seed, int) or seed < 0:
    raise ValueError(f"seed: expected an int >= 0, got {seed!r}")
  if not 0.0 <= difficulty <= 1.0 or abs(100 * difficulty - round(100 * difficulty)) > 1e-9:
    raise ValueError(f"difficulty: expected a multiple of 0.01 in [0, 1], got {difficulty!r}")
  if not isinstance(height, int) or height < 8:
    raise ValueError(f"height: expected an int >= 8, got {height!r}")
  return SynthWordsConfig(
      name=config_name(num_train, num_validation, seed, difficulty, height),
      description=(
          f"{num_train} train / {num_validation} validation word images, seed {seed}, "
          f"difficulty {difficulty}, height {height}."
      ),
      num_train=num_train,
      num_validation=num_validation,
      seed=seed,
      difficulty=float(difficulty),
      height=height,
  )


class SynthWords(tfds.core.GeneratorBasedBuilder):
  """Synthetic word crops (MJSynth-like) rendered by `crnn_jax.data.render`.

  Constructor keywords `num_train`, `num_validation`, `seed`, `difficulty`, `height`
  override the chosen config (default 'default'); `num_workers` sets render processes
  (None: one per core). `file_format` defaults to 'array_record' (writable without TF).
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First renderer: fontpkg fonts, skimage photo backgrounds."}
  BUILDER_CONFIGS = [
      dataclasses.replace(make_config(1_000_000, 10_000), name="default"),
      dataclasses.replace(make_config(100_000, 2_000, difficulty=0.0), name="clean_100k"),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "default"

  def __init__(
      self,
      *,
      num_train: int | None = None,
      num_validation: int | None = None,
      seed: int | None = None,
      difficulty: float | None = None,
      height: int | None = None,
      num_workers: int | None = None,
      config: str | tfds.core.BuilderConfig | None = None,
      **kwargs: Any,
  ):
    overrides = {
        "num_train": num_train,
        "num_validation": num_validation,
        "seed": seed,
        "difficulty": difficulty,
        "height": height,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if overrides:
      base = self._config_from(config)
      settings = {
          f: getattr(base, f)
          for f in ("num_train", "num_validation", "seed", "difficulty", "height")
      }
      # Passed by name: TFDS resolves it through get_builder_config below.
      config = make_config(**(settings | overrides)).name
    kwargs.setdefault("file_format", "array_record")
    self._num_workers = num_workers
    super().__init__(config=config, **kwargs)

  @classmethod
  def _config_from(cls, config: str | tfds.core.BuilderConfig | None) -> SynthWordsConfig:
    if config is None:
      config = cls.DEFAULT_BUILDER_CONFIG_NAME
    if isinstance(config, str):
      found = cls.get_builder_config(config)
      if found is None:
        raise ValueError(
            f"config: unknown {config!r}; expected one of {sorted(cls.builder_configs)} "
            "or a name like 'n1000_v100_s0_d100_h32'"
        )
      return found
    return config

  @classmethod
  def get_builder_config(
      cls, name: str, version: str | tfds.core.Version | None = None
  ) -> tfds.core.BuilderConfig | None:
    """Also accepts canonical names ('n1000_v100_s0_d100_h32') of unlisted configs."""
    found = super().get_builder_config(name, version)
    if found is not None:
      return found
    match = _NAME.match(name)
    if match is None:
      return None
    n, v, s, d, h = (int(g) for g in match.groups())
    return make_config(n, v, s, d / 100, h)

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    # DatasetInfo(builder=self, ...) rather than dataset_info_from_configs(), which looks
    # for a dataset folder next to this file.
    return tfds.core.DatasetInfo(
        builder=self,
        description=(
            "Synthetic word images (MJSynth-like) from crnn_jax.data.render: grayscale, "
            f"{config.height} pixels tall, width following the text."
        ),
        features=tfds.features.FeaturesDict(
            {
                "image": tfds.features.Image(shape=(None, None, 1), encoding_format="png"),
                "label": tfds.features.Text(),
            }
        ),
        supervised_keys=("image", "label"),
        disable_shuffling=True,  # record i is render index i; readers shuffle
        metadata=tfds.core.MetadataDict(
            seed=config.seed,
            difficulty=config.difficulty,
            height=config.height,
            charset=charset_lib.DEFAULT_CHARS,
            validation_start=VALIDATION_START,
        ),
    )

  def _split_generators(self, dl_manager: Any) -> dict[str, Iterator[tuple[int, dict]]]:
    del dl_manager  # nothing to download
    config = self.builder_config
    return {
        "train": self._generate_examples(0, config.num_train, "train"),
        "validation": self._generate_examples(
            VALIDATION_START, config.num_validation, "validation"
        ),
    }

  def _generate_examples(
      self, start: int, count: int, split: str
  ) -> Iterator[tuple[int, dict[str, Any]]]:
    config = self.builder_config
    examples = render.iter_range(
        config.seed,
        start,
        start + count,
        config.height,
        self._num_workers,
        encode=functools.partial(render.encode_png, grayscale=True),
        difficulty=config.difficulty,
    )
    progress = Progress(f"synth_words {split}", count)
    for i, (png, text) in enumerate(examples):
      yield i, {"image": png, "label": text}
      progress.update(i + 1)
    progress.done()


class Progress:
  """Logs 'name: count/total images, N images/s, ETA ...' at most every `every` seconds.

  The rate is measured from the first image, so worker start-up does not distort it.
  """

  def __init__(self, name: str, total: int, every: float = 5.0):
    self.name, self.total, self.every = name, total, every
    self.start = self.last = time.perf_counter()
    self.first: float | None = None
    self.count = 0

  def update(self, count: int) -> None:
    self.count = count
    now = time.perf_counter()
    if self.first is None:
      self.first = now
    if now - self.last >= self.every and count > 1:
      self.last = now
      _log.info("%s", self.line())

  def line(self) -> str:
    now = time.perf_counter()
    rate = (self.count - 1) / (now - self.first) if self.first and now > self.first else 0.0
    eta = f"{(self.total - self.count) / rate:.0f} s" if rate > 0 else "?"
    return (
        f"{self.name}: {self.count}/{self.total} images, {rate:.0f} images/s, ETA {eta} "
        f"({now - self.start:.0f} s elapsed)"
    )

  def done(self) -> None:
    _log.info("%s (done)", self.line())
