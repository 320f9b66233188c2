"""Decoded label ids back to text, on the host."""

from __future__ import annotations

from typing import Any

import numpy as np
from jax.typing import ArrayLike


def to_strings(tokens: ArrayLike, lengths: ArrayLike, charset: Any) -> list:
  """Turns decoded label ids into strings, on the host.

  Args:
    tokens: `(..., L)` int array of label ids, as in a `DecodeResult`.
    lengths: `(...)` int array of lengths.
    charset: a string of characters (id i+1 is character i, blank 0) or an object with
      `decode(ids: Sequence[int]) -> str`.

  Returns:
    Nested lists of strings shaped like `lengths`; a plain string for scalar `lengths`.

  Raises:
    ValueError: if the shapes do not match, or an id has no character.
  """
  tokens, lengths = np.asarray(tokens), np.asarray(lengths)
  if tokens.shape[:-1] != lengths.shape:
    raise ValueError(
        f"tokens must have shape lengths.shape + (L,) = {lengths.shape} + (L,); "
        f"got {tokens.shape}."
    )
  if isinstance(charset, str):
    # Check every id in reach of its length at once, then join plain Python lists.
    in_reach = np.arange(tokens.shape[-1]) < lengths[..., None]
    bad = in_reach & ((tokens < 1) | (tokens > len(charset)))
    if bad.any():
      raise ValueError(
          f"tokens: id {int(tokens[bad][0])} has no character; a charset string of "
          f"{len(charset)} characters covers ids 1..{len(charset)}."
      )
    characters = ("",) + tuple(charset)  # id i -> characters[i]

    def decode(ids: list[int]) -> str:
      return "".join([characters[i] for i in ids])

  elif hasattr(charset, "decode"):
    decode = charset.decode
  else:
    raise ValueError(f"charset must be a string or have decode(ids); got {type(charset).__name__}.")

  def convert(row_tokens: list, row_lengths: list | int):
    if isinstance(row_lengths, int):
      return decode(row_tokens[:row_lengths])
    return [convert(t, n) for t, n in zip(row_tokens, row_lengths)]

  return convert(tokens.tolist(), lengths.tolist())
