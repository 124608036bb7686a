"""Analytic matmul FLOPs of CLIP-style transformers, for the MFU estimate in the log line and the benchmarks."""
from __future__ import annotations


def transformer_forward_flops(layers: int, width: int, mlp: int, seq: int) -> float:
    """Forward FLOPs of one sequence: QKV/out projections, MLP and the two attention matmuls (2 FLOPs per MAC)."""
    per_layer = 2 * seq * (4 * width * width + 2 * width * mlp) + 4 * seq * seq * width
    return float(layers * per_layer)


def clip_tower_flops(config, image_tokens_batch: int = 0, text_lengths: list[tuple[int, int]] = ()) -> float:
    """Forward FLOPs for `image_tokens_batch` images and text rows given as (rows, length) pairs."""
    v, t = config.vision_config, config.text_config
    n_img = (v.image_size // v.patch_size) ** 2 + 1
    flops = image_tokens_batch * transformer_forward_flops(v.num_hidden_layers, v.hidden_size, v.intermediate_size,
                                                           n_img)
    for rows, length in text_lengths:
        flops += rows * transformer_forward_flops(t.num_hidden_layers, t.hidden_size, t.intermediate_size, length)
    return flops


def train_flops(forward_flops: float) -> float:
    """Forward + backward is about 3x the forward."""
    return 3.0 * forward_flops


def measure_matmul_peak(dtype=None, size: int = 1024, seconds: float = 0.5) -> float:
    """Achieved dense matmul FLOP/s on this device, the denominator of a measured MFU."""
    import time

    import torch

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = dtype or (torch.bfloat16 if dev == "cuda" else torch.float32)
    a = torch.randn(size, size, device=dev, dtype=dtype)
    b = torch.randn(size, size, device=dev, dtype=dtype)
    for _ in range(3):
        a @ b
    if dev == "cuda":
        torch.cuda.synchronize()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        n += 1
        if dev == "cuda" and n % 16 == 0:
            torch.cuda.synchronize()
    if dev == "cuda":
        torch.cuda.synchronize()
    return 2 * size**3 * n / (time.perf_counter() - start)


def lmm_train_flops(llava, image_tokens: int):
    """A function (tokens, images) -> training FLOPs of one LLaVA micro-batch: `tokens` computed LLM positions
    (padding included) and `images` tower inputs (dummies included) of `image_tokens` tokens each.

    LLM forward 2PT, input-gradient backward 2PT, weight gradients 2PT only for trainable weights (the embedding
    table is a lookup and is left out); the tower and projector likewise, a frozen tower being forward only."""
    from ..lmm.tuning import component_of

    counts = {"llm": [0, 0], "tower": [0, 0], "projector": [0, 0], "lm_head": [0, 0], "other": [0, 0]}
    for name, p in llava.named_parameters():
        if "embed_tokens" in name or "embeddings" in name:
            continue
        n = int(getattr(p, "ds_numel", p.numel()))
        entry = counts[component_of(name)]
        entry[0] += n
        entry[1] += n if p.requires_grad else 0

    def per_token(component: str) -> float:
        total, trainable = counts[component]
        backward_inputs = 0 if component == "tower" and trainable == 0 else 2 * total
        return 2 * total + backward_inputs + 2 * trainable

    text = per_token("llm") + per_token("lm_head")
    vision = (per_token("projector") + per_token("tower")) * image_tokens
    return lambda tokens, images: tokens * text + images * vision
