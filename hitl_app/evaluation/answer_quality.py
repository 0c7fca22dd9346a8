"""How well-formed a set of generated answers is, whatever they say: loops, repetition, endings.

Pure functions over text, so the promotion gate, the teaching benchmark and the tests all judge
answers the same way. A *loop* is the signature of a degenerate answer: the same phrase or line
again and again ("Urgent care is recommended. Urgent care is recommended. ..."), usually until
the token limit. Words are lower-cased runs of letters and digits, so punctuation and line breaks
do not hide a repeat.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

_WORD = re.compile(r"[^\W_]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")

LOOP_NGRAM = 4  # words per phrase
LOOP_REPEATS = 3  # a phrase, sentence or line this many times in one answer is a loop
LOOP_MIN_SENTENCE_WORDS = 3  # sentences and lines shorter than this are not counted


def words(text: str) -> list[str]:
    """The lower-cased words of ``text``."""
    return _WORD.findall(text.lower())


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    """The ``n``-grams of ``tokens`` in order (none when there are fewer than ``n``)."""
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def repeated_ngram_rate(text: str, n: int = LOOP_NGRAM) -> float:
    """Share of the word ``n``-grams of ``text`` that already occurred earlier in it.

    0 for text without repeats (or shorter than ``n`` words); a sentence said k times in a row
    gives about (k - 1) / k.
    """
    grams = ngrams(words(text), n)
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def has_loop(text: str) -> bool:
    """Whether ``text`` repeats itself the way a degenerate answer does.

    True when a phrase of ``LOOP_NGRAM`` words, or a sentence or line of at least
    ``LOOP_MIN_SENTENCE_WORDS`` words, occurs ``LOOP_REPEATS`` times or more. A line said twice
    (a closing line doubled, say) is a repetition that ``repeated_ngram_rate`` measures, not a loop.
    """
    counts = Counter(ngrams(words(text), LOOP_NGRAM))
    if counts and max(counts.values()) >= LOOP_REPEATS:
        return True
    sentences = [" ".join(words(s)) for s in _SENTENCE_END.split(text)]
    sentences = [s for s in sentences if len(s.split()) >= LOOP_MIN_SENTENCE_WORDS]
    return bool(sentences) and max(Counter(sentences).values()) >= LOOP_REPEATS


def distinct_n(texts: Sequence[str], n: int = 2) -> float:
    """Distinct word ``n``-grams over all ``n``-grams of ``texts`` (1.0 when there are none)."""
    grams = [g for t in texts for g in ngrams(words(t), n)]
    return len(set(grams)) / len(grams) if grams else 1.0


@dataclass(frozen=True)
class AnswerQuality:
    """The form of a set of answers.

    Args:
        answers: how many answers were judged.
        loop_rate: share of answers with a loop (``has_loop``).
        repeated_ngram_rate: mean over answers of ``repeated_ngram_rate``.
        distinct_2: ``distinct_n`` over all answers, n = 2.
        finished_rate: share of answers that ended (an end of turn) before the token limit.
    """

    answers: int
    loop_rate: float
    repeated_ngram_rate: float
    distinct_2: float
    finished_rate: float


def answer_quality(texts: Sequence[str], finished: Sequence[bool]) -> AnswerQuality:
    """Judge the form of ``texts``; ``finished[i]`` says whether answer i ended before the limit.

    Raises:
        ValueError: no answers, or ``finished`` does not give one flag per answer.
    """
    if not texts:
        raise ValueError("no answers to judge")
    if len(finished) != len(texts):
        raise ValueError(f"{len(texts)} answers but {len(finished)} finished flags; give one per answer")
    n = len(texts)
    return AnswerQuality(
        answers=n,
        loop_rate=sum(has_loop(t) for t in texts) / n,
        repeated_ngram_rate=sum(repeated_ngram_rate(t) for t in texts) / n,
        distinct_2=distinct_n(texts, 2),
        finished_rate=sum(bool(f) for f in finished) / n,
    )
