"""SRT parsing: well-formed files in every common spelling, and an error naming the line otherwise."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_tts.exceptions import TtsInvalidRequestError
from airflow_provider_tts.srt import parse_srt

GOOD = """\ufeff1
00:00:00,000 --> 00:00:01,500
Hello there,
general.

2
00:00:02.000 --> 00:00:03,250 X1:0 X2:100
Second cue

"""


def test_parses_cues_and_normalises_times() -> None:
    assert parse_srt(GOOD.replace("\n", "\r\n")) == [
        {"index": 1, "start": "00:00:00,000", "end": "00:00:01,500", "text": "Hello there, general."},
        {"index": 2, "start": "00:00:02,000", "end": "00:00:03,250", "text": "Second cue"},
    ]


@pytest.mark.parametrize(
    ("srt", "fragment"),
    [
        ("", "no cues"),
        ("\n\n", "no cues"),
        ("one\n00:00:00,000 --> 00:00:01,000\nx", "line 1: expected a cue number"),
        ("1\n00:00 --> 00:01\nx", "line 2: expected 'HH:MM:SS,mmm"),
        ("1\n00:00:00,000 -> 00:00:01,000\nx", "line 2"),
        ("1\n00:00:02,000 --> 00:00:01,000\nx", "line 2: cue 1 ends before it starts"),
        ("1\n00:00:00,000 --> 00:00:01,000\n", "line 1: cue 1 has no text"),
        ("1", "line 2: cue 1 has no timing line"),
        (GOOD + "3\n00:00:04,000 --> 00:00:05,000\nok\n\nbad\n", "line 14: expected a cue number"),
    ],
)
def test_malformed_srt_names_the_line(srt: str, fragment: str) -> None:
    with pytest.raises(TtsInvalidRequestError) as info:
        parse_srt(srt)
    assert fragment in str(info.value)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("0123456789:,.-> \n\r\ufeffabc")), max_size=200))
def test_any_text_parses_or_raises_the_documented_error(text: str) -> None:
    try:
        cues = parse_srt(text)
    except TtsInvalidRequestError:
        return
    assert cues
    assert all(c["start"] <= c["end"] and c["text"] for c in cues)
