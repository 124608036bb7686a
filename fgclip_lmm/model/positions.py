"""The Long-CLIP / FG-CLIP rule that stretches a 77-row text position table to the long length.

Rows below `keep_len` are copied; row p >= keep_len sits at fractional old position
keep_len + (p - keep_len) / stretch and is linearly interpolated between its two neighbours, or linearly
extrapolated past the last old row. With 77 rows, keep_len 20 and stretch 4 this is exactly the official
`resize_postion_embeding` (248 = 4*77 - 3*20 rows): rows 20..243 interpolate, rows 244..247 extrapolate.
"""
from __future__ import annotations

import torch


def default_long_length(short_len: int, keep_len: int, stretch: int) -> int:
    """The long length the official rule produces: stretch*L - (stretch-1)*keep_len (248 for 77/20/4)."""
    return stretch * short_len - (stretch - 1) * keep_len


def stretch_positions(table: torch.Tensor, long_len: int, keep_len: int = 20, stretch: int = 4) -> torch.Tensor:
    """Return a (long_len, D) table built from the (L, D) `table` by the keep-then-stretch rule."""
    short_len = table.shape[0]
    if not 0 < keep_len < short_len - 1:
        raise ValueError(f"keep_len must be in (0, {short_len - 1}); got keep_len={keep_len}")
    if long_len < short_len:
        raise ValueError(f"long_len ({long_len}) must be >= the table length ({short_len})")
    src = table.detach().to(torch.float64)
    pos = torch.arange(long_len - keep_len, dtype=torch.float64) / stretch + keep_len
    lo = pos.floor().long().clamp(max=short_len - 2)  # past the last row: extrapolate from the last two rows
    frac = (pos - lo).unsqueeze(1)
    stretched = src[lo] * (1 - frac) + src[lo + 1] * frac
    return torch.cat([src[:keep_len], stretched]).to(table.dtype)
