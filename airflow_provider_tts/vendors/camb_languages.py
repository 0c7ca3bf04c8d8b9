"""Camb.ai's language list: one table of BCP-47 tags and the legacy integer ids of ``POST /tts``.

Camb names a language two ways: ``POST /tts`` (legacy, task + poll) takes an integer id (``1`` is
English, US), ``POST /tts-stream`` takes a BCP-47 tag (``en-us``). Camb publishes the pairs through
its API (``GET /source-languages`` and ``GET /target-languages``: ``id``, ``language``,
``short_name``) and its official SDK; the facts below were read from camb-sdk 1.6.6:

* :data:`LEGACY_IDS`: the SDK's language enum (``camb.types.language_enums.Languages``), whose
  member names are the tags (``EN_US = 1``, ``ZH_CN_HENAN = 140``). Ids 137 and 138 are not in it.
* :data:`STREAM_ONLY_TAGS`: tags the SDK lists for ``/tts-stream``
  (``CreateStreamTtsRequestPayloadLanguage``) that the enum has no id for. The stream list writes
  British English ``en-uk`` where the enum writes ``en-gb`` (id 35): the two are one language here.

``tests/vendors/test_camb_language.py`` compares this table with the installed SDK, so a new SDK
release that adds a language shows up as a failing test rather than as a refused DAG.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

#: BCP-47 tag (lower case, as Camb writes them) -> the integer id ``POST /tts`` takes.
_LEGACY_IDS: dict[str, int] = {
    "en-us": 1, "af-za": 2, "am-et": 3, "ar-ae": 4, "ar-bh": 5, "ar-dz": 6, "ar-eg": 7, "ar-iq": 8, "ar-jo": 9,
    "ar-kw": 10, "ar-lb": 11, "ar-ly": 12, "ar-ma": 13, "ar-om": 14, "ar-qa": 15, "ar-sa": 16, "ar-sy": 17,
    "ar-tn": 18, "ar-ye": 19, "az-az": 20, "bg-bg": 21, "bn-bd": 22, "bn-in": 23, "bs-ba": 24, "ca-es": 25,
    "cs-cz": 26, "cy-gb": 27, "da-dk": 28, "de-at": 29, "de-ch": 30, "de-de": 31, "el-gr": 32, "en-au": 33,
    "en-ca": 34, "en-gb": 35, "en-hk": 36, "en-ie": 37, "en-in": 38, "en-ke": 39, "en-ng": 40, "en-nz": 41,
    "en-ph": 42, "en-sg": 43, "en-tz": 44, "en-za": 45, "es-ar": 46, "es-bo": 47, "es-cl": 48, "es-co": 49,
    "es-cr": 50, "es-cu": 51, "es-do": 52, "es-ec": 53, "es-es": 54, "es-gq": 55, "es-gt": 56, "es-hn": 57,
    "es-mx": 58, "es-ni": 59, "es-pa": 60, "es-pe": 61, "es-pr": 62, "es-py": 63, "es-sv": 64, "es-us": 65,
    "es-uy": 66, "es-ve": 67, "et-ee": 68, "eu-es": 69, "fa-ir": 70, "fi-fi": 71, "fil-ph": 72, "fr-be": 73,
    "fr-ca": 74, "fr-ch": 75, "fr-fr": 76, "ga-ie": 77, "gl-es": 78, "gu-in": 79, "he-il": 80, "hi-in": 81,
    "hr-hr": 82, "hu-hu": 83, "hy-am": 84, "id-id": 85, "is-is": 86, "it-it": 87, "ja-jp": 88, "jv-id": 89,
    "ka-ge": 90, "kk-kz": 91, "km-kh": 92, "kn-in": 93, "ko-kr": 94, "lo-la": 95, "lt-lt": 96, "lv-lv": 97,
    "mk-mk": 98, "ml-in": 99, "mn-mn": 100, "mr-in": 101, "ms-my": 102, "mt-mt": 103, "my-mm": 104, "nb-no": 105,
    "ne-np": 106, "nl-be": 107, "nl-nl": 108, "pl-pl": 109, "ps-af": 110, "pt-br": 111, "pt-pt": 112, "ro-ro": 113,
    "ru-ru": 114, "si-lk": 115, "sk-sk": 116, "sl-si": 117, "so-so": 118, "sq-al": 119, "sr-rs": 120, "su-id": 121,
    "sv-se": 122, "sw-ke": 123, "sw-tz": 124, "ta-in": 125, "ta-lk": 126, "ta-my": 127, "ta-sg": 128, "te-in": 129,
    "th-th": 130, "tr-tr": 131, "uk-ua": 132, "ur-in": 133, "ur-pk": 134, "uz-uz": 135, "vi-vn": 136, "zh-cn": 139,
    "zh-cn-henan": 140, "zh-cn-liaoning": 141, "zh-cn-shaanxi": 142, "zh-cn-shandong": 143, "zh-cn-sichuan": 144,
    "zh-hk": 145, "zh-tw": 146, "zu-za": 147, "pa-in": 148, "sa-in": 149, "ar-xa": 150, "tl-ph": 151,
}  # fmt: skip
LEGACY_IDS: Mapping[str, int] = MappingProxyType(_LEGACY_IDS)
#: Legacy id -> tag.
TAG_BY_ID: Mapping[int, str] = MappingProxyType({number: tag for tag, number in LEGACY_IDS.items()})
#: Tags of the SDK's ``/tts-stream`` list that the legacy table has no id for.
STREAM_ONLY_TAGS: frozenset[str] = frozenset({"as-in", "en-uk"})
#: A stream-list tag that is a legacy-table language under another name.
LEGACY_ALIASES: Mapping[str, str] = MappingProxyType({"en-uk": "en-gb"})
#: The tag ``/tts-stream`` is sent for a legacy id: the table's, except where the SDK's stream
#: list spells the language otherwise (35, British English, is ``en-uk`` there).
STREAM_TAG_BY_ID: Mapping[int, str] = MappingProxyType({**TAG_BY_ID, 35: "en-uk"})
#: Every tag ``/tts-stream`` accepts here, legacy-table order first (``en-us`` leads suggestions).
STREAM_TAGS: tuple[str, ...] = (*LEGACY_IDS, *sorted(STREAM_ONLY_TAGS))
#: The shape of a BCP-47 tag as Camb writes them (``en-us``, ``fil-ph``, ``zh-cn-henan``): a 2-3
#: letter language and optional subtags (the ``/tts-stream`` model's documented pattern rule).
BCP47_PATTERN = r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$"


def normalise_tag(value: str) -> str:
    """``en-US``, ``EN_us``, ``" en-us "`` -> ``en-us`` (Camb writes its tags in lower case)."""
    return value.strip().replace("_", "-").lower()


def nearest_tags(value: str, known: Iterable[str], n: int = 4) -> list[str]:
    """The known tags closest to ``value``: by :mod:`difflib` similarity, then of the same language.

    Ties keep the table's order, so ``en-xx`` suggests ``en-us`` before ``en-za``.
    """
    tags = list(known)
    score = {tag: difflib.SequenceMatcher(None, value, tag).ratio() for tag in tags}
    close = sorted((tag for tag in tags if score[tag] >= 0.6), key=lambda tag: -score[tag])
    primary = value.split("-")[0]
    same_language = [tag for tag in tags if tag.split("-")[0] == primary and tag not in close]
    return (close + same_language)[:n]


def _unknown(value: str, known: Iterable[str], expected: str) -> ValueError:
    close = nearest_tags(normalise_tag(value), known)
    hint = f" (nearest: {', '.join(repr(tag) for tag in close)})" if close else ""
    return ValueError(f"{value!r} is not a language in Camb's list{hint}; expected {expected}")


def legacy_language_id(value: Any) -> Any:
    """``POST /tts``'s ``language``: a BCP-47 tag becomes its integer id; the rest is the model's.

    An integer (or a string of digits, as a template renders one) is Camb's id and passes through
    for the model to check; a tag not in the list is refused naming the nearest valid ones.
    """
    if not isinstance(value, str) or value.strip().isdigit():
        return value
    tag = normalise_tag(value)
    tag = LEGACY_ALIASES.get(tag, tag)
    if tag in LEGACY_IDS:
        return LEGACY_IDS[tag]
    if tag in STREAM_ONLY_TAGS:
        raise ValueError(
            f"{value!r} has no legacy /tts language id: Camb lists it for /tts-stream only "
            "(CambTtsStreamToStorageOperator)"
        )
    raise _unknown(value, LEGACY_IDS, "a BCP-47 tag such as 'en-us' or Camb's integer language id")


def stream_language_tag(value: Any) -> Any:
    """``POST /tts-stream``'s ``language``: a BCP-47 tag, normalised; a legacy integer id, its tag.

    A string that is not tag-shaped is returned as it came, for the model's pattern rule to refuse.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int):
        if value in STREAM_TAG_BY_ID:
            return STREAM_TAG_BY_ID[value]
        raise ValueError(
            f"language for /tts-stream is a BCP-47 string such as 'en-us', and {value} is not one of "
            "the legacy integer ids in Camb's list either"
        )
    if not isinstance(value, str) or not re.match(BCP47_PATTERN, normalise_tag(value)):
        return value
    tag = normalise_tag(value)
    if tag in STREAM_TAGS:
        return tag
    raise _unknown(value, STREAM_TAGS, "a BCP-47 tag such as 'en-us' (or Camb's integer language id)")
