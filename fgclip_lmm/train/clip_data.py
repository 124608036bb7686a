"""Builds the FG-CLIP training and periodic-evaluation data for the trainer from the [data] readers (FG-CLIP 2: the
same readers with NaFlex images and collator, see `clip_fgclip2.py`)."""
from __future__ import annotations

from dataclasses import dataclass

from torch.utils.data import DataLoader

from ..data.bad_records import BadRecordPolicy
from ..data.collate import CollatorConfig, FGClipCollator
from ..data.finehard import FineHardConfig, FineHardDataset
from ..data.pairs import LongCaptionPairsDataset, PairsConfig
from ..data.sampler import ResumableSampler
from .clip_config import ClipTrainConfig


@dataclass
class ClipData:
    dataset: object
    sampler: ResumableSampler
    collator: FGClipCollator
    policy: BadRecordPolicy

    def loader(self, micro_batch: int, num_workers: int) -> DataLoader:
        if hasattr(self.dataset, "set_epoch"):  # per-sample RNG (box phrase choice) is seeded by epoch
            self.dataset.set_epoch(self.sampler.epoch)
        return DataLoader(self.dataset, batch_size=micro_batch, sampler=self.sampler, collate_fn=self.collator,
                          num_workers=num_workers, drop_last=True, persistent_workers=False,
                          pin_memory=False)


def build_clip_data(cfg: ClipTrainConfig, tokenizer, model_config, rank: int, world: int,
                    policy: BadRecordPolicy) -> ClipData:
    """`policy` (from `cfg.on_bad_record`) is made by the caller, so its report outlives a reader that fails."""
    common = dict(data_path=cfg.data_path, image_root=cfg.image_root or None,
                  strip_prefixes=tuple(cfg.strip_prefixes), short_caption_prefix=cfg.short_prefix,
                  image_size=cfg.image_size, on_bad_record=cfg.on_bad_record,
                  allow_paths_outside_root=cfg.allow_paths_outside_root)
    if cfg.reader == "finehard":
        dataset = FineHardDataset(FineHardConfig(max_boxes=cfg.max_boxes, seed=cfg.seed,
                                                 num_hard_negatives=model_config.hard_negatives_per_box, **common),
                                  policy)
    else:
        dataset = LongCaptionPairsDataset(PairsConfig(**common), policy)
    # drop_last keeps every rank at the same count, which the gathered global loss needs
    sampler = ResumableSampler(len(dataset), seed=cfg.seed, shuffle=True, num_replicas=world, rank=rank,
                               drop_last=True)
    if cfg.model == "fgclip2":
        from .clip_fgclip2 import fgclip2_collator, use_naflex_images

        use_naflex_images(dataset)
        collator = fgclip2_collator(cfg, tokenizer, model_config, 2 if cfg.regional else 1, cfg.truncation,
                                    policy.report)
        return ClipData(dataset, sampler, collator, policy)
    collator = FGClipCollator(tokenizer, CollatorConfig(
        stage=2 if cfg.regional else 1, long_max_length=model_config.long_max_len,
        short_max_length=model_config.short_max_len, num_hard_negatives=model_config.hard_negatives_per_box,
        truncation=cfg.truncation), policy.report)
    return ClipData(dataset, sampler, collator, policy)
