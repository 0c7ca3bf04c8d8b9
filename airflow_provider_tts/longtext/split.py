"""Splitting a long text into parts a vendor accepts: at sentences, then clauses, then words.

A pure function with no I/O, so that it can be tested exhaustively and so that the same text always
gives the same parts: parts are identified by their content (the request cache keys each by its
request), and a re-run with one paragraph edited must produce the same parts everywhere else.

Two choices make that true:

* **Paragraphs are hard boundaries.** A part never spans two paragraphs (a blank line), so an edit
  changes only the parts of its own paragraph. Packing short paragraphs together would save
  requests but not credits (both vendors charge per character) and would shift every later cut
  after an edit, making the whole rest of the text new. A paragraph shorter than the vendor's
  minimum (a two-letter heading on ``/tts-stream``) is joined to its neighbour.
* **Within a paragraph, the cut is chosen by the text alone**, never by a running position in the
  whole document: the fewest parts under the limit, then the strongest boundaries (a sentence end
  before a clause mark before a plain space), then the most even lengths, so no tiny last part.

Cuts are only ever made in whitespace, so no word, number (``3.14``, ``1,000``) or abbreviation
(``e.g.``) is split; whitespace between two digits (``1 000``) is never cut either. A single word
longer than the limit is an error naming where it is: cutting it would make the vendor speak
nonsense.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: Boundary strengths: the lower, the better a place to cut.
SENTENCE, CLAUSE, WORD = 0, 1, 2

#: Words that end in a period without ending a sentence (compared lower-cased, without the period).
_ABBREVIATED = (
    "mr mrs ms dr prof sr jr st mt vs e.g i.e cf al approx no nos fig figs vol ch pp p ed eds gen col lt sgt "
    "capt rev hon inc ltd co corp dept est jan feb mar apr jun jul aug sep sept oct nov dec"
)
ABBREVIATIONS = frozenset(_ABBREVIATED.split(" "))

_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n\s*")
_SPACE = re.compile(r"\s+")
_CLOSERS = "\"')]}\u00bb\u201d\u2019"  # closing quotes and brackets after a sentence's last mark
_SENTENCE_END = ".!?…"
_CLAUSE_MARKS = ",;:"
_DASHES = "\u2014\u2013"  # em and en dash


@dataclass(frozen=True)
class TextPart:
    """One part of a text: ``text == source[start:end]``, with no whitespace at either end."""

    index: int
    start: int
    end: int
    text: str

    @property
    def characters(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class _Run:
    """A run of whitespace where a cut may be made, and how good a place it is."""

    start: int
    end: int
    strength: int


def split_text(text: str, *, max_chars: int, min_chars: int = 1) -> list[TextPart]:
    """The parts of ``text``, each of ``min_chars`` to ``max_chars`` characters, in order.

    Joining the parts with the whitespace between them gives ``text`` back, less its leading and
    trailing whitespace. Raises ``ValueError`` for an empty text, a text shorter than
    ``min_chars``, or a word longer than ``max_chars``.
    """
    if not isinstance(text, str):
        raise ValueError(f"the text must be a string, got {type(text).__name__}")
    if not 1 <= min_chars <= max_chars:
        raise ValueError(f"need 1 <= min_chars <= max_chars, got {min_chars} and {max_chars}")
    spans = _paragraphs(text, min_chars)
    if not spans:
        raise ValueError("the text is empty")
    cuts: list[tuple[int, int]] = []
    for start, end in spans:
        cuts.extend(_split_paragraph(text, start, end, max_chars, min_chars))
    return [TextPart(i, a, b, text[a:b]) for i, (a, b) in enumerate(cuts)]


def _paragraphs(text: str, min_chars: int) -> list[tuple[int, int]]:
    """``(start, end)`` of each paragraph without its surrounding whitespace; tiny ones joined to a neighbour."""
    spans: list[tuple[int, int]] = []
    position = 0
    for match in [*_PARAGRAPH_BREAK.finditer(text), None]:
        stop = match.start() if match is not None else len(text)
        chunk = text[position:stop]
        stripped = chunk.strip()
        if stripped:
            start = position + (len(chunk) - len(chunk.lstrip()))
            spans.append((start, start + len(stripped)))
        if match is not None:
            position = match.end()
    merged: list[tuple[int, int]] = []
    carry: int | None = None  # the start of a tiny paragraph waiting for the next one
    for start, end in spans:
        if carry is not None:
            start, carry = carry, None
        if end - start < min_chars:
            carry = start
            continue
        merged.append((start, end))
    if carry is not None:  # a tiny last paragraph joins the one before it
        if not merged:
            raise ValueError(f"the text has {len(text.strip())} characters; the vendor needs at least {min_chars}")
        merged[-1] = (merged[-1][0], spans[-1][1])
    return merged


def _strength(text: str, start: int, end: int) -> int | None:
    """How good a cut the whitespace ``text[start:end]`` is; None where it must not be cut."""
    before, after = text[start - 1], text[end] if end < len(text) else ""
    if before.isdigit() and after.isdigit():
        return None  # "1 000": one number
    if "\n" in text[start:end]:
        return SENTENCE  # a line break inside a paragraph: a list item, a verse, a heading
    j = start - 1
    while j > 0 and text[j] in _CLOSERS:
        j -= 1
    mark = text[j]
    if mark in _SENTENCE_END:
        if mark == "." and _is_abbreviation(text, j):
            return WORD
        if after[:1].islower():
            return CLAUSE  # "... and so on. and then": not a sentence start
        return SENTENCE
    if mark in _CLAUSE_MARKS or mark in _DASHES or after[:1] in _DASHES:
        return CLAUSE
    return WORD


def _is_abbreviation(text: str, period: int) -> bool:
    """Whether the word ending at ``text[period] == "."`` is an abbreviation or an initial."""
    j = period
    while j > 0 and (text[j - 1].isalpha() or text[j - 1] == "."):
        j -= 1
    word = text[j:period]
    if len(word) == 1 and word.isupper():
        return True  # an initial: "J. R. Smith"
    return word.lower() in ABBREVIATIONS


def _split_paragraph(text: str, start: int, end: int, max_chars: int, min_chars: int) -> list[tuple[int, int]]:
    if end - start <= max_chars:
        return [(start, end)]
    runs = []
    for match in _SPACE.finditer(text, start, end):
        strength = _strength(text, match.start(), match.end())
        if strength is not None:
            runs.append(_Run(match.start(), match.end(), strength))
    # Weaker boundaries are considered only inside stretches the stronger ones cannot cut short enough.
    kept = [run for run in runs if run.strength == SENTENCE]
    for level in (CLAUSE, WORD):
        kept = _refine(kept, runs, level, start, end, max_chars)
    return _best_cuts(text, kept, start, end, max_chars, min_chars)


def _refine(kept: list[_Run], runs: list[_Run], level: int, start: int, end: int, max_chars: int) -> list[_Run]:
    """``kept`` plus the ``level`` runs inside each stretch between kept runs that is over the limit."""
    bounds = [(start, start), *((r.start, r.end) for r in kept), (end, end)]
    long_stretches = [
        (bounds[i][1], bounds[i + 1][0]) for i in range(len(bounds) - 1) if bounds[i + 1][0] - bounds[i][1] > max_chars
    ]
    if not long_stretches:
        return kept
    extra = [run for run in runs if run.strength == level and any(a < run.start < b for a, b in long_stretches)]
    return sorted([*kept, *extra], key=lambda run: run.start)


def _best_cuts(
    text: str, runs: list[_Run], start: int, end: int, max_chars: int, min_chars: int
) -> list[tuple[int, int]]:
    """The cut at the best subset of ``runs``: fewest parts, strongest boundaries, then most even lengths."""
    # Nodes: 0 is the paragraph's start, 1..n the runs, n + 1 its end. A part goes from a node's
    # right edge to a later node's left edge. Dynamic programming over nodes, forwards.
    lefts = [start, *(run.start for run in runs), end]
    rights = [start, *(run.end for run in runs), end]
    penalties = [0, *(run.strength for run in runs), 0]
    last = len(lefts) - 1
    best: list[tuple[int, int, int] | None] = [None] * (last + 1)
    back = [0] * (last + 1)
    best[0] = (0, 0, 0)
    for i in range(last):
        here = best[i]
        if here is None:
            continue
        for j in range(i + 1, last + 1):
            length = lefts[j] - rights[i]
            if length > max_chars:
                break
            if length < min_chars:
                continue
            cost = (here[0] + 1, here[1] + penalties[j], here[2] + length * length)
            current = best[j]
            if current is None or cost < current:
                best[j], back[j] = cost, i
    if best[last] is None:
        raise ValueError(_no_cut_message(text, runs, start, end, max_chars))
    cuts: list[tuple[int, int]] = []
    j = last
    while j > 0:
        i = back[j]
        cuts.append((rights[i], lefts[j]))
        j = i
    return cuts[::-1]


def _no_cut_message(text: str, runs: list[_Run], start: int, end: int, max_chars: int) -> str:
    edges = [start, *(edge for run in runs for edge in (run.start, run.end)), end]
    for a, b in zip(edges[::2], edges[1::2], strict=True):
        if b - a > max_chars:
            return (
                f"a word of {b - a} characters at character {a} ({text[a : a + 30]!r}...) is longer than the "
                f"limit of {max_chars} per part; a part is never cut inside a word or a number"
            )
    return f"the paragraph at character {start} cannot be cut into parts of at most {max_chars} characters"
