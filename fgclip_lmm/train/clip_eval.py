"""Periodic evaluation during FG-CLIP training: hard-negative accuracy on a FineHARD-format split.

For every box that has negatives, the box's RoIAlign feature must be closer to its own phrase than to its 10
attribute-rewritten negatives (FG-OVD's protocol, chance = 1/11), scored by `eval.clip.metrics.fgovd_scores`, the
kernel `eval-clip --bench fgovd` uses. The synthetic world's val split is the default.
"""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Subset

from ..data.collate import CollatorConfig, FGClipCollator
from ..data.finehard import FineHardConfig, FineHardDataset
from ..eval.clip.metrics import fgovd_scores
from ..model.boxes import packed_rois, roi_features


@torch.no_grad()
def hard_negative_accuracy(model, tokenizer, data_path: str, image_root: str | None, image_size: int,
                           limit: int = 512, batch_size: int = 32) -> dict[str, float]:
    cfg = model.config
    dataset = FineHardDataset(FineHardConfig(data_path=data_path, image_root=image_root, image_size=image_size,
                                             num_hard_negatives=cfg.hard_negatives_per_box, on_bad_record="skip",
                                             max_boxes=cfg.max_boxes_per_image))
    subset = Subset(dataset, range(min(limit, len(dataset))))
    collator = FGClipCollator(tokenizer, CollatorConfig(stage=2, long_max_length=cfg.long_max_len,
                                                        short_max_length=cfg.short_max_len,
                                                        num_hard_negatives=cfg.hard_negatives_per_box,
                                                        truncation="truncate"))
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    correct, total = 0, 0
    for batch in DataLoader(subset, batch_size=batch_size, collate_fn=collator):
        if batch["hard_box_index"].numel() == 0:
            continue
        dense = model.get_image_dense_features(batch["pixel_values"].to(device, dtype))
        region = roi_features(dense, packed_rois(batch["boxes"].to(device), batch["box_counts"].to(device)))
        region = torch.nn.functional.normalize(region[batch["hard_box_index"].to(device)].float(), dim=-1)
        text = torch.nn.functional.normalize(model.get_text_features(batch["hard_input_ids"].to(device)).float(),
                                             dim=-1)
        # each box's group of 1 + k rows (positive first) is one FG-OVD row, scored like eval-clip scores it
        rows = torch.arange(text.shape[0], device=device).view(region.shape[0], -1)
        hits, _ = fgovd_scores(region, text, rows)
        correct += int(hits.sum())
        total += region.shape[0]
    if total == 0:
        raise ValueError(f"{data_path}: no box with hard negatives among the first {limit} records")
    return {"hard_neg_acc": correct / total, "hard_neg_boxes": float(total),
            "chance": 1.0 / (1 + cfg.hard_negatives_per_box)}
