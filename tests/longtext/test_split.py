"""Splitting a long text (issue 27): under the limit, at the strongest boundary, never inside a word or number."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_tts.longtext.split import split_text
from airflow_provider_tts.vendors import CambAi, RevidTts


def squash(text: str) -> str:
    return "".join(text.split())


def check_invariants(text: str, max_chars: int, min_chars: int = 1) -> list[str]:
    parts = split_text(text, max_chars=max_chars, min_chars=min_chars)
    for part in parts:
        assert min_chars <= len(part.text) <= max_chars
        assert part.text == text[part.start : part.end]
        assert part.text == part.text.strip()
    for before, after in itertools.pairwise(parts):
        gap = text[before.end : after.start]
        assert gap, "parts are in order, apart"
        assert not gap.strip(), "parts are cut only in whitespace"
    assert squash("".join(p.text for p in parts)) == squash(text)  # the text back, modulo whitespace at cuts
    assert [p.index for p in parts] == list(range(len(parts)))
    return [p.text for p in parts]


def test_a_short_text_is_one_part() -> None:
    assert check_invariants("  Hello there.  ", 3000) == ["Hello there."]


def test_sentences_are_preferred_to_clauses_and_clauses_to_words() -> None:
    text = "One two three, four five six. Seven eight nine, ten eleven twelve."
    assert check_invariants(text, 40) == ["One two three, four five six.", "Seven eight nine, ten eleven twelve."]
    long_sentence = "alpha beta gamma, delta epsilon zeta eta theta iota kappa"
    assert check_invariants(long_sentence, 40) == ["alpha beta gamma,", "delta epsilon zeta eta theta iota kappa"]


@pytest.mark.parametrize(
    "sentence",
    [
        "Pi is 3.14 and a thousand is 1,000 exactly.",
        "Bring fruit, e.g. apples and pears, to Dr. Smith at No. 5 today.",
        "The population was 1 000 000 people in 2020.",
    ],
)
def test_no_cut_inside_a_number_or_after_an_abbreviation(sentence: str) -> None:
    text = " ".join([sentence] * 30)
    parts = check_invariants(text, 120)
    first_word = sentence.split()[0]
    for part in parts:  # every cut is at a sentence end: none after "e.g." or "Dr.", none in "1 000"
        assert part.startswith(first_word), part
        assert part.endswith("."), part
        assert part.count(sentence) == len(part.split(". " + first_word)), part
    assert " ".join(parts) == text


def test_paragraphs_are_hard_boundaries_so_an_edit_changes_only_its_own_parts() -> None:
    paragraphs = [" ".join(f"Sentence {p}.{n} of the chapter goes on a while." for n in range(40)) for p in range(20)]
    before = check_invariants("\n\n".join(paragraphs), 500)
    paragraphs[7] = paragraphs[7].replace("Sentence 7.3 ", "Sentence seven point three, edited, ")
    after = check_invariants("\n\n".join(paragraphs), 500)
    changed = set(after) - set(before)
    assert 1 <= len(changed) <= 2
    assert all("7." in part or "seven" in part for part in changed)
    assert len(before) == len(after)


def test_parts_are_even_with_no_tiny_last_part() -> None:
    text = " ".join(f"Word{n} is here." for n in range(300))
    sizes = [len(p) for p in check_invariants(text, 1000)]
    assert max(sizes) - min(sizes) < 50, sizes


def test_a_tiny_paragraph_joins_its_neighbour_under_a_minimum() -> None:
    parts = check_invariants("I.\n\nThe chapter begins here.\n\nOk", 3000, min_chars=3)
    assert parts == ["I.\n\nThe chapter begins here.\n\nOk"]
    with pytest.raises(ValueError, match="at least 3"):
        split_text("Hi", max_chars=3000, min_chars=3)


def test_a_word_longer_than_the_limit_is_an_error_naming_where_it_is() -> None:
    with pytest.raises(ValueError, match=r"a word of 60 characters at character 6"):
        split_text("Short " + "x" * 60 + " end.", max_chars=50)
    with pytest.raises(ValueError, match="empty"):
        split_text(" \n\n ", max_chars=50)


def test_the_limits_are_the_vendors_in_one_place() -> None:
    assert CambAi.text_limits["tts-stream"] == (3, 3000)
    assert CambAi.text_limits["tts"] == (1, 3000)
    assert RevidTts.text_limits["tts"][1] == 2000


def test_two_hundred_thousand_characters_split_quickly() -> None:
    text = "\n\n".join(" ".join(f"Line {p}-{n}, with a clause; and more." for n in range(60)) for p in range(100))
    assert len(text) > 200_000
    parts = check_invariants(text, 3000, min_chars=3)
    assert len(parts) <= len(text) // 2000


words = st.text(alphabet="abcXYZ019.,;:!?'-", min_size=1, max_size=12)
spaces = st.sampled_from([" ", " ", " ", "  ", "\n", "\n\n", " \n \n", "\t"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(words, spaces), min_size=1, max_size=200), st.integers(min_value=12, max_value=80))
def test_every_text_splits_under_the_limit_and_joins_back(tokens: list[tuple[str, str]], limit: int) -> None:
    text = "".join(word + space for word, space in tokens)
    try:
        check_invariants(text, limit, min_chars=3)
    except ValueError as exc:
        error = str(exc)
    else:
        return
    # Only a text too short, a word (or a number with spaces) over the limit, or a paragraph whose
    # only cuts leave a piece under the minimum cannot be split; the error says which.
    assert re.search(r"at least 3|word of|cannot be cut", error), error
