"""Tiny open-vocabulary detectors for datagen's `ground` step, built from stock transformers configs (no
download) and saved with `save_pretrained`, so they load through the same Auto classes as real checkpoints.

* `write_tiny_owlv2(out, texts, score)`: an `Owlv2ForObjectDetection` + `Owlv2Processor` whose box head is zeroed
  (every patch predicts its own prior box) and whose class head gives every (patch, query) a score within 0.005 of
  `score`, the best query varying per patch. So `score` above or below the 0.4 threshold decides whether boxes
  survive.
* `write_tiny_grounding_dino(out, texts)`: a random Grounding DINO (tiny Swin backbone, one-layer BERT with a
  word-level vocabulary of `texts`) + processor.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

from fgclip_lmm.data.tokenizers import train_clip_tokenizer


def write_tiny_owlv2(out: str | Path, texts: Sequence[str], score: float = 0.9, image_size: int = 64,
                     patch_size: int = 16, seed: int = 0) -> Path:
    if not 0.0 < score < 1.0:
        raise ValueError(f"score must be in (0, 1), got {score}")
    out = Path(out)
    tokenizer = train_clip_tokenizer(list(texts) * 2, out, vocab_size=700, min_frequency=1)
    tokenizer.model_max_length = 16
    text = {"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
            "num_attention_heads": 2, "max_position_embeddings": 16, "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
              "image_size": image_size, "patch_size": patch_size}
    torch.manual_seed(seed)
    model = Owlv2ForObjectDetection(Owlv2Config(text_config=text, vision_config=vision, projection_dim=32)).eval()
    scale = 0.005  # logits = (cosine + shift) * scale: scores within ~scale of `score`, argmax query by cosine
    with torch.no_grad():
        for module in model.box_head.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.zero_()
                module.bias.zero_()
        head = model.class_head
        head.logit_scale.weight.zero_()
        head.logit_scale.bias.fill_(math.log(scale))  # elu(log s) + 1 = s for s < 1
        head.logit_shift.weight.zero_()
        head.logit_shift.bias.fill_(math.log(score / (1 - score)) / scale)
    model.save_pretrained(out)
    processor = Owlv2Processor(image_processor=Owlv2ImageProcessor(size={"height": image_size, "width": image_size}),
                               tokenizer=tokenizer)
    processor.save_pretrained(out)
    return out


def write_tiny_grounding_dino(out: str | Path, texts: Sequence[str], seed: int = 0) -> Path:
    """A random `GroundingDinoForObjectDetection` (tiny Swin + BERT) with a word-level BERT vocabulary of `texts`."""
    from transformers import (
        BertConfig,
        BertTokenizerFast,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        SwinConfig,
    )

    from fgclip_lmm.datagen.lexicon import tokenize

    out = Path(out)
    words = sorted({w.lower() for text in texts for w in tokenize(text)})
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words])}
    tokenizer = BertTokenizerFast(vocab=vocab)
    config = GroundingDinoConfig(
        backbone_config=SwinConfig(embed_dim=16, depths=[1, 1], num_heads=[1, 1], window_size=4, image_size=64,
                                   out_features=["stage1", "stage2"]),
        text_config=BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=64, max_position_embeddings=64),
        d_model=32, encoder_layers=1, decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=64, decoder_ffn_dim=64, num_queries=10, num_feature_levels=2, encoder_n_points=2,
        decoder_n_points=2, max_text_len=32, use_timm_backbone=False)
    torch.manual_seed(seed)
    GroundingDinoForObjectDetection(config).eval().save_pretrained(out)
    image_processor = GroundingDinoImageProcessor(size={"shortest_edge": 64, "longest_edge": 64})
    GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out)
    return out
