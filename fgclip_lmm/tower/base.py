"""The vision-tower contract: a typed config and the `VisionTower` base module every tower type derives from.

A tower wraps one Hugging Face vision model (kept at `self.vision_tower`, as in original LLaVA's `CLIPVisionTower`,
so its state-dict keys are exactly the HF model's under a `vision_tower.` prefix). Subclasses only say how to load
the model, its config and its image processor, and whether token 0 is a CLS token; everything else lives here:

* properties `hidden_size`, `image_size`, `patch_size`, `num_patches_per_side`, `num_patches`, `has_cls`,
  `num_image_tokens`, `dtype`, `device`, `config`, `image_processor`, plus the HF LLaVA settings they imply
  (`hf_select_strategy`, `num_additional_image_tokens`);
* `forward(pixel_values) -> (B, N, D)`: `hidden_states[feature_layer]` (default -2, never post-normalised), then
  `patch` (drop CLS if there is one) or `cls_patch` (keep every token; only for towers with a CLS); the blocks
  after `feature_layer` are never run (`blocks.run_needed_blocks`: same features, 1/L less work);
* tuning `frozen` (no parameter requires grad and the wrapped model runs under `torch.no_grad`, whoever calls it),
  `full`, or `lora` (peft adapters on the attention and MLP linears; `merged_vision_model()` folds them back in);
* LLaVA's names: `load_model()`, `is_loaded`, `feature_select(outputs)`, `dummy_feature`, `vision_tower_name`,
  `select_layer`, `select_feature`, and a `delay_load` mode that reads only the config until `load_model()`.
"""
from __future__ import annotations

import abc
import contextlib
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from .blocks import run_all_blocks, run_needed_blocks

SELECT_STRATEGIES = ("patch", "cls_patch")
TUNING_MODES = ("frozen", "full", "lora")
# nn.Linear leaf names inside CLIP / SigLIP encoder layers; `hf` towers use every nn.Linear leaf name they have.
TOWER_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


