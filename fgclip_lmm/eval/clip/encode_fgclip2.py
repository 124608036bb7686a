"""The encoder benchmarks' feature extraction for FG-CLIP 2, with the official evaluation protocol.

- Images: NaFlex, as the official scripts run them: each image gets its own patch budget (`dynamic_max_patches`:
  the smallest of 128 / 256 / 576 / 784 / 1024 patches holding its native grid, `--patch-budgets` to change the
  list), is resized to the largest aspect-preserving grid within it by transformers' NaFlex processor, and images
  of one batch are zero-padded to the longest (padding is masked, so batching changes nothing).
- Boxes: RoIAlign on each image's own (h, w) grid (`naflex_roi_features`), boxes scaled by that grid.
- Texts: padded to exactly 64 (short and box walks) or 196 (long walk) tokens, with the tokenizer's attention mask
  (official evaluation; training passes none). Phrases matched against boxes (FG-OVD expressions, box
  classification prompts) take the box walk (`boxtext_head`), zero-shot prompts and short captions the short walk,
  long captions the long walk.
Everything else (de-duplication, bad-record policy, normalisation) is `ClipEncoder`'s.
"""
from __future__ import annotations

import torch
from torch.nn.functional import normalize

from fgclip_lmm.data.bad_records import BadRecordPolicy
from fgclip_lmm.data.collate_fgclip2 import encode_fixed
from fgclip_lmm.errors import InputError
from fgclip_lmm.model import FGCLIP2Model
from fgclip_lmm.model.naflex import PATCH_BUDGETS, budget_for, make_image_processor, naflex_roi_features

from .encode import ClipEncoder, EncoderConfig, EncodeStats


class FGClip2Encoder(ClipEncoder):
    """Normalised text, image and box features from one FG-CLIP 2 checkpoint (official protocol, see above)."""

    text_protocol = ("texts padded to 64 (short / box walk) or 196 (long walk) tokens with the tokenizer attention "
                     "mask; FG-OVD expressions and box-classification prompts on the box walk")

    def __init__(self, model: FGCLIP2Model, tokenizer, settings: EncoderConfig, policy: BadRecordPolicy):
        if settings.image_size is not None:
            raise InputError("--image-size does not apply to FG-CLIP 2 (NaFlex keeps each image's aspect ratio); "
                             "set the patch budgets with --patch-budgets")
        self.model, self.tokenizer, self.settings, self.policy = model, tokenizer, settings, policy
        self.patch = int(model.config.vision_config.patch_size)
        self.budgets = tuple(sorted(settings.patch_budgets or PATCH_BUDGETS))
        self.processor = make_image_processor(self.patch, self.budgets[-1])
        self.image_size = None
        self.resize = (f"NaFlex: aspect kept, per-image budget from {list(self.budgets)} patches of {self.patch} px "
                       "(official dynamic_max_patches), PIL bilinear, mean/std 0.5")
        self.stats = EncodeStats()

    @property
    def feature_dim(self) -> int:
        return self.model.config.vision_config.hidden_size

    def prepare(self, image) -> dict[str, torch.Tensor]:
        budget = budget_for(*image.size, patch_size=self.patch, budgets=self.budgets)
        out = self.processor(images=[image], max_num_patches=budget, return_tensors="pt")
        return {"pixel_values": out["pixel_values"][0], "pixel_attention_mask": out["pixel_attention_mask"][0].long(),
                "spatial_shapes": out["spatial_shapes"][0].long()}

    def stack(self, items: list[dict]) -> dict[str, torch.Tensor]:
        width = max(item["pixel_values"].shape[0] for item in items)
        pad = [width - item["pixel_values"].shape[0] for item in items]
        return {"pixel_values": torch.stack([torch.nn.functional.pad(i["pixel_values"], (0, 0, 0, p))
                                             for i, p in zip(items, pad, strict=True)]),
                "pixel_attention_mask": torch.stack([torch.nn.functional.pad(i["pixel_attention_mask"], (0, p))
                                                     for i, p in zip(items, pad, strict=True)]),
                "spatial_shapes": torch.stack([i["spatial_shapes"] for i in items])}

    def _to_device(self, batch: dict) -> dict[str, torch.Tensor]:
        device = self.settings.device
        return {"pixel_values": batch["pixel_values"].to(device, self.settings.dtype),
                "pixel_attention_mask": batch["pixel_attention_mask"].to(device),
                "spatial_shapes": batch["spatial_shapes"].to(device)}

    def global_features(self, batch: dict) -> torch.Tensor:
        return self.model.get_image_features(**self._to_device(batch))

    def box_pool(self, batch: dict, rois: torch.Tensor) -> torch.Tensor:
        inputs = self._to_device(batch)
        dense = self.model.get_image_dense_features(**inputs)
        return naflex_roi_features(dense, inputs["spatial_shapes"], rois.to(dense.device))

    @torch.inference_mode()
    def text_features(self, texts: list[str], long: bool, field_name: str, region: bool = False) -> torch.Tensor:
        """(N, D) normalised features of distinct `texts` on the long, box (`region`) or short walk."""
        cfg = self.model.config
        walk = "long" if long else "box" if region else "short"
        length = cfg.longtext_len if long else cfg.short_max_len
        out = torch.empty(len(texts), cfg.text_config.projection_size)
        truncated, step = 0, self.settings.text_batch_size
        with self._bar(len(texts), f"texts ({field_name}, {walk} walk)") as bar:
            for start in range(0, len(texts), step):
                chunk = texts[start:start + step]
                ids, mask, cut = encode_fixed(self.tokenizer, chunk, length, field_name, self.settings.truncation,
                                              [f"{field_name} {t[:60]!r}" for t in chunk])
                truncated += cut
                device = self.settings.device
                feats = self.model.get_text_features(ids.to(device), attention_mask=mask.to(device), walk_type=walk)
                out[start:start + len(chunk)] = normalize(feats.float(), dim=-1).cpu()
                bar.update(len(chunk))
        self.stats.unique_texts[field_name] = self.stats.unique_texts.get(field_name, 0) + len(texts)
        self.stats.truncated_texts[field_name] = self.stats.truncated_texts.get(field_name, 0) + truncated
        return out
