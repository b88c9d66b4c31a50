"""Word error rate as a reader judges a transcript: case, punctuation, hyphens and digits do not count.

Whisper writes "speech-to-text", "10" and "Ten." where espeak-ng said "speech to text ten"; those are the same
words to a user, so both sides are normalised the same way before jiwer counts the edits. Used by the tests and
the benchmarks (bench/ puts tests/ on its path).
"""
from __future__ import annotations

import re

_UNITS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
          "sixteen seventeen eighteen nineteen").split()
_TENS = "- - twenty thirty forty fifty sixty seventy eighty ninety".split()


def _spell(match: re.Match) -> str:
    n = int(match.group())
    if n < 20:
        return _UNITS[n]
    if n < 100:
        tens, unit = divmod(n, 10)
        return _TENS[tens] + (" " + _UNITS[unit] if unit else "")
    return match.group()


_FR_UNITS = ("zéro un deux trois quatre cinq six sept huit neuf dix onze douze treize quatorze quinze seize "
             "dix-sept dix-huit dix-neuf").split()
_FR_TENS = "- - vingt trente quarante cinquante soixante".split()


def _spell_fr(match: re.Match) -> str:
    n = int(match.group())
    if n < 20:
        return _FR_UNITS[n]
    if n < 70:
        tens, unit = divmod(n, 10)
        return _FR_TENS[tens] + ("" if not unit else " et un" if unit == 1 else " " + _FR_UNITS[unit])
    return match.group()


def normalise(text: str, language: str = "en") -> str:
    """Lower case, numbers spelled out, punctuation and hyphens dropped. French keeps its accented letters
    and splits elisions (l'équipe -> l équipe), so an accent or an apostrophe Whisper got wrong counts."""
    if language == "fr":
        text = re.sub(r"\b(\d+) ?h\b", r"\1 heures", text.lower())   # "8h" is how French writes "huit heures"
        text = re.sub(r"\d+", _spell_fr, text.replace("\u2019", "'"))
        return " ".join(re.sub(r"[^a-zàâäçéèêëîïôöùûüÿœæ]+", " ", text).split())
    text = re.sub(r"\d+", _spell, text.lower())
    return " ".join(re.sub(r"[^a-z' ]+", " ", text).split())


def wer(reference: str, hypothesis: str, language: str = "en") -> float:
    import jiwer
    return jiwer.wer(normalise(reference, language), normalise(hypothesis, language))
