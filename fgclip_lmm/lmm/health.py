"""Image-token health during LMM training: is the projector's output loud or collapsed?

Two numbers per logged step, from the last micro-batch's own forward (captured by forward hooks, so no extra
tower or projector pass and nothing to gather under ZeRO-3):

* `image_norm_ratio`: mean RMS norm of the projected image tokens over the mean RMS norm of the LLM's input
  embeddings of the same batch's text tokens (padding and image placeholders excluded). A stock LLaVA starts near
  1; after a projector collapse in align it reached ~137x (issue 15), drowning the text.
* `image_cosine`: mean cosine of each image token to the mean image token of the batch. Near 1 means every
  image token points the same way, i.e. the projector passes almost no image-specific information.

`ImageTokenProbe` registers the hooks and returns the metrics plus a one-line warning when a threshold is first
crossed (again only after the metrics recovered), so a run says so once instead of on every log step.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .tuning import unwrap_llava


@dataclass(frozen=True)
class HealthConfig:
    """Warning thresholds: the image/text RMS-norm ratio and the mean cosine to the mean image token."""

    max_norm_ratio: float = 20.0
    max_cosine: float = 0.9


def _mean_rms(rows: torch.Tensor) -> torch.Tensor:
    return rows.float().pow(2).mean(dim=-1).sqrt().mean()


def image_token_health(image_tokens: torch.Tensor, text_embeds: torch.Tensor) -> dict[str, float]:
    """`image_tokens` (..., H) projector outputs and `text_embeds` (..., H) text-token input embeddings ->
    {"image_norm_ratio", "image_cosine"} (see the module docstring)."""
    hidden = image_tokens.shape[-1]
    if text_embeds.shape[-1] != hidden:
        raise ValueError(f"image tokens have width {hidden} but text embeddings {text_embeds.shape[-1]}")
    image = image_tokens.detach().reshape(-1, hidden).float()
    text = text_embeds.detach().reshape(-1, hidden).float()
    if image.shape[0] == 0 or text.shape[0] == 0:
        raise ValueError(f"need image tokens and text tokens, got {image.shape[0]} and {text.shape[0]}")
    ratio = _mean_rms(image) / _mean_rms(text).clamp_min(1e-12)
    cosine = torch.nn.functional.cosine_similarity(image, image.mean(dim=0, keepdim=True), dim=-1).mean()
    return {"image_norm_ratio": float(ratio), "image_cosine": float(cosine)}


def health_problems(metrics: dict[str, float], cfg: HealthConfig = HealthConfig()) -> list[str]:
    """The thresholds `metrics` passes, as short phrases (empty when healthy)."""
    problems = []
    if metrics["image_norm_ratio"] > cfg.max_norm_ratio:
        problems.append(f"image tokens are {metrics['image_norm_ratio']:.1f}x the text embeddings' RMS norm "
                        f"(> {cfg.max_norm_ratio:g}x)")
    if metrics["image_cosine"] > cfg.max_cosine:
        problems.append(f"image tokens have mean cosine {metrics['image_cosine']:.3f} to their mean "
                        f"(> {cfg.max_cosine:g}: nearly one direction)")
    return problems


class ImageTokenProbe:
    """Captures the last forward's projector output and text embeddings of a LLaVA model (or its peft wrapper)."""

    def __init__(self, model: nn.Module, cfg: HealthConfig = HealthConfig()):
        llava = unwrap_llava(model)
        self.cfg = cfg
        self.image_token_id = int(llava.config.image_token_id)
        self._image: torch.Tensor | None = None
        self.features: torch.Tensor | None = None
        self.ids: torch.Tensor | None = None
        self.embeds: torch.Tensor | None = None
        self._warned = False
        self._handles = [
            llava.model.multi_modal_projector.register_forward_hook(self._on_projector),
            llava.get_input_embeddings().register_forward_hook(self._on_embeddings),
        ]

    def _on_projector(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        self._image = output.detach()
        self.features = args[0].detach()  # the projector's input (tower features), for `projector_init`

    def _on_embeddings(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        self.ids, self.embeds = args[0].detach(), output.detach()

    def metrics(self, attention_mask: torch.Tensor | None = None, image_mask: torch.Tensor | None = None
                ) -> dict[str, float]:
        """Health of the last forward ({} before any forward with images). `image_mask` drops dummy images."""
        if self._image is None or self.embeds is None:
            return {}
        image = self._image
        if image_mask is not None and image.shape[0] == image_mask.shape[0]:
            image = image[image_mask.to(image.device)]
        text = self.ids != self.image_token_id
        if attention_mask is not None and attention_mask.shape == text.shape:
            text = text & attention_mask.to(text.device).bool()
        if image.numel() == 0 or not bool(text.any()):
            return {}
        return image_token_health(image, self.embeds[text])

    def warning(self, metrics: dict[str, float]) -> str | None:
        """A one-line warning the first time `metrics` pass a threshold (re-armed once they are healthy again)."""
        if not metrics:
            return None
        problems = health_problems(metrics, self.cfg)
        if not problems:
            self._warned = False
            return None
        if self._warned:
            return None
        self._warned = True
        return "warning: projector output looks collapsed: " + "; ".join(problems)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
