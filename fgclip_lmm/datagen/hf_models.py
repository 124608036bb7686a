"""Batched generation with stock transformers models: image-text-to-text (captions) and chat LLMs (negatives).

* `ImageTextGenerator`: `AutoModelForImageTextToText` + `AutoProcessor` (LLaVA-1.5 / LLaVA-NeXT / Qwen2-VL / ...
  HF exports, and this project's `assemble` output). Each image becomes one user turn `[image, prompt]` rendered by
  the processor's chat template.
* `ChatGenerator`: `AutoModelForCausalLM` + `AutoTokenizer`, prompts rendered by the tokenizer's chat template.

Both pad on the left (decoder-only generation), decode only the new tokens, seed sampling per call, and never
pass `trust_remote_code`. The device defaults to `cuda:$LOCAL_RANK` when CUDA is available (one GPU per rank
under torchrun / accelerate), else the CPU; `auto` spreads one model over all visible GPUs (`device_map="auto"`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from fgclip_lmm.devices import pick_device, torch_dtype
from fgclip_lmm.errors import CheckpointError


@dataclass(frozen=True)
class DecodingConfig:
    max_new_tokens: int = 256
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 0.9
    seed: int | None = None


def load_model(auto_class, model_id: str, device: str | None, dtype: str):
    """(model in eval mode, input device). `device="auto"` spreads the model over every visible GPU with
    accelerate's `device_map="auto"` (for checkpoints larger than one GPU; run one process per model copy)."""
    if device == "auto":
        model = auto_class.from_pretrained(model_id, dtype=torch_dtype(dtype, allow_auto=True), device_map="auto")
        return model.eval(), model.device
    target = pick_device(device)
    return auto_class.from_pretrained(model_id, dtype=torch_dtype(dtype, allow_auto=True)).to(target).eval(), target


def _generate(model, inputs, options: DecodingConfig, pad_token_id: int | None) -> torch.Tensor:
    kwargs = {"max_new_tokens": options.max_new_tokens, "do_sample": options.do_sample, "pad_token_id": pad_token_id}
    if options.do_sample:
        kwargs.update(temperature=options.temperature, top_p=options.top_p)
    if options.seed is not None:
        torch.manual_seed(options.seed)
    with torch.inference_mode():
        output = model.generate(**inputs, **kwargs)
    return output[:, inputs["input_ids"].shape[1]:]


def _left_padded(tokenizer) -> None:
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise CheckpointError(f"{tokenizer.name_or_path}: tokenizer has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token


class ImageTextGenerator:
    """`generator(images, prompt, options) -> list[str]` with any image-text-to-text checkpoint."""

    def __init__(self, model_id: str, device: str | None = None, dtype: str = "auto"):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.processor = AutoProcessor.from_pretrained(model_id)
        if getattr(self.processor, "chat_template", None) is None:
            raise CheckpointError(f"{model_id}: the processor has no chat template; "
                                  "recaption needs one to build prompts")
        _left_padded(self.processor.tokenizer)
        self.model, self.device = load_model(AutoModelForImageTextToText, model_id, device, dtype)

    def __call__(self, images: list, prompt: str, options: DecodingConfig) -> list[str]:
        conversations = [[{"role": "user", "content": [{"type": "image", "image": image},
                                                        {"type": "text", "text": prompt}]}] for image in images]
        inputs = self.processor.apply_chat_template(
            conversations, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt",
            processor_kwargs={"padding": True},
        ).to(self.device).to(self.model.dtype)
        new = _generate(self.model, inputs, options, self.processor.tokenizer.pad_token_id)
        return self.processor.batch_decode(new, skip_special_tokens=True)


class ChatGenerator:
    """`generator(prompts, options, system=None) -> list[str]` with any chat causal LM."""

    def __init__(self, model_id: str, device: str | None = None, dtype: str = "auto"):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_id)
        if self.tokenizer.chat_template is None:
            raise CheckpointError(f"{model_id}: the tokenizer has no chat template; use an instruction-tuned model")
        _left_padded(self.tokenizer)
        self.model, self.device = load_model(AutoModelForCausalLM, model_id, device, dtype)

    def __call__(self, prompts: list[str], options: DecodingConfig, system: str | None = None) -> list[str]:
        head = [{"role": "system", "content": system}] if system else []
        conversations = [head + [{"role": "user", "content": prompt}] for prompt in prompts]
        inputs = self.tokenizer.apply_chat_template(
            conversations, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt",
            padding=True, sanitize_control_tokens=True,
        ).to(self.device)
        new = _generate(self.model, inputs, options, self.tokenizer.pad_token_id)
        return self.tokenizer.batch_decode(new, skip_special_tokens=True)
