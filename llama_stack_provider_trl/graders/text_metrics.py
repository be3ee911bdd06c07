"""The text_similarity metrics in plain Python, each a score in [0, 1] of a candidate against one reference.

- ``fuzzy_match``: the normalized Indel similarity of the two strings (rapidfuzz's ``fuzz.ratio`` / 100).
- ``bleu``: sentence BLEU-4, uniform weights, brevity penalty, no smoothing (NLTK's ``sentence_bleu``).
- ``gleu``: sentence GLEU over 1- to 4-grams (NLTK's ``sentence_gleu``).
- ``meteor``: METEOR with exact word matches only (NLTK's ``meteor_score`` without its WordNet stems and
  synonyms, which need a data download this provider does not make).
- ``rouge_1`` … ``rouge_5``, ``rouge_l``: ROUGE-N and ROUGE-L F-measures on lowercased alphanumeric tokens
  (Google's ``rouge_score`` without stemming).
BLEU, GLEU and METEOR read words and punctuation marks as tokens, case kept for BLEU and GLEU (NLTK leaves
tokenization to the caller), lowercased for METEOR (as NLTK does).
"""

import itertools
import math
import re
from collections import Counter
from collections.abc import Callable, Hashable, Sequence

_WORDS = re.compile(r"\w+|[^\w\s]")
_ROUGE_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def words(text: str) -> list[str]:
    return _WORDS.findall(text)


def rouge_tokens(text: str) -> list[str]:
    return _ROUGE_NON_ALNUM.sub(" ", text.lower()).split()


def lcs_length(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """The longest common subsequence's length, bit-parallel (Allison and Dix): one big-int step per item of b."""
    if not a or not b:
        return 0
    masks: dict[Hashable, int] = {}
    for position, value in enumerate(a):
        masks[value] = masks.get(value, 0) | (1 << position)
    full = (1 << len(a)) - 1
    row = full
    for value in b:
        matches = row & masks.get(value, 0)
        row = ((row + matches) | (row - matches)) & full
    return len(a) - row.bit_count()


def fuzzy_match(candidate: str, reference: str) -> float:
    if not candidate and not reference:
        return 1.0
    return 2 * lcs_length(candidate, reference) / (len(candidate) + len(reference))


def _ngrams(tokens: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def bleu(candidate: str, reference: str, max_n: int = 4) -> float:
    hypothesis, ref = words(candidate), words(reference)
    if not hypothesis:
        return 0.0
    log_precision = 0.0
    for n in range(1, max_n + 1):
        counts = _ngrams(hypothesis, n)
        total = sum(counts.values())
        matched = sum((counts & _ngrams(ref, n)).values())
        if matched == 0:
            return 0.0  # NLTK without smoothing: any order without a match gives 0
        log_precision += math.log(matched / total) / max_n
    brevity = 1.0 if len(hypothesis) > len(ref) else math.exp(1 - len(ref) / len(hypothesis))
    return brevity * math.exp(log_precision)


def gleu(candidate: str, reference: str, min_n: int = 1, max_n: int = 4) -> float:
    hypothesis, ref = words(candidate), words(reference)
    hyp_grams: Counter[tuple[str, ...]] = Counter()
    ref_grams: Counter[tuple[str, ...]] = Counter()
    for n in range(min_n, max_n + 1):
        hyp_grams += _ngrams(hypothesis, n)
        ref_grams += _ngrams(ref, n)
    hyp_total, ref_total = sum(hyp_grams.values()), sum(ref_grams.values())
    if not hyp_total or not ref_total:
        return 0.0
    matched = sum((hyp_grams & ref_grams).values())
    return min(matched / hyp_total, matched / ref_total)


def meteor(candidate: str, reference: str, alpha: float = 0.9, beta: float = 3.0, gamma: float = 0.5) -> float:
    hypothesis = [token.lower() for token in words(candidate)]
    ref = [token.lower() for token in words(reference)]
    if not hypothesis or not ref:
        return 0.0
    # NLTK's exact stage: from the hypothesis's end, each word takes the last unused equal reference word.
    positions: dict[str, list[int]] = {}
    for r, token in enumerate(ref):
        positions.setdefault(token, []).append(r)
    pairs: list[tuple[int, int]] = []
    for h in range(len(hypothesis) - 1, -1, -1):
        free = positions.get(hypothesis[h])
        if free:
            pairs.append((h, free.pop()))
    matches = len(pairs)
    if matches == 0:
        return 0.0
    precision, recall = matches / len(hypothesis), matches / len(ref)
    fmean = precision * recall / (alpha * precision + (1 - alpha) * recall)
    chunks = 1
    pairs.sort()
    for (h1, r1), (h2, r2) in itertools.pairwise(pairs):
        if not (h2 == h1 + 1 and r2 == r1 + 1):
            chunks += 1
    fragmentation = chunks / matches
    return (1 - gamma * fragmentation**beta) * fmean


def _f_measure(matched: int, candidate_total: int, reference_total: int) -> float:
    if matched == 0:
        return 0.0
    precision, recall = matched / candidate_total, matched / reference_total
    return 2 * precision * recall / (precision + recall)


def rouge_n(candidate: str, reference: str, n: int) -> float:
    hyp, ref = _ngrams(rouge_tokens(candidate), n), _ngrams(rouge_tokens(reference), n)
    return _f_measure(sum((hyp & ref).values()), sum(hyp.values()), sum(ref.values()))


def rouge_l(candidate: str, reference: str) -> float:
    hyp, ref = rouge_tokens(candidate), rouge_tokens(reference)
    return _f_measure(lcs_length(ref, hyp), len(hyp), len(ref))


def _rouge(n: int) -> Callable[[str, str], float]:
    return lambda candidate, reference: rouge_n(candidate, reference, n)


# Every metric but cosine (an embeddings model's, see model_client.py), by OpenAI's evaluation_metric name.
METRICS: dict[str, Callable[[str, str], float]] = {
    "fuzzy_match": fuzzy_match,
    "bleu": bleu,
    "gleu": gleu,
    "meteor": meteor,
    **{f"rouge_{n}": _rouge(n) for n in range(1, 6)},
    "rouge_l": rouge_l,
}
