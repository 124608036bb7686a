"""LLaVA-style LMM pieces on stock HF `LlavaForConditionalGeneration`: projectors, templates, sample encoding,
data loading, tuning, the training forward, assembly and export. Submodules are imported on demand."""
