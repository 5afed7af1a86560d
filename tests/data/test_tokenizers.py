"""Tokenizers round-trip text, keep their vocabulary order, name what they cannot encode, and save as plain dicts."""

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npformer import backend
from npformer.data import ByteTokenizer, CharTokenizer, tokenizer_from_dict

from ..strategies import seeds

# ---------------------------------------------------------------------------------------------------------------
# tokenizers
# ---------------------------------------------------------------------------------------------------------------


@given(text=st.text(min_size=1))
def test_char_round_trip(text):
    tok = CharTokenizer.from_text(text)
    ids = tok.encode(text)
    assert ids.dtype == np.int64 and ids.shape == (len(text),)
    assert tok.vocab_size == len(set(text))
    assert tok.chars == sorted(set(text))
    assert 0 <= ids.min() and ids.max() < tok.vocab_size
    assert tok.decode(ids) == text
    assert [tok.chars[i] for i in ids] == list(text)  # id i means chars[i]
    again = tokenizer_from_dict(json.loads(json.dumps(tok.to_dict())))
    assert isinstance(again, CharTokenizer) and again.chars == tok.chars
    np.testing.assert_array_equal(again.encode(text), ids)


@given(text=st.text(min_size=1), perm_seed=seeds())
def test_char_ids_follow_the_saved_order(text, perm_seed):
    chars = sorted(set(text))
    order = list(np.random.default_rng(perm_seed).permutation(len(chars)))
    tok = CharTokenizer([chars[i] for i in order])  # a vocabulary in any order keeps that order
    ids = tok.encode(text)
    assert [tok.chars[i] for i in ids] == list(text)
    assert tok.decode(ids) == text


def test_char_unknown_character_is_named():
    tok = CharTokenizer.from_text("hello")
    with pytest.raises(ValueError, match=r"'z' \(U\+007A\) at position 2"):
        tok.encode("hez")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([0, 4, 5])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode(np.array([-1]))
    with pytest.raises(TypeError, match="integers"):
        tok.decode(np.array([1.0]))
    assert tok.decode([]) == "" and tok.encode("").shape == (0,)


def test_char_bad_vocabularies():
    with pytest.raises(ValueError, match="empty"):
        CharTokenizer.from_text("")
    with pytest.raises(ValueError, match="repeated"):
        CharTokenizer(["a", "b", "a"])
    with pytest.raises(ValueError, match="one character"):
        CharTokenizer(["ab"])


@given(text=st.text())
def test_byte_round_trip(text):
    tok = ByteTokenizer()
    ids = tok.encode(text)
    assert ids.dtype == np.int64 and tok.vocab_size == 256
    assert bytes(ids.astype(np.uint8).tolist()) == text.encode("utf-8")
    assert tok.decode(ids) == text
    assert isinstance(tokenizer_from_dict(json.loads(json.dumps(tok.to_dict()))), ByteTokenizer)


def test_byte_decode_replaces_invalid_utf8(xp_backend):
    tok = ByteTokenizer()
    ids = tok.encode("é")[:1]  # half of a two-byte sequence
    assert tok.decode(backend.asarray(ids)) == "\ufffd"
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([256])
    with pytest.raises(ValueError, match="surrogate"):
        tok.encode("a\ud800")


def test_tokenizer_from_dict_unknown_kind():
    with pytest.raises(ValueError, match="known kinds"):
        tokenizer_from_dict({"kind": "wordpiece"})
    with pytest.raises(ValueError, match="CharTokenizer.from_dict"):
        CharTokenizer.from_dict({"kind": "char"})
