"""Metric kernels for the encoder benchmarks, on L2-normalised features or ready-made score matrices.

Every function is vectorised over samples (chunked over rows where a full matrix would not fit) and breaks
ties the way `argmax` does: among equal scores the lower index ranks first. A rank is 0-based (0 = top-1), so
"hit at k" is `rank < k`. Percentages are in [0, 100].
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

FGOVD_SCALE = 100.0  # FG-OVD and box classification score softmax(100 * cosine)


def _rank_of(scores: torch.Tensor, target: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
    """(c, n) scores, (c,) target column -> (c,) number of columns ranked above the target (argmax order).

    `exclude` (c, n) bool marks columns that never count as beating the target (the other ground truths).
    """
    cols = torch.arange(scores.shape[1], device=scores.device)
    best = scores.gather(1, target[:, None])
    beats = (scores > best) | ((scores == best) & (cols[None] < target[:, None]))
    if exclude is not None:
        beats &= ~exclude
    return beats.sum(1)


def topk_ranks(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(N, C) class scores, (N,) labels -> (N,) 0-based rank of the true class."""
    if scores.ndim != 2 or labels.shape != scores.shape[:1]:
        raise ValueError(f"scores {tuple(scores.shape)} and labels {tuple(labels.shape)} do not match")
    return _rank_of(scores, labels.long())


def recall_at(ranks: torch.Tensor, ks: Sequence[int]) -> dict[str, float]:
    """Percentage of ranks below each k, keyed "R@k"; NaN for an empty set."""
    n = ranks.numel()
    return {f"R@{k}": (float((ranks < k).sum()) * 100.0 / n) if n else float("nan") for k in ks}


def topk_accuracy(ranks: torch.Tensor, ks: Sequence[int], num_classes: int) -> dict[str, float]:
    """Top-k accuracy (%) from true-class ranks, keyed "top{k}", for every k <= num_classes."""
    n = ranks.numel()
    return {f"top{k}": (float((ranks < k).sum()) * 100.0 / n) if n else float("nan") for k in ks if k <= num_classes}


def retrieval_ranks(image_feats: torch.Tensor, text_feats: torch.Tensor, text_to_image: torch.Tensor,
                    chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Ranks for image->text and text->image retrieval with several captions per image.

    `text_to_image[j]` is the image of caption j. Image->text: the rank of the best-ranked of the image's own
    captions among all captions (its other captions do not count against it), so R@k = "any ground-truth caption
    in the top k". Text->image: the rank of the caption's image among all images. Cosine similarity on
    normalised features; the score matrix is built `chunk` rows at a time.
    """
    n_img, n_txt = image_feats.shape[0], text_feats.shape[0]
    t2i = text_to_image.long().to(image_feats.device)
    if t2i.shape != (n_txt,):
        raise ValueError(f"text_to_image has shape {tuple(t2i.shape)}, expected ({n_txt},)")
    if n_txt and (int(t2i.min()) < 0 or int(t2i.max()) >= n_img):
        raise ValueError(f"text_to_image values must lie in [0, {n_img})")
    counts = torch.bincount(t2i, minlength=n_img)
    if n_img and int(counts.min()) == 0:
        raise ValueError(f"image {int((counts == 0).nonzero()[0, 0])} has no caption; every image needs one")
    i2t_ranks, t2i_ranks = [], []
    for start in range(0, n_img, chunk):
        rows = torch.arange(start, min(start + chunk, n_img), device=image_feats.device)
        scores = image_feats[rows] @ text_feats.T
        own = t2i[None, :] == rows[:, None]
        # The best own caption under argmax order: highest score, lowest index among equals.
        masked = scores.masked_fill(~own, float("-inf"))
        target = masked.argmax(1)
        i2t_ranks.append(_rank_of(scores, target, exclude=own))
    for start in range(0, n_txt, chunk):
        rows = torch.arange(start, min(start + chunk, n_txt), device=text_feats.device)
        scores = text_feats[rows] @ image_feats.T
        t2i_ranks.append(_rank_of(scores, t2i[rows]))
    empty = torch.zeros(0, dtype=torch.long)
    return (torch.cat(i2t_ranks) if i2t_ranks else empty), (torch.cat(t2i_ranks) if t2i_ranks else empty)


def class_embeddings(prompt_feats: torch.Tensor, num_classes: int, num_templates: int) -> torch.Tensor:
    """(C*T, P) prompt features, class-major -> (C, P): normalise each prompt, average per class, renormalise."""
    if prompt_feats.shape[0] != num_classes * num_templates:
        raise ValueError(f"{prompt_feats.shape[0]} prompt features for {num_classes} classes x {num_templates} "
                         "templates")
    feats = torch.nn.functional.normalize(prompt_feats.float(), dim=-1)
    return torch.nn.functional.normalize(feats.reshape(num_classes, num_templates, -1).mean(1), dim=-1)


def fgovd_scores(region_feats: torch.Tensor, text_feats: torch.Tensor, text_index: torch.Tensor,
                 scale: float = FGOVD_SCALE) -> tuple[torch.Tensor, torch.Tensor]:
    """FG-OVD: (K, P) normalised box features, (U, P) normalised texts, (K, M) text ids per box.

    Column 0 of `text_index` is the positive, the rest negatives; -1 pads rows with fewer than M-1 negatives.
    Returns (correct (K,) bool: argmax of softmax(scale * cos) is the positive, p_pos (K,) its probability).
    """
    if text_index.ndim != 2 or text_index.shape[0] != region_feats.shape[0]:
        raise ValueError(f"text_index {tuple(text_index.shape)} does not match {region_feats.shape[0]} boxes")
    if text_index.numel() and bool((text_index[:, 0] < 0).any()):
        raise ValueError("every FG-OVD row needs its positive text in column 0")
    valid = text_index >= 0
    texts = text_feats[text_index.clamp(min=0)]  # (K, M, P)
    logits = scale * torch.einsum("kp,kmp->km", region_feats.float(), texts.float())
    logits = logits.masked_fill(~valid, float("-inf"))
    prob = logits.softmax(-1)
    correct = _rank_of(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device)) == 0
    return correct, prob[:, 0]
