"""Model size presets and synthetic FG-CLIP batches shared by the benchmark scripts.

Sizes (random init from configs, nothing is downloaded):

| preset    | vision tower                       | text tower                      | projection |
|-----------|------------------------------------|---------------------------------|------------|
| `tiny`    | width 64, 2 layers, 64 px / 16 px  | width 64, 2 layers, vocab 512   | 32         |
| `b16`     | ViT-B/16 @224 (768, 12 layers)     | 512 wide, 12 layers, vocab 49408 | 512        |
| `l14_336` | ViT-L/14 @336 (1024, 24 layers)    | 768 wide, 12 layers, vocab 49408 | 768        |
| `w256`    | width 256, 4 layers, 224 px / 16 px | width 256, 4 layers, vocab 49408 | 256        |
| `mid336`  | width 384, 6 layers, 336 px / 14 px (24x24 patches) | (token text tower) | 384 |

`fgclip_batch` builds a batch in the exact `fgclip_lmm.data.collate` contract (keys, dtypes, packing of boxes and
hard negatives: each hard box's positive phrase is its box phrase again, as FineHARD's collator produces it) from
random token ids, so a real-size batch costs no tokenisation. Text lengths (`lengths=`):
* `full`: every row full length (bos ... eos, no padding), the worst case the collator can produce and the shape
  of the paper's compute table (docs/model.md, "Compute per step");
* `world`: per-row lengths drawn from `WORLD_LENGTHS`, the ranges measured on the synthetic world's FineHARD
  files with its CLIP tokenizer (`fgclip-lmm synth`, seed 0; medians long 79, short 13, short_expr 6, long_expr
  16, negatives 6 tokens), each group padded with eos to its longest row as the collator does; box phrases are
  short_expr or long_expr (50/50, official), hard groups are short_expr + 10 negatives.
"""
from __future__ import annotations

from pathlib import Path

import common  # noqa: F401  (puts the repository root on sys.path)
import torch
from transformers import CLIPTextConfig, CLIPVisionConfig

from fgclip_lmm.model import FGCLIPConfig
from fgclip_lmm.testing import write_clip_dir
from fgclip_lmm.train.flops import clip_tower_flops


def _sizes(config: FGCLIPConfig) -> dict:
    """The preset entry of a config: the vision and text tower shapes and the projection width."""
    keys = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
    vision, text = config.vision_config, config.text_config
    return {"vision": {**{k: getattr(vision, k) for k in keys}, "image_size": vision.image_size,
                       "patch_size": vision.patch_size},
            "text": {**{k: getattr(text, k) for k in keys}, "vocab_size": text.vocab_size},
            "projection_dim": config.projection_dim}


CLIP_SIZES = {
    # the project's one tiny CLIP (`FGCLIPConfig.tiny`) at the benchmarks' width and resolution
    "tiny": _sizes(FGCLIPConfig.tiny(width=64, image_size=64, patch_size=16, projection_dim=32)),
    "b16": {"vision": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                       "num_attention_heads": 12,
                            "image_size": 224, "patch_size": 16},
                "text": {"hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12,
                         "num_attention_heads": 8,
                          "vocab_size": 49408},
                "projection_dim": 512},
    "w256": {"vision": {"hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 4, "num_attention_heads": 4,
                         "image_size": 224, "patch_size": 16},
             "text": {"hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 4, "num_attention_heads": 4,
                      "vocab_size": 49408},
             "projection_dim": 256},
    "mid336": {"vision": {"hidden_size": 384, "intermediate_size": 1536, "num_hidden_layers": 6,
                           "num_attention_heads": 6, "image_size": 336, "patch_size": 14},
               "text": {"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 1, "num_attention_heads": 2,
                        "vocab_size": 512},
               "projection_dim": 384},
    "l14_336": {"vision": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                                "num_attention_heads": 16, "image_size": 336, "patch_size": 14},
                    "text": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                             "num_attention_heads": 12,
                              "vocab_size": 49408},
                    "projection_dim": 768},
}
SIZES = tuple(CLIP_SIZES)
# Inclusive token-length ranges (bos and eos included) of the synthetic world's texts (see the module docstring).
WORLD_LENGTHS = {"long": (25, 133), "short": (5, 21), "short_expr": (5, 8), "long_expr": (14, 20), "negative": (5, 8)}
LENGTH_PROFILES = ("full", "world")


def vision_config(size: str) -> CLIPVisionConfig:
    spec = CLIP_SIZES[size]
    return CLIPVisionConfig(projection_dim=spec["projection_dim"], **spec["vision"])


def write_clip_checkpoint(size: str, out: Path, device: torch.device | str = "cpu", seed: int = 0) -> Path:
    """A random full `CLIPModel` directory (preset vision tower, a token text tower) that every tower loader takes."""
    return write_clip_dir(out, vision_config(size), CLIP_SIZES[size]["projection_dim"], seed, device)


