"""Projector registry (`linear`, `mlp{N}x_gelu`, `identity`) with HF LLaVA parameter names, and its HF export.

Modules use HF `LlavaMultiModalProjector` names: `linear_1`, `act`, `linear_2`; `mlp{N}x_gelu` for N > 2 extends
them as `linear_1 … linear_N` with the one stateless `act` (exact GELU) between consecutive linears. Export to a
stock `LlavaMultiModalProjector` (always `linear_1 → act → linear_2`) is exact for:

| type          | HF `projector_hidden_act` | `linear_1`     | `linear_2`            |
|---------------|---------------------------|----------------|-----------------------|
| `mlp2x_gelu`  | `gelu`                    | ours           | ours                  |
| `linear` / `mlp1x_gelu` | `linear` (identity) | ours        | identity matrix, zero bias |
| `identity`    | `linear`                  | identity       | identity (needs vision hidden == text hidden) |

`mlp{N}x_gelu` with N > 2 has more layers than the stock module holds and is refused by `to_hf_projector` with an
error saying so. In the exported model `linear_2` of a `linear`/`identity` projector is an ordinary trainable
layer, so further training there trains a product of two linear maps (still linear).

Projector weights load from safetensors (or a weights-only `.bin`) whose keys are ours, HF LLaVA's
(`[model.]multi_modal_projector.linear_k.*`) or original LLaVA's (`[model.]mm_projector.{0,2,…}.*`); a vision or
text hidden size that does not match raises an error naming both sizes.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from fgclip_lmm.errors import InputError

MLP_PATTERN = re.compile(r"^mlp(\d+)x_gelu$")


class MlpGeluProjector(nn.Module):
    """`linear_1 (vision→text)`, then (`act`, `linear_k (text→text)`) for k = 2..depth."""

    def __init__(self, vision_hidden: int, text_hidden: int, depth: int) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"mlp projector depth must be >= 1, got {depth}")
        self.depth = depth
        self.linear_1 = nn.Linear(vision_hidden, text_hidden)
        self.act = nn.GELU()
        for k in range(2, depth + 1):
            setattr(self, f"linear_{k}", nn.Linear(text_hidden, text_hidden))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        hidden = self.linear_1(features)
        for k in range(2, self.depth + 1):
            hidden = getattr(self, f"linear_{k}")(self.act(hidden))
        return hidden


class LinearProjector(MlpGeluProjector):
    def __init__(self, vision_hidden: int, text_hidden: int) -> None:
        super().__init__(vision_hidden, text_hidden, depth=1)


class IdentityProjector(nn.Module):
    def __init__(self, vision_hidden: int, text_hidden: int) -> None:
        super().__init__()
        if vision_hidden != text_hidden:
            raise ValueError(
                "identity projector needs equal sizes: "
                f"tower hidden_size {vision_hidden} != LLM hidden_size {text_hidden}"
            )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


PROJECTORS: dict[str, Callable[[int, int], nn.Module]] = {"linear": LinearProjector, "identity": IdentityProjector}


def known_projectors() -> str:
    return ", ".join([*sorted(PROJECTORS), "mlp<N>x_gelu (regex ^mlp(\\d+)x_gelu$)"])


def build_projector(name: str, vision_hidden: int, text_hidden: int) -> nn.Module:
    if name in PROJECTORS:
        return PROJECTORS[name](vision_hidden, text_hidden)
    match = MLP_PATTERN.match(name)
    if match:
        return MlpGeluProjector(vision_hidden, text_hidden, int(match.group(1)))
    raise InputError(f"unknown projector type {name!r}; known: {known_projectors()}")


@dataclass
class HFProjector:
    """What a stock `LlavaMultiModalProjector` needs: its activation name and `linear_{1,2}` tensors."""

    hidden_act: str
    state_dict: dict[str, torch.Tensor]


def _identity_linear(size: int, like: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"weight": torch.eye(size, dtype=like.dtype, device=like.device),
            "bias": torch.zeros(size, dtype=like.dtype, device=like.device)}


def to_hf_projector(projector: nn.Module, vision_hidden: int, text_hidden: int) -> HFProjector:
    """Express `projector` exactly as a stock HF LLaVA projector (see the table in the module docstring)."""
    like = next(iter(projector.parameters()), torch.zeros(()))
    if isinstance(projector, IdentityProjector):
        eye = _identity_linear(text_hidden, like)
        state = {f"linear_{k}.{n}": t.clone() for k in (1, 2) for n, t in eye.items()}
        return HFProjector("linear", state)
    if not isinstance(projector, MlpGeluProjector):
        raise TypeError(f"cannot export projector of class {type(projector).__name__}")
    if projector.depth > 2:
        raise ValueError(
            f"mlp{projector.depth}x_gelu has {projector.depth} linear layers "
            f"(linear_1..linear_{projector.depth}); a stock "
            "HF LlavaMultiModalProjector holds exactly two (linear_1, act, linear_2), so it cannot be exported to a "
            "stock LLaVA checkpoint; use mlp2x_gelu, linear or identity"
        )
    state = {f"linear_1.{n}": t.detach().clone() for n, t in projector.linear_1.state_dict().items()}
    if projector.depth == 2:
        state.update({f"linear_2.{n}": t.detach().clone() for n, t in projector.linear_2.state_dict().items()})
        return HFProjector("gelu", state)
    state.update({f"linear_2.{n}": t for n, t in _identity_linear(text_hidden, like).items()})
    return HFProjector("linear", state)


_PREFIXES = ("model.multi_modal_projector.", "multi_modal_projector.", "model.mm_projector.", "mm_projector.")


def normalize_projector_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map HF LLaVA and original LLaVA projector keys to ours (`linear_k.weight|bias`); other keys are dropped."""
    out = {}
    for key, value in state.items():
        prefix = next((p for p in _PREFIXES if key.startswith(p)), None)
        if prefix is None and not key.startswith("linear_"):
            continue
        rest = key[len(prefix):] if prefix else key
        if prefix and "mm_projector" in prefix:
            index, _, param = rest.partition(".")
            if index in ("weight", "bias"):  # LLaVA `linear`: the projector is a bare nn.Linear
                rest = f"linear_1.{index}"
            elif index.isdigit() and int(index) % 2 == 0:  # Sequential(Linear, GELU, Linear, ...)
                rest = f"linear_{int(index) // 2 + 1}.{param}"
            else:
                raise ValueError(f"unexpected original-LLaVA projector key {key!r}")
        out[rest] = value
    return out


