"""Per-image cache of projected vision features for the lmms-eval plugin.

POPE asks about 18 questions per COCO image and the attribute tasks ask several per synthetic image, so the
vision tower + projector run once per distinct image within an evaluation run. Images are keyed by a hash of their
decoded pixels (mode, size and bytes), so the same picture stored in two rows or two tasks is one entry. The
cache is a bounded LRU (`max_items`); the plugin orders requests by image so that a small bound suffices.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import torch
import xxhash
from PIL import Image


def image_key(image: Image.Image) -> str:
    """A content hash of a PIL image: identical pixels (and mode/size) give the same key."""
    # xxh3 (a dependency of `datasets`) is ~7x faster than blake2b here; this key is on the per-question path
    digest = xxhash.xxh3_128()
    digest.update(f"{image.mode}:{image.width}x{image.height}:".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


@dataclass
class CacheStats:
    """Counters for one run: `misses` is the number of images sent through the vision tower."""

    hits: int = 0
    misses: int = 0
    evictions: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "evictions": self.evictions}


@dataclass
class FeatureCache:
    """LRU map image key -> (num_image_tokens, hidden) tensor of projected features."""

    max_items: int = 1024
    stats: CacheStats = field(default_factory=CacheStats)
    _items: OrderedDict[str, torch.Tensor] = field(default_factory=OrderedDict)

    def __post_init__(self) -> None:
        if self.max_items < 1:
            raise ValueError(f"feature cache size must be >= 1, got {self.max_items}")

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str) -> torch.Tensor | None:
        """The cached features (counted as a hit), or None when absent (the caller computes and `put`s them)."""
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
            self.stats.hits += 1
        return value

    def put(self, key: str, features: torch.Tensor) -> None:
        """Store freshly computed features (counts a miss) and evict the least recently used beyond the bound."""
        self._items[key] = features
        self._items.move_to_end(key)
        self.stats.misses += 1
        while len(self._items) > self.max_items:
            self._items.popitem(last=False)
            self.stats.evictions += 1

    def clear(self, reset_stats: bool = True) -> None:
        """Drop all features; reset the counters too unless `reset_stats=False` (end of a run, stats kept)."""
        self._items.clear()
        if reset_stats:
            self.stats = CacheStats()