def fgclip_config(size: str, **overrides) -> FGCLIPConfig:
    """An `FGCLIPConfig` of the preset (CLIP token-id layout: bos = vocab-2, eos = pad = vocab-1)."""
    spec = CLIP_SIZES[size]
    vocab = spec["text"]["vocab_size"]
    text = CLIPTextConfig(max_position_embeddings=77, bos_token_id=vocab - 2, eos_token_id=vocab - 1,
                          pad_token_id=vocab - 1, projection_dim=spec["projection_dim"], **spec["text"])
    kwargs = {"text_config": text.to_dict(), "vision_config": vision_config(size).to_dict(),
                  "projection_dim": spec["projection_dim"], "logit_scale_init_value": 4.6052}
    kwargs.update(overrides)
    return FGCLIPConfig(**kwargs)


def _texts(rows: int, length: int, config: FGCLIPConfig, gen: torch.Generator) -> torch.Tensor:
    t = config.text_config
    ids = torch.randint(0, t.vocab_size - 2, (rows, length), generator=gen)
    if length:
        ids[:, 0] = t.bos_token_id
        ids[:, -1] = t.eos_token_id
    return ids


def _ragged(lengths: torch.Tensor, config: FGCLIPConfig, gen: torch.Generator) -> torch.Tensor:
    """Rows of the given true lengths (bos, random tokens, eos), eos-padded to the longest, like the collator's."""
    t = config.text_config
    width = int(lengths.max()) if lengths.numel() else 2
    ids = torch.randint(0, t.vocab_size - 2, (lengths.numel(), width), generator=gen)
    ids[:, 0] = t.bos_token_id
    ids[torch.arange(width)[None] >= lengths[:, None] - 1] = t.eos_token_id
    return ids


def _draw(kind: str, n: int, gen: torch.Generator) -> torch.Tensor:
    low, high = WORLD_LENGTHS[kind]
    return torch.randint(low, high + 1, (n,), generator=gen)


def _pad_to(rows: torch.Tensor, width: int, pad_id: int) -> torch.Tensor:
    return torch.nn.functional.pad(rows, (0, width - rows.shape[1]), value=pad_id)


def fgclip_batch(config: FGCLIPConfig, batch_size: int, stage: int = 2, boxes_per_image: int = 4,
                 negatives: int | None = None, long_len: int = 248, short_len: int = 77, box_len: int = 77,
                 seed: int = 0, device: torch.device | str = "cpu", lengths: str = "full") -> dict[str, torch.Tensor]:
    """A synthetic collated batch; every box carries hard negatives (`negatives`, default the config's count).

    `lengths="full"` makes every row `long_len` / `short_len` / `box_len` tokens; `"world"` draws them per row
    (module docstring) and ignores those three.
    """
    negatives = config.hard_negatives_per_box if negatives is None else negatives
    if negatives != config.hard_negatives_per_box:
        raise ValueError(f"negatives={negatives} but config.hard_negatives_per_box={config.hard_negatives_per_box}")
    if lengths not in LENGTH_PROFILES:
        raise ValueError(f"lengths={lengths!r}; known: {', '.join(LENGTH_PROFILES)}")
    gen = torch.Generator().manual_seed(seed)
    size = config.vision_config.image_size
    world = lengths == "world"
    k = batch_size * boxes_per_image
    batch = {
        "pixel_values": torch.randn(batch_size, 3, size, size, generator=gen),
        "long_input_ids": _ragged(_draw("long", batch_size, gen), config, gen) if world
        else _texts(batch_size, long_len, config, gen),
        "short_input_ids": _ragged(_draw("short", batch_size, gen), config, gen) if world
        else _texts(batch_size, short_len, config, gen),
    }
    if stage == 2:
        corner = torch.rand(k, 2, generator=gen) * 0.5
        extent = 0.1 + torch.rand(k, 2, generator=gen) * 0.4
        if world:
            pad = config.text_config.eos_token_id
            short_expr = _ragged(_draw("short_expr", k, gen), config, gen)
            long_expr = _ragged(_draw("long_expr", k, gen), config, gen)
            width = max(short_expr.shape[1], long_expr.shape[1])
            use_long = torch.rand(k, generator=gen) < 0.5
            box_text = torch.where(use_long[:, None], _pad_to(long_expr, width, pad), _pad_to(short_expr, width, pad))
            negs = _ragged(_draw("negative", k * negatives, gen), config, gen)
            width = max(short_expr.shape[1], negs.shape[1])
            hard = torch.cat([_pad_to(short_expr, width, pad).unsqueeze(1),
                              _pad_to(negs, width, pad).view(k, negatives, width)], dim=1).reshape(-1, width)
            width = int((box_text != pad).sum(1).max()) + 1  # the collator pads each group to its longest row
            box_text = box_text[:, :width]
            width = int((hard != pad).sum(1).max()) + 1
            hard = hard[:, :width]
        else:
            box_text = _texts(k, box_len, config, gen)
            hard = torch.cat([box_text.unsqueeze(1), _texts(k * negatives, box_len, config, gen).view(k, negatives,
                              box_len)], dim=1).reshape(k * (1 + negatives), box_len)
        batch.update(
            box_counts=torch.full((batch_size,), boxes_per_image, dtype=torch.long),
            boxes=torch.cat([corner, corner + extent], dim=1),
            box_input_ids=box_text,
            hard_box_index=torch.arange(k, dtype=torch.long),
            hard_input_ids=hard,
            hard_counts=torch.full((batch_size,), boxes_per_image, dtype=torch.long),
        )
    return {key: value.to(device) for key, value in batch.items()}