@dataclass
class LmmLoraConfig:
    """peft LoRA hyper-parameters, shared by the tower and the LLM."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.r <= 0:
            raise ValueError(f"LmmLoraConfig.r must be > 0, got {self.r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LmmLoraConfig.dropout must be in [0, 1), got {self.dropout}")


@dataclass
class TowerConfig:
    """How to build one tower. `type` is a registry key (`fgclip`, `fgclip2`, `clip`, `siglip`, `hf`), kept apart
    from `path`."""

    type: str
    path: str
    feature_layer: int = -2
    select: str = "patch"
    tuning: str = "frozen"
    lora: LmmLoraConfig = field(default_factory=LmmLoraConfig)
    delay_load: bool = False
    # Only consulted for `hf` towers (CLIP-family towers have a CLS, SigLIP has none); None = infer by a forward.
    has_cls: bool | None = None
    # Only for `fgclip2` (NaFlex) towers: the fixed input side in px they are exported at; None = the learned grid.
    image_size: int | None = None

    def __post_init__(self) -> None:
        if self.select not in SELECT_STRATEGIES:
            raise ValueError(f"TowerConfig.select={self.select!r}; known: {', '.join(SELECT_STRATEGIES)}")
        if self.tuning not in TUNING_MODES:
            raise ValueError(f"TowerConfig.tuning={self.tuning!r}; known: {', '.join(TUNING_MODES)}")
        if not isinstance(self.feature_layer, int) or isinstance(self.feature_layer, bool):
            raise ValueError(f"TowerConfig.feature_layer must be an int, got {self.feature_layer!r}")
        if not self.path:
            raise ValueError("TowerConfig.path is empty")
        if self.image_size is not None and (not isinstance(self.image_size, int) or self.image_size <= 0):
            raise ValueError(f"TowerConfig.image_size must be a positive int or None, got {self.image_size!r}")


def _no_grad_pre_hook(module: nn.Module, args: Any) -> None:
    module._fgclip_grad_stack.append(torch.is_grad_enabled())
    torch.set_grad_enabled(False)


def _no_grad_post_hook(module: nn.Module, args: Any, output: Any) -> None:
    torch.set_grad_enabled(module._fgclip_grad_stack.pop())


def set_no_grad_forward(module: nn.Module, enabled: bool) -> None:
    """Make every call of `module` run under `torch.no_grad` (enabled) or restore normal autograd (disabled).

    Implemented with a forward pre-hook / always-called post-hook pair, so it also holds when a third party calls
    the module (HF LLaVA's `get_image_features`), and it never changes the state dict.
    """
    handles = getattr(module, "_fgclip_no_grad_handles", None)
    if enabled and handles is None:
        module._fgclip_grad_stack = []
        module._fgclip_no_grad_handles = (
            module.register_forward_pre_hook(_no_grad_pre_hook),
            module.register_forward_hook(_no_grad_post_hook, always_call=True),
        )
    elif not enabled and handles is not None:
        for handle in handles:
            handle.remove()
        del module._fgclip_no_grad_handles


def runs_without_grad(module: nn.Module) -> bool:
    """True when `set_no_grad_forward(module, True)` is in effect."""
    return getattr(module, "_fgclip_no_grad_handles", None) is not None


class VisionTower(nn.Module, abc.ABC):
    """Base class of every tower type; see the module docstring for the contract."""

    type_name: ClassVar[str] = ""
    # True / False for towers whose CLS-ness is fixed by their family; None = decided at load (`hf`).
    family_has_cls: ClassVar[bool | None] = None
    # Whether `TowerConfig.image_size` means something to this type (towers at a resolution chosen on export).
    chooses_image_size: ClassVar[bool] = False

    def __init__(self, cfg: TowerConfig) -> None:
        super().__init__()
        if cfg.image_size is not None and not self.chooses_image_size:
            raise ValueError(f"TowerConfig.image_size={cfg.image_size} is only for towers exported at a chosen "
                             f"resolution (fgclip2); tower type {self.type_name!r} has a fixed one")
        self.cfg = cfg
        self.vision_tower_name = cfg.path
        self.select_layer = cfg.feature_layer
        self.select_feature = cfg.select
        self.is_loaded = False
        self.vision_tower: nn.Module | None = None
        self._cfg_only: Any = None
        self._image_processor: Any = None
        self._has_cls: bool | None = self._resolve_family_cls(cfg.has_cls)
        self._peft: list[Any] = []  # the PeftModel wrapper, kept out of the module tree
        if cfg.delay_load:
            self._cfg_only = self._load_config(cfg.path)
            self._check_feature_layer(self._cfg_only)
        else:
            self.load_model()

    # ----- hooks for subclasses -------------------------------------------------------------------------------
    @abc.abstractmethod
    def _load_vision_model(self, path: str) -> nn.Module:
        """Implemented by each tower type."""

    @abc.abstractmethod
    def _load_config(self, path: str) -> Any:
        """Implemented by each tower type."""

    @abc.abstractmethod
    def _load_image_processor(self, path: str, config: Any) -> Any:
        """Implemented by each tower type."""

    def _infer_has_cls(self, model: nn.Module) -> bool:
        """Count the tokens of one forward: num_patches + 1 means a CLS, num_patches means none."""
        size = int(model.config.image_size)
        patches = (size // int(model.config.patch_size)) ** 2
        param = next(model.parameters())
        with torch.no_grad():
            out = model(torch.zeros(1, 3, size, size, dtype=param.dtype, device=param.device),
                        output_hidden_states=True)
        extra = out.hidden_states[-1].shape[1] - patches
        if extra not in (0, 1):
            raise ValueError(
                f"tower {self.cfg.path!r} emits {patches + extra} tokens for {patches} patches; "
                "HF LLaVA can drop at most one leading token, so only 0 or 1 extra tokens are supported"
            )
        return extra == 1

    # ----- LLaVA names -----------------------------------------------------------------------------------------
    def load_model(self, device_map: Any = None) -> None:
        """Load weights and image processor (a second call does nothing), then apply the configured tuning."""
        if self.is_loaded:
            return
        model = self._load_vision_model(self.cfg.path)
        if device_map is not None:
            model = model.to(device_map)
        self._check_feature_layer(model.config)
        self._feature_index = run_needed_blocks(model, self.cfg.feature_layer)
        self.vision_tower = model
        self._cfg_only = None
        self._image_processor = self._load_image_processor(self.cfg.path, model.config)
        if self._has_cls is None:
            self._has_cls = self._infer_has_cls(model)
        if self.cfg.select == "cls_patch" and not self._has_cls:
            raise ValueError(f"select='cls_patch' needs a CLS token, but tower {self.cfg.type}:{self.cfg.path} "
                             "has none")
        self.is_loaded = True
        self._apply_tuning()

    def feature_select(self, image_forward_outs: Any) -> torch.Tensor:
        # the non-negative index: hidden_states is shorter when the blocks after feature_layer are not run
        features = image_forward_outs.hidden_states[self._feature_index]
        if self.cfg.select == "patch" and self.has_cls:
            features = features[:, 1:]
        return features

    @property
    def dummy_feature(self) -> torch.Tensor:
        return torch.zeros(1, self.hidden_size, device=self.device, dtype=self.dtype)

    @property
    def config(self) -> Any:
        return self.vision_tower.config if self.is_loaded else self._cfg_only

    @property
    def image_processor(self) -> Any:
        if not self.is_loaded:
            raise RuntimeError(f"tower {self.cfg.path!r} was delay-loaded: call load_model() first")
        return self._image_processor

    # ----- the small interface ---------------------------------------------------------------------------------
    @property
    def hidden_size(self) -> int:
        return int(self.config.hidden_size)

    @property
    def image_size(self) -> int:
        return int(self.config.image_size)

    @property
    def patch_size(self) -> int:
        return int(self.config.patch_size)

    @property
    def num_patches_per_side(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.num_patches_per_side**2

    @property
    def has_cls(self) -> bool:
        if self._has_cls is None:
            raise RuntimeError(f"has_cls of hf tower {self.cfg.path!r} is known after load_model() or via "
                               "TowerConfig.has_cls")
        return self._has_cls

    @property
    def num_image_tokens(self) -> int:
        """Tokens per image fed to the LLM: num_patches, plus the CLS under `cls_patch`."""
        return self.num_patches + (1 if self.cfg.select == "cls_patch" else 0)

    @property
    def hf_select_strategy(self) -> str:
        """HF LLaVA's `vision_feature_select_strategy`: `default` drops token 0, `full` keeps all."""
        return "default" if self.has_cls and self.cfg.select == "patch" else "full"

    @property
    def num_additional_image_tokens(self) -> int:
        """`LlavaProcessor.num_additional_image_tokens`: the tokens the tower emits beyond its patches."""
        return 1 if self.has_cls else 0

    @property
    def dtype(self) -> torch.dtype:
        if not self.is_loaded:
            return torch.float32
        return next(self.vision_tower.parameters()).dtype

    @property
    def device(self) -> torch.device:
        if not self.is_loaded:
            return torch.device("cpu")
        return next(self.vision_tower.parameters()).device

    def forward(self, pixel_values: torch.Tensor | list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        """`[B,3,H,W] -> [B,N,D]`; a list of `[3,H,W]` / `[1,3,H,W]` images gives a list of `[1,N,D]`."""
        if not self.is_loaded:
            raise RuntimeError(f"tower {self.cfg.path!r} was delay-loaded: call load_model() first")
        if isinstance(pixel_values, (list, tuple)):
            return [self._encode(img if img.dim() == 4 else img.unsqueeze(0)) for img in pixel_values]
        return self._encode(pixel_values)

    def _encode(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"pixel_values must be [B,3,H,W], got shape {tuple(images.shape)}")
        ctx = torch.no_grad() if self.cfg.tuning == "frozen" else contextlib.nullcontext()
        with ctx:
            outs = self.vision_tower(images.to(device=self.device, dtype=self.dtype), output_hidden_states=True)
            return self.feature_select(outs).to(images.dtype)

    # ----- tuning ---------------------------------------------------------------------------------------------
    def lora_target_names(self) -> list[str]:
        """Leaf names of the linears that get LoRA adapters (attention + MLP, never a head)."""
        leaves = {name.rsplit(".", 1)[-1] for name,
                  mod in self.vision_tower.named_modules() if isinstance(mod, nn.Linear)}
        known = [n for n in TOWER_LORA_TARGETS if n in leaves]
        return known or sorted(leaves)

    def _apply_tuning(self) -> None:
        model = self.vision_tower
        mode = self.cfg.tuning
        set_no_grad_forward(model, mode == "frozen")
        model.requires_grad_(mode == "full")
        if mode == "lora":
            from peft import LoraConfig, get_peft_model

            spec = self.cfg.lora
            lora_cfg = LoraConfig(
                r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout, target_modules=self.lora_target_names()
            )
            # get_peft_model injects the adapters in place; the wrapper is kept outside the module tree.
            self._peft = [get_peft_model(model, lora_cfg)]

    def merged_vision_model(self) -> nn.Module:
        """The wrapped HF vision model with LoRA folded into its weights (the model itself for frozen/full), running
        every block again (stock behaviour, for export)."""
        if self.cfg.tuning != "lora":
            run_all_blocks(self.vision_tower)
            return self.vision_tower
        if not self._peft:
            raise RuntimeError("the LoRA adapters were already merged")
        merged = self._peft.pop().merge_and_unload()
        run_all_blocks(merged)
        self.vision_tower = merged
        self.cfg.tuning = "full"
        merged.requires_grad_(True)
        return merged

    def _resolve_family_cls(self, requested: bool | None) -> bool | None:
        family = self.family_has_cls
        if family is not None and requested is not None and requested != family:
            raise ValueError(f"TowerConfig.has_cls={requested} contradicts tower type {self.type_name!r} "
                             f"(has_cls={family})")
        return family if family is not None else requested

    def _check_feature_layer(self, config: Any) -> None:
        layers = int(config.num_hidden_layers)
        if not -(layers + 1) <= self.cfg.feature_layer <= layers:
            raise ValueError(
                f"TowerConfig.feature_layer={self.cfg.feature_layer} is out of range for {layers} layers "
                f"(hidden_states has {layers + 1} entries)"
            )
