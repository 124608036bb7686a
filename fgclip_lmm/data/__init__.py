"""Data layer: official-format readers, image preprocessing, collators, sampler, bad-record policy, tokenizers
and the synthetic fine-grained world. Submodules are imported explicitly (nothing heavy happens at package import)."""
