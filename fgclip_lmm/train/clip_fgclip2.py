"""What `train-clip` does differently for `model: fgclip2`: model building, NaFlex data, FLOPs and periodic eval.

- model: `init_from: tiny` (random `FGCLIP2Config.tiny`, its position grid = image_size / tiny_patch), ours, an
  official `qihoo360/fg-clip2-*` directory or a SigLIP 2 NaFlex checkpoint (initialised as the official
  `from_siglip2`). Fresh runs start both fine-grained temperatures at `fine_grained_logit_scale_init` (4.6052), as
  the official trainer does with its `log_scale`. The model is put in training mode: the CMR margin only moves in
  training mode.
- data: v1's FineHARD / pairs readers with `NaFlexImages`, collated by `FGClip2Collator` (batch budget from
  `patch_budgets`, texts padded to 196 / 64).
"""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Subset

from ..data.collate import CollatorConfig
from ..data.collate_fgclip2 import FGClip2Collator, NaFlexImages
from ..data.finehard import FineHardConfig, FineHardDataset
from ..model import FGCLIP2Config, FGCLIP2Model
from ..model.boxes import packed_rois
from ..model.naflex import naflex_roi_features
from .flops import transformer_forward_flops


def build_fgclip2_model(cfg, tokenizer, resuming: bool) -> FGCLIP2Model:
    if cfg.init_from == "tiny":
        config = FGCLIP2Config.tiny(vocab_size=len(tokenizer), patch_size=cfg.tiny_patch, width=cfg.tiny_width,
                                    layers=cfg.tiny_layers, position_grid=max(1, cfg.image_size // cfg.tiny_patch))
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            setattr(config.text_config, name, getattr(tokenizer, name))
        torch.manual_seed(cfg.seed)
        model = FGCLIP2Model(config)
    else:
        model = FGCLIP2Model.from_pretrained(cfg.init_from)
    if cfg.reset_fine_grained_scales and not resuming:
        with torch.no_grad():
            for scale in (model.logit_scale_finegraind, model.logit_scale_hardneg):
                scale.fill_(model.config.fine_grained_logit_scale_init)
    return model.train()


def fgclip2_collator(cfg, tokenizer, model_config: FGCLIP2Config, stage: int, truncation: str,
                     report=None) -> FGClip2Collator:
    collate = CollatorConfig(stage=stage, long_max_length=model_config.longtext_len,
                             short_max_length=model_config.short_max_len,
                             num_hard_negatives=model_config.hard_negatives_per_box, truncation=truncation)
    return FGClip2Collator(tokenizer, collate, model_config.vision_config.patch_size, cfg.patch_budgets, report)


def use_naflex_images(dataset) -> None:
    """Make a v1 reader return RGB images instead of squashed CLIP tensors (the collator runs the NaFlex processor)."""
    dataset.preprocessor = NaFlexImages(dataset.preprocessor.config.max_pixels)


def fgclip2_batch_flops(config: FGCLIP2Config, batch: dict) -> float:
    """Forward FLOPs of a NaFlex batch: the vision tower over all N (padded) tokens, the dense head's attention
    layer when boxes are present, and every text row at its padded width."""
    v, t = config.vision_config, config.text_config
    b, n = batch["pixel_values"].shape[:2]
    layers = v.num_hidden_layers + (1 if "boxes" in batch else 0)
    flops = b * transformer_forward_flops(layers, v.hidden_size, v.intermediate_size, n)
    for key in ("long_input_ids", "short_input_ids", "box_input_ids", "hard_input_ids"):
        if key in batch:
            rows, length = batch[key].shape
            flops += rows * transformer_forward_flops(t.num_hidden_layers, t.hidden_size, t.intermediate_size, length)
    return flops


@torch.no_grad()
def fgclip2_hard_negative_accuracy(model: FGCLIP2Model, tokenizer, cfg, limit: int = 512,
                                   batch_size: int = 32) -> dict[str, float]:
    """v1's periodic metric for FG-CLIP 2: a box's RoIAlign feature against its phrase and its negatives (box walk,
    texts without attention mask as in training), on NaFlex inputs; chance = 1 / (1 + negatives)."""
    mc = model.config
    dataset = FineHardDataset(FineHardConfig(data_path=cfg.eval_data, image_root=cfg.eval_image_root or None,
                                             num_hard_negatives=mc.hard_negatives_per_box, on_bad_record="skip",
                                             max_boxes=mc.max_boxes_per_image))
    use_naflex_images(dataset)
    collator = fgclip2_collator(cfg, tokenizer, mc, stage=2, truncation="truncate")
    device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    correct, total = 0, 0
    for batch in DataLoader(Subset(dataset, range(min(limit, len(dataset)))), batch_size=batch_size,
                            collate_fn=collator):
        if batch["hard_box_index"].numel() == 0:
            continue
        shapes = batch["spatial_shapes"].to(device)
        dense = model.get_image_dense_features(batch["pixel_values"].to(device, dtype),
                                               batch["pixel_attention_mask"].to(device), shapes)
        region = naflex_roi_features(dense, shapes, packed_rois(batch["boxes"].to(device),
                                                                batch["box_counts"].to(device)))
        region = torch.nn.functional.normalize(region[batch["hard_box_index"].to(device)], dim=-1)
        text = model.get_text_features(batch["hard_input_ids"].to(device), walk_type="box").float()
        text = torch.nn.functional.normalize(text, dim=-1).reshape(region.shape[0], -1, region.shape[-1])
        correct += int((torch.einsum("md,mkd->mk", region, text).argmax(-1) == 0).sum())
        total += region.shape[0]
    if total == 0:
        raise ValueError(f"{cfg.eval_data}: no box with hard negatives among the first {limit} records")
    return {"hard_neg_acc": correct / total, "hard_neg_boxes": float(total),
            "chance": 1.0 / (1 + mc.hard_negatives_per_box)}
