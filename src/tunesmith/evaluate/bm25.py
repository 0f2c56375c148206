"""BM25 ranking for the retrieval baseline: the k training examples most like a question.

Written by hand: Okapi BM25 is about thirty lines, and a search-engine dependency would be
far larger than the feature it serves.
"""

from __future__ import annotations

import math
from collections import Counter

from tunesmith.evaluate.similarity import tokens


class BM25:
    def __init__(self, documents: list[str], k1: float = 1.5, b: float = 0.75):
        self.k1, self.b = k1, b
        self.docs = [Counter(tokens(d)) for d in documents]
        self.lengths = [sum(d.values()) for d in self.docs]
        self.average = sum(self.lengths) / max(len(self.docs), 1) or 1.0
        frequency: Counter[str] = Counter()
        for doc in self.docs:
            frequency.update(doc.keys())
        count = len(self.docs)
        # The "+1" form of IDF keeps weights positive for terms found in most documents.
        self.idf = {term: math.log(1 + (count - n + 0.5) / (n + 0.5)) for term, n in frequency.items()}

    def scores(self, query: str) -> list[float]:
        terms = [t for t in set(tokens(query)) if t in self.idf]
        out = []
        for doc, length in zip(self.docs, self.lengths, strict=True):
            norm = self.k1 * (1 - self.b + self.b * length / self.average)
            out.append(sum(self.idf[t] * doc[t] * (self.k1 + 1) / (doc[t] + norm) for t in terms if t in doc))
        return out

    def top(self, query: str, k: int) -> list[int]:
        """Indices of the k best documents, best first (ties keep document order)."""
        scores = self.scores(query)
        return sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:k]
