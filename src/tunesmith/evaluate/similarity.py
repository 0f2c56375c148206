"""Text similarity metrics for the text_similarity grader.

Written here rather than imported: ROUGE-L is one longest-common-subsequence over tokens
and token F1 is a bag-of-words overlap (SQuAD's definition); the packages that ship them
bring NLTK and other heavy dependencies for a few lines of arithmetic.
"""

from __future__ import annotations

import difflib
import re
import string
from collections import Counter

_WORD = re.compile(r"\w+", re.UNICODE)
_ARTICLES = {"a", "an", "the"}


def tokens(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _normalised(text: str) -> list[str]:
    """SQuAD normalisation: lower case, no punctuation, no articles."""
    text = "".join(ch for ch in text.lower() if ch not in string.punctuation)
    return [w for w in text.split() if w not in _ARTICLES]


def token_f1(candidate: str, reference: str) -> float:
    cand, ref = _normalised(candidate), _normalised(reference)
    if not cand or not ref:
        return float(cand == ref)
    common = sum((Counter(cand) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(cand), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def _lcs(a: list[str], b: list[str]) -> int:
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F-measure (beta = 1) over lower-cased word tokens."""
    cand, ref = tokens(candidate), tokens(reference)
    if not cand or not ref:
        return float(cand == ref)
    common = _lcs(cand, ref)
    if common == 0:
        return 0.0
    precision, recall = common / len(cand), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def rouge_n(candidate: str, reference: str, n: int) -> float:
    """ROUGE-N F-measure over word n-grams."""
    def grams(words: list[str]) -> Counter[tuple[str, ...]]:
        return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))

    cand, ref = grams(tokens(candidate)), grams(tokens(reference))
    if not cand or not ref:
        return float(not cand and not ref)
    common = sum((cand & ref).values())
    if common == 0:
        return 0.0
    precision, recall = common / sum(cand.values()), common / sum(ref.values())
    return 2 * precision * recall / (precision + recall)


def fuzzy_ratio(candidate: str, reference: str) -> float:
    """Character-level similarity in [0, 1] (difflib's ratio), case-insensitive."""
    return difflib.SequenceMatcher(None, candidate.lower().strip(), reference.lower().strip()).ratio()


METRICS = {
    "fuzzy_match": fuzzy_ratio,
    "token_f1": token_f1,
    "rouge_l": rouge_l,
    "rouge_1": lambda c, r: rouge_n(c, r, 1),
    "rouge_2": lambda c, r: rouge_n(c, r, 2),
}
