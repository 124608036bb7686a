"""Tiny FG-CLIP 2 builders: models from `FGCLIP2Config.tiny`, NaFlex batches with mixed grids, official-format dirs."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from fgclip_lmm.model import FGCLIP2Config, FGCLIP2Model


def tiny_model(seed: int = 0, **overrides) -> FGCLIP2Model:
    torch.manual_seed(seed)
    return FGCLIP2Model(FGCLIP2Config.tiny(**overrides))


def naflex_inputs(config: FGCLIP2Config, shapes=((3, 5), (4, 4), (2, 3)), seed: int = 0) -> dict:
    """Random patchified pixels for images of the given (h, w) grids, zero-padded to the largest grid."""
    g = torch.Generator().manual_seed(seed)
    p = config.vision_config.patch_size
    n = max(h * w for h, w in shapes)
    pixels = torch.zeros(len(shapes), n, 3 * p * p)
    mask = torch.zeros(len(shapes), n, dtype=torch.long)
    for i, (h, w) in enumerate(shapes):
        pixels[i, : h * w] = torch.randn(h * w, 3 * p * p, generator=g)
        mask[i, : h * w] = 1
    return {"pixel_values": pixels, "pixel_attention_mask": mask, "spatial_shapes": torch.tensor(shapes)}


def text_ids(config: FGCLIP2Config, batch: int, length: int, seed: int = 0, real: int | None = None) -> torch.Tensor:
    """Random ids padded with the pad id after `real` tokens (default: a random length per row)."""
    g = torch.Generator().manual_seed(seed)
    vocab, pad = config.text_config.vocab_size, config.text_config.pad_token_id
    ids = torch.randint(0, vocab - 2, (batch, length), generator=g)
    lengths = torch.randint(2, min(length, 30), (batch,), generator=g) if real is None else torch.full((batch,), real)
    ids[torch.arange(length)[None] >= lengths[:, None]] = pad
    return ids


def make_batch(config: FGCLIP2Config, counts=(2, 1, 3), hard_boxes=(0, 2, 5), seed: int = 0,
               shapes=((3, 5), (4, 4), (2, 3))) -> dict:
    """A collated stage-2 NaFlex batch (the v1 contract plus pixel_attention_mask / spatial_shapes)."""
    g = torch.Generator().manual_seed(seed)
    k, group = sum(counts), 1 + config.hard_negatives_per_box
    xy = torch.rand(k, 2, generator=g) * 0.5
    wh = torch.rand(k, 2, generator=g) * 0.4 + 0.1
    short = config.short_max_len
    return dict(**naflex_inputs(config, shapes, seed),
                long_input_ids=text_ids(config, len(counts), config.longtext_len, seed + 1),
                short_input_ids=text_ids(config, len(counts), short, seed + 2), box_counts=torch.tensor(counts),
                boxes=torch.cat([xy, xy + wh], 1), box_input_ids=text_ids(config, k, short, seed + 3),
                hard_box_index=torch.tensor(hard_boxes, dtype=torch.long),
                hard_input_ids=text_ids(config, len(hard_boxes) * group, short, seed + 4))


def official_keys(config: FGCLIP2Config) -> set[str]:
    """The official FG-CLIP 2 state-dict names (docs/fgclip2.md, "Model"), generated for a config."""
    layer = [f"self_attn.{p}_proj" for p in ("q", "k", "v", "out")] + ["layer_norm1", "mlp.fc1", "mlp.fc2",
                                                                         "layer_norm2"]
    head = [f"{m}.{w}" for m in ("attention.out_proj", "layernorm", "mlp.fc1", "mlp.fc2") for w in ("weight", "bias")]
    head += ["probe", "attention.in_proj_weight", "attention.in_proj_bias"]
    keys = {"text_model.embeddings.token_embedding.weight", "text_model.embeddings.position_embedding.weight",
            "text_model.embeddings.position_embedding_ori.weight",
            "text_model.embeddings.position_embedding_res.weight", "vision_model.embeddings.patch_embedding.weight",
            "vision_model.embeddings.patch_embedding.bias", "vision_model.embeddings.position_embedding.weight",
            "logit_scale", "logit_bias", "logit_scale_finegraind", "logit_scale_hardneg"}
    for tower, n in (("text_model", config.text_config.num_hidden_layers),
                     ("vision_model", config.vision_config.num_hidden_layers)):
        keys |= {f"{tower}.encoder.layers.{i}.{m}.{w}" for i in range(n) for m in layer for w in ("weight", "bias")}
    keys |= {f"{m}.{w}" for m in ("text_model.final_layer_norm", "text_model.head", "vision_model.post_layernorm",
                                  "longtext_head", "boxtext_head") for w in ("weight", "bias")}
    keys |= {f"{h}.{k}" for h in ("vision_model.head", "dense_feature_head") for k in head}
    return keys


def write_official_checkpoint(model: FGCLIP2Model, path: Path, with_fine_scales: bool = True) -> Path:
    """A qihoo360/fg-clip2-style directory (remote code via auto_map, longtext_len in text_config); returns the
    marker file that its code would create if anything ever imported it."""
    path.mkdir()
    marker = path / "EXECUTED"
    text = {**model.config.text_config.to_dict(), "longtext_len": model.config.longtext_len,
            "keep_len": model.config.keep_len, "model_type": "fgclip2_text_model"}
    cfg = {"model_type": "fgclip2", "architectures": ["FG_CLIP2_Model"],
           "auto_map": {"AutoConfig": "configuration_fgclip2.Fgclip2Config",
                        "AutoModel": "modeling_fgclip2.Fgclip2Model"},
           "text_config": text, "vision_config": model.config.vision_config.to_dict()}
    (path / "config.json").write_text(json.dumps(cfg))
    for name in ("modeling_fgclip2.py", "configuration_fgclip2.py", "image_processing_fgclip2.py"):
        (path / name).write_text(f"open({str(marker)!r}, 'w').write('remote code ran')\n")
    (path / "preprocessor_config.json").write_text(json.dumps(
        {"image_processor_type": "Fgclip2ImageProcessor", "max_num_patches": 64, "patch_size": 8,
         "auto_map": {"AutoImageProcessor": "image_processing_fgclip2.Fgclip2ImageProcessor"}}))
    state = {k: v.clone().contiguous() for k, v in model.state_dict().items() if not k.startswith("criterion.")}
    if not with_fine_scales:
        del state["logit_scale_finegraind"], state["logit_scale_hardneg"]
    state["text_model.embeddings.position_ids"] = torch.full((1, 64), 7)  # garbage, as old exports carry
    save_file(state, str(path / "model.safetensors"))
    return marker
