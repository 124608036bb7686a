"""Tiny checkpoints for the datagen steps, built from stock transformers configs (no download), for tests and
smoke runs. Each is saved with `save_pretrained` and loads through the same Auto classes as a real checkpoint.

* `write_tiny_llava(out, reply=None)`: a `LlavaForConditionalGeneration` + `LlavaProcessor` (CLIP vision tower,
  Llama text model, Vicuna-v1 chat template). Random by default, so it writes byte soup that `recaption` must
  reject. With `reply`, the text model is *wired* (`wire_reply`): attention and MLP outputs are zeroed so the last
  hidden state is the current token's embedding, and embeddings / LM head rows form a chain "last prompt token ->
  reply token 1 -> ... -> eos"; greedy decoding then writes exactly `reply` for any image, which checks the whole
  prompt -> generate -> decode path.
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
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    Owlv2Config,
    Owlv2ForObjectDetection,
    Owlv2ImageProcessor,
    Owlv2Processor,
)

from fgclip_lmm.data.tokenizers import train_clip_tokenizer, train_llm_tokenizer

CAPTION_TEXTS = (
    "The image shows a large red circle with stripes in the top left corner.",
    "A small blue square with dots sits next to a medium green triangle.",
    "Describe the image in detail. Write a short caption for this image.",
)


def wire_reply(model: LlavaForConditionalGeneration, prompt_last_id: int, reply_ids: list[int], eos_id: int) -> None:
    """Make greedy decoding after `prompt_last_id` emit `reply_ids` then `eos_id` (see the module docstring)."""
    chain = [prompt_last_id, *reply_ids]
    hidden = model.config.text_config.hidden_size
    if len(set(chain)) != len(chain) or eos_id in chain:
        raise ValueError("wire_reply needs distinct tokens: the prompt's last token, each reply token, then eos")
    if len(chain) > hidden:
        raise ValueError(f"reply of {len(reply_ids)} tokens does not fit a hidden size of {hidden}")
    text_model, head = model.model.language_model, model.lm_head
    with torch.no_grad():
        for layer in text_model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        head.weight.zero_()
        for dim, (token, following) in enumerate(zip(chain, [*reply_ids, eos_id])):
            text_model.embed_tokens.weight[token].zero_()
            text_model.embed_tokens.weight[token, dim] = 1.0
            head.weight[following, dim] = 10.0


def write_tiny_llava(out: str | Path, texts: Sequence[str] = CAPTION_TEXTS, reply: str | None = None,
                     hidden: int = 32, seed: int = 0) -> Path:
    out = Path(out)
    tokenizer = train_llm_tokenizer([t for t in texts for _ in range(3)] + ([reply] * 3 if reply else []), out,
                                    vocab_size=600, min_frequency=1)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=14,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=tokenizer.chat_template)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                              image_size=28, patch_size=14)
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                       num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    config = LlavaConfig(vision_config=vision.to_dict(), text_config=text.to_dict(),
                         image_token_id=tokenizer.convert_tokens_to_ids("<image>"), vision_feature_layer=-1,
                         vision_feature_select_strategy="default")
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    if reply is not None:
        from PIL import Image

        conversation = [{"role": "user", "content": [{"type": "image", "image": Image.new("RGB", (28, 28))},
                                                     {"type": "text", "text": "x"}]}]
        prompt = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True,
                                               return_dict=True, return_tensors="pt")
        wire_reply(model, int(prompt["input_ids"][0, -1]), tokenizer(reply, add_special_tokens=False)["input_ids"],
                   tokenizer.eos_token_id)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


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
