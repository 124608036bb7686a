"""Tiny random checkpoints and small datasets, the one home for everything the tests, the demo, the benchmarks
and datagen smoke runs build (like `transformers.testing_utils`). Nothing here downloads anything.

| module      | what it builds |
|-------------|----------------|
| `models`    | the tiny CLIP (`FGCLIPConfig.tiny`) as a stock `CLIPModel` dir, a tiny SigLIP, tiny Llama / Qwen2 LLMs |
| `llava`     | the tiny LLaVA export through `assemble` (`build_tiny_llava`), optionally wired to a fixed reply |
| `detectors` | tiny OWLv2 (scores pinned around a value) and Grounding DINO for datagen's `ground` step |
| `fgclip2`   | tiny FG-CLIP 2 models, NaFlex batches, official-format dirs (import `fgclip_lmm.testing.fgclip2`) |
| `worlds`    | the mini FineHARD world of the trainer tests, datagen's captions-only world, lmms-eval fixture tasks |
"""
from .detectors import write_tiny_grounding_dino, write_tiny_owlv2
from .llava import QA_TEXTS, TinyLlavaConfig, build_tiny_llava, wire_reply
from .models import (
    DEFAULT_TEXTS,
    tiny_clip_config,
    train_chatml_tokenizer,
    write_clip_dir,
    write_tiny_clip,
    write_tiny_llm,
    write_tiny_siglip,
)
from .worlds import (
    DatagenWorld,
    attr_rows,
    datagen_world,
    png,
    pope_rows,
    write_fixture_tasks,
    write_mini_world,
)

__all__ = [
    "DEFAULT_TEXTS", "QA_TEXTS", "DatagenWorld", "TinyLlavaConfig", "attr_rows", "build_tiny_llava", "datagen_world",
    "png", "pope_rows", "tiny_clip_config", "train_chatml_tokenizer", "wire_reply", "write_clip_dir",
    "write_fixture_tasks", "write_mini_world", "write_tiny_clip", "write_tiny_grounding_dino", "write_tiny_llm",
    "write_tiny_owlv2", "write_tiny_siglip",
]
