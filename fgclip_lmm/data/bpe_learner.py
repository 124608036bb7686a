"""A deterministic BPE merge learner for the project's tokenizers.

The Rust `tokenizers.trainers.BpeTrainer` breaks ties between equally frequent pairs by symbol ids that it assigns
in hash-map order, so two runs on the same corpus can learn different merges. This learner orders candidates by
(count descending, pair lexicographically ascending), which makes the learned merges a pure function of the
word counts. The words themselves still come from the `tokenizers` normalizer / pre-tokenizer of the final
tokenizer, so training and encoding see identical pieces.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable

Pair = tuple[str, str]


def learn_merges(
    word_counts: dict[str, int],
    split_word: Callable[[str], list[str]],
    num_merges: int,
    min_frequency: int = 2,
) -> list[Pair]:
    """Learn up to `num_merges` merges over `word_counts`, each word split into initial symbols by `split_word`.

    Stops early when no pair occurs at least `min_frequency` times (weighted by word count).
    """
    words = [split_word(w) for w in sorted(word_counts)]
    freqs = [word_counts[w] for w in sorted(word_counts)]
    pair_counts: Counter[Pair] = Counter()
    pair_words: defaultdict[Pair, set[int]] = defaultdict(set)
    for index, (symbols, freq) in enumerate(zip(words, freqs, strict=True)):
        for pair in itertools.pairwise(symbols):
            pair_counts[pair] += freq
            pair_words[pair].add(index)
    heap = [(-count, pair) for pair, count in pair_counts.items()]
    heapq.heapify(heap)
    merges: list[Pair] = []
    while heap and len(merges) < num_merges:
        neg_count, pair = heapq.heappop(heap)
        if pair_counts.get(pair, 0) != -neg_count:
            continue  # stale entry; the current count was pushed again when it changed
        if -neg_count < min_frequency:
            break
        merges.append(pair)
        changed: set[Pair] = set()
        for index in sorted(pair_words.pop(pair, ())):
            symbols, freq = words[index], freqs[index]
            for old in itertools.pairwise(symbols):
                pair_counts[old] -= freq
                changed.add(old)
            words[index] = symbols = _apply_merge(symbols, pair)
            for new in itertools.pairwise(symbols):
                pair_counts[new] += freq
                pair_words[new].add(index)
                changed.add(new)
        for candidate in changed:
            count = pair_counts[candidate]
            if count <= 0:
                del pair_counts[candidate]
            elif candidate != pair:
                heapq.heappush(heap, (-count, candidate))
        pair_counts.pop(pair, None)
    return merges


def _apply_merge(symbols: list[str], pair: Pair) -> list[str]:
    first, second = pair
    out: list[str] = []
    i = 0
    while i < len(symbols):
        if i + 1 < len(symbols) and symbols[i] == first and symbols[i + 1] == second:
            out.append(first + second)
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return out


def count_words(texts: Iterable[str], to_words: Callable[[str], list[str]]) -> dict[str, int]:
    """Word frequencies of a corpus, words as produced by a tokenizer's normalizer + pre-tokenizer.

    Each distinct text is split once and weighted by its frequency (world corpora repeat phrases a lot).
    """
    counts: Counter[str] = Counter()
    for text, repeats in Counter(texts).items():
        for word in to_words(text):
            counts[word] += repeats
    return dict(counts)
