import numpy as np
import pytest

from crnn_jax import charset as charset_lib
from crnn_jax.charset import Charset


def test_default_is_seed_62_with_blank_zero():
  cs = Charset()
  assert len(cs) == 62 and cs.num_classes == 63
  assert cs.encode("a") == [1] and cs.encode("A") == [27] and cs.encode("0") == [53]
  assert charset_lib.BLANK_ID == 0


def test_round_trip_and_decode_drops_blank_and_padding():
  cs = Charset()
  text = "Hello42World"
  ids = cs.encode(text)
  assert cs.decode(ids) == text
  assert cs.decode([0] + ids + [-1, -1]) == text
  # Every character, the first and the last id included.
  assert cs.decode(cs.encode(charset_lib.DEFAULT_CHARS)) == charset_lib.DEFAULT_CHARS


def test_unknown_character_error_names_char_and_text():
  with pytest.raises(ValueError, match=r"Character '!' in text 'hi!'"):
    Charset().encode("hi!")
  assert Charset().unknown_chars("it's ok! it's") == "' !"  # each once, in order


def test_case_fold():
  cs = Charset("abc", case_fold=True)
  assert cs.encode("CaB") == [3, 1, 2]
  assert cs.unknown_chars("ABC") == ""
  assert Charset("abc").unknown_chars("ABC") == "ABC"
  assert Charset("abc") != cs and Charset("abc", case_fold=True) == cs


def test_from_string_and_file(tmp_path):
  one_line = tmp_path / "a.txt"
  one_line.write_text("xyz\n")
  per_line = tmp_path / "b.txt"
  per_line.write_text("x\ny\n \n")
  assert Charset.from_spec(f"file:{one_line}").chars == "xyz"
  assert Charset.from_spec(f"file:{per_line}").chars == "xy "
  assert Charset.from_spec("default") == Charset.from_spec("") == Charset()
  assert Charset.from_spec("abc", case_fold=True) == Charset("abc", case_fold=True)
  assert Charset.from_spec(f"file:{one_line}", case_fold=True).case_fold
  assert Charset.from_spec("0123456789").num_classes == 11
  assert Charset.from_spec("default", case_fold=True) == Charset(case_fold=True)
  # UTF-8 whatever the locale says, and Windows line ends are not characters.
  crlf = tmp_path / "c.txt"
  crlf.write_bytes("ä\r\nö\r\n€\r\n".encode("utf-8"))
  assert Charset.from_file(crlf).chars == "äö€" and not Charset.from_file(crlf).case_fold
  empty = tmp_path / "empty.txt"
  empty.write_text("\n")
  with pytest.raises(ValueError, match=f"Charset file '{empty}' holds no characters"):
    Charset.from_file(empty)


def test_bad_charsets():
  with pytest.raises(ValueError, match="repeats 'a'"):
    Charset("abca")
  with pytest.raises(ValueError, match="repeats 'ab'"):  # each repeated character, once
    Charset("abab")
  with pytest.raises(ValueError, match=r"^Charset chars is empty: give at least one character\.$"):
    Charset("")


def test_encode_batch_pads():
  labels, pads = charset_lib.encode_batch(Charset(), ["ab", "c"], 3)
  assert labels.dtype == np.int32 and pads.dtype == np.float32  # what the loss expects
  assert labels.tolist() == [[1, 2, 0], [3, 0, 0]]
  assert pads.tolist() == [[0, 0, 1], [0, 1, 1]]
  labels, pads = charset_lib.encode_batch(Charset(), ["abc"], 3)  # exactly max_len fits
  assert labels.tolist() == [[1, 2, 3]] and pads.tolist() == [[0, 0, 0]]
  with pytest.raises(ValueError, match="max_len is 1"):
    charset_lib.encode_batch(Charset(), ["ab"], 1)
