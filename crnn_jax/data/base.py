"""What a data source is: random access to examples, and the one way an example fails.

A source has ``len(source)`` examples; ``source.read(i)`` returns ``(image, text, key)``
where ``image`` is anything ``preprocess.to_pil_gray`` takes and ``key`` names the example
for reports (a path, an index). A problem with one example raises ``BadExample`` with a
reason; the data path counts and reports those and carries on. Every kind of source
(``readers``, ``formats``, ``tfds_source``) builds on this module; ``specs.open_source``
turns a spec string into one.
"""

from __future__ import annotations

from collections.abc import Sequence


class BadExample(Exception):
  """One unusable example. ``reason`` is a short key used for counting."""

  def __init__(self, reason: str, key: str, message: str):
    super().__init__(f"{key}: {message}")
    self.reason = reason
    self.key = key
    self.message = message


class Source:
  """Base class: ``len()`` examples, ``read(i) -> (image, text, key)``.

  ``rendered`` sources make their images on demand (cheaply, deterministically): the
  training loader renders them as batches need them instead of indexing them first.
  """

  spec: str = ""
  rendered: bool = False

  def __len__(self) -> int:
    raise NotImplementedError

  def read(self, index: int):
    raise NotImplementedError

  def read_many(self, indices: Sequence[int]) -> list:
    """Reads several examples; each item is ``(image, text, key)`` or a ``BadExample``."""
    out = []
    for i in indices:
      try:
        out.append(self.read(i))
      except BadExample as e:
        out.append(e)
    return out


def parse_options(text: str, spec: str) -> tuple[str, dict]:
  """'head,k=v,k2=v2' -> ('head', {'k': 'v', ...})."""
  head, *rest = text.split(",")
  opts = {}
  for item in rest:
    k, sep, v = item.partition("=")
    if not sep:
      raise ValueError(f"Dataset spec {spec!r}: option {item!r} is not key=value.")
    opts[k.strip()] = v.strip()
  return head, opts
