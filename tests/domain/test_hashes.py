"""parse_hash is total: any text gives a digest or HashParseError, never another exception."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peerwatch.domain.hashes import HashParseError, parse_hash


@pytest.mark.parametrize("text", ["é" * 32, "é" * 40, "é" * 64, "g" * 40, "0" * 33])
def test_bad_text_is_a_hash_parse_error(text: str) -> None:
    with pytest.raises(HashParseError):
        parse_hash(text)


@given(st.text(min_size=30, max_size=66))
def test_any_text_parses_or_is_refused_cleanly(text: str) -> None:
    try:
        digest = parse_hash(text)
    except HashParseError:
        return
    assert len(digest.value) in (16, 20, 32)