def short_path_groups(batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """The short-path text groups a stage-2 forward encodes: short captions, box phrases, hard phrases."""
    return [batch["short_input_ids"]] + [batch[k] for k in ("box_input_ids", "hard_input_ids") if k in batch]


def short_path_rows(batch: dict[str, torch.Tensor], pad_id: int) -> tuple[int, int, int]:
    """(all short-path rows, distinct rows, padded width) of the texts `_short_texts_once` encodes."""
    groups = short_path_groups(batch)
    width = max(g.shape[1] for g in groups)
    pad = torch.nn.functional.pad
    rows = torch.cat([pad(g, (0, width - g.shape[1]), value=pad_id) for g in groups])
    return rows.shape[0], int(torch.unique(rows, dim=0).shape[0]), width


def fgclip_step_flops(config: FGCLIPConfig, batch: dict[str, torch.Tensor]) -> dict[str, float]:
    """Matmul FLOPs of one training step as executed (distinct short-path rows at their padded width).

    Counts the vision tower, the long text pass and the short-path text pass (`clip_tower_flops`), times 3 for
    forward + backward (`train_flops`). The dense re-run of the last vision block, the projections and the
    losses are left out (under 1% at the real sizes).
    """
    from fgclip_lmm.train.flops import train_flops

    b = batch["pixel_values"].shape[0]
    all_rows, distinct, width = short_path_rows(batch, config.text_config.pad_token_id)
    image = clip_tower_flops(config, image_tokens_batch=b)
    long = clip_tower_flops(config, text_lengths=[(b, batch["long_input_ids"].shape[1])])
    short = clip_tower_flops(config, text_lengths=[(distinct, width)])
    short_all = clip_tower_flops(config, text_lengths=[(all_rows, width)])
    forward = image + long + short
    return {"forward": forward, "train": train_flops(forward), "image_forward": image, "long_text_forward": long,
            "short_text_forward": short, "short_text_forward_all_rows": short_all,
            "text_share": (long + short) / forward if forward else float("nan"),
            "short_rows_all": all_rows, "short_rows_distinct": distinct, "short_width": width}


def collator_reference_batch(batch_size: int = 2, boxes_per_image: int = 2, negatives: int = 3) -> dict:
    """A batch made by the real `FGClipCollator` from tiny synthetic samples (the contract `fgclip_batch` copies)."""
    import tempfile

    from fgclip_lmm.data.collate import CollatorConfig, FGClipCollator
    from fgclip_lmm.data.tokenizers import train_clip_tokenizer

    words = "a photo of red blue green small large circle square star on the left right"
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = train_clip_tokenizer([words] * 3, tmp, vocab_size=700)
    samples = [{
        "record_id": f"synthetic {i}", "pixel_values": torch.zeros(3, 32, 32),
        "long_caption": "a large red circle on the left of a small blue square", "short_caption": "red circle",
        "boxes": torch.tensor([[0.1, 0.1, 0.5, 0.5]] * boxes_per_image),
        "box_texts": [f"red circle {j}" for j in range(boxes_per_image)],
        "hard_box_local": list(range(boxes_per_image)),
        "hard_texts": [t for j in range(boxes_per_image) for t in [f"red circle {j}"] + ["blue star"] * negatives],
    } for i in range(batch_size)]
    return FGClipCollator(tokenizer, CollatorConfig(stage=2, num_hard_negatives=negatives))(samples)


def check_batch_contract(batch: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> None:
    """Raise if `batch` differs from the collator's `reference` in keys, dtypes or ranks, or breaks the packing."""
    if set(batch) != set(reference):
        raise AssertionError(f"keys differ from the collator's: {sorted(set(batch) ^ set(reference))}")
    for key, ref in reference.items():
        if batch[key].dtype != ref.dtype or batch[key].dim() != ref.dim():
            raise AssertionError(f"{key}: {batch[key].dtype}/{batch[key].dim()}-d, collator gives "
                                 f"{ref.dtype}/{ref.dim()}-d")
    k, m = int(batch["box_counts"].sum()), batch["hard_box_index"].shape[0]
    group = batch["hard_input_ids"].shape[0] // max(m, 1)
    if batch["boxes"].shape[0] != k or batch["box_input_ids"].shape[0] != k or int(batch["hard_counts"].sum()) != m:
        raise AssertionError("box / hard counts do not match the packed rows")
    firsts = batch["hard_input_ids"].view(m, group, -1)[:, 0] if m else None
    if m and not torch.equal(firsts, batch["box_input_ids"][batch["hard_box_index"]]):
        raise AssertionError("the first phrase of each hard group is not the box phrase")