def read_projector_state(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"projector weights {str(path)!r} do not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        raw = load_file(str(path))
    else:
        raw = torch.load(str(path), map_location="cpu", weights_only=True)
    state = normalize_projector_keys(raw)
    if "linear_1.weight" not in state and raw:
        raise ValueError(f"{str(path)!r} holds no projector weights (keys like {sorted(raw)[:4]})")
    return state


def check_projector_sizes(state: dict[str, torch.Tensor], vision_hidden: int, text_hidden: int, source: str) -> None:
    """Raise when the projector's input/output sizes do not match the tower / LLM, naming both sizes."""
    if "linear_1.weight" not in state:
        return  # identity: no weights to disagree
    out_dim, in_dim = state["linear_1.weight"].shape
    if in_dim != vision_hidden:
        raise ValueError(
            f"projector from {source} expects vision hidden size {in_dim} "
            f"(linear_1.weight {tuple(state['linear_1.weight'].shape)}) "
            f"but the tower has hidden_size {vision_hidden}; a new tower needs a new projector (retrain stage 1)"
        )
    last = max(int(k.split(".")[0].split("_")[1]) for k in state if k.startswith("linear_"))
    final_out = state[f"linear_{last}.weight"].shape[0]
    if out_dim != text_hidden or final_out != text_hidden:
        raise ValueError(
            f"projector from {source} outputs size {final_out} but the LLM has hidden_size {text_hidden}"
        )


def load_projector(name: str, path: str | Path, vision_hidden: int, text_hidden: int) -> nn.Module:
    """Build projector `name` and load its weights from `path` (size-checked, strict)."""
    projector = build_projector(name, vision_hidden, text_hidden)
    state = read_projector_state(path)
    check_projector_sizes(state, vision_hidden, text_hidden, str(path))
    expected = set(projector.state_dict())
    if set(state) != expected:
        raise ValueError(
            f"projector weights {str(path)!r} do not fit type {name!r}: "
            f"expected keys {sorted(expected)}, got {sorted(state)}"
        )
    projector.load_state_dict(state, strict=True)
    return projector
