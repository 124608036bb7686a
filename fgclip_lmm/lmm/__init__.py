"""LLaVA-style LMM pieces on stock HF `LlavaForConditionalGeneration`; submodules are imported on demand.

* `projector`: registry `linear | mlp{N}x_gelu | identity` with HF names, exact export, size-checked loading;
* `templates`: `plain | vicuna_v1 | qwen2`, rendering text + learned spans and the matching Jinja chat template;
* `encode`: one LLaVA-JSON sample -> `input_ids` / `labels` (image blocks expanded, never truncated through);
* `dataset`: `LmmSupervisedDataset` (dummy-image convention, counted skips) and `LmmCollator`;
* `grouping`: length- and modality-grouped batch order, `GroupedBatchSampler`;
* `tuning`: `LmmTuning` / `apply_tuning` (frozen | full | lora per component, one peft config);
* `forward`: `lmm_forward`, the training forward with one tower + projector call per micro-batch;
* `assemble`: `fgclip-lmm assemble` (tower + projector + LLM -> stock checkpoint and processor);
* `export`, `merge_lora`: full / LoRA / projector saving and `fgclip-lmm merge-lora`.
"""
