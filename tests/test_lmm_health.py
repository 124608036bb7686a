"""Image-token health (`fgclip_lmm.lmm.health`): exact values on constructed tokens, and the probe on a tiny LLaVA
whose projector is healthy (no warning) or collapsed onto one loud direction (both warnings, once)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoProcessor, LlavaForConditionalGeneration

from fgclip_lmm.lmm.forward import lmm_forward
from fgclip_lmm.lmm.health import (
    HealthConfig,
    ImageTokenProbe,
    health_problems,
    image_token_health,
)
from fgclip_lmm.testing import build_tiny_llava

torch.set_num_threads(1)


def test_health_values_by_hand() -> None:
    text = torch.tensor([[3.0, 4.0], [0.0, 5.0]])  # RMS 5/sqrt(2) each
    image = torch.tensor([[[30.0, 40.0], [-40.0, 30.0]]])  # RMS 50/sqrt(2) each -> ratio 10
    metrics = image_token_health(image, text)
    assert metrics["image_norm_ratio"] == pytest.approx(10.0)
    mean = torch.tensor([-5.0, 35.0])  # mean image token
    cos = [float(torch.nn.functional.cosine_similarity(v, mean, dim=0)) for v in image[0]]
    assert metrics["image_cosine"] == pytest.approx(sum(cos) / 2)
    assert health_problems(metrics) == []
    assert len(health_problems({"image_norm_ratio": 21.0, "image_cosine": 0.95})) == 2
    assert len(health_problems(metrics, HealthConfig(max_norm_ratio=5.0))) == 1
    with pytest.raises(ValueError, match="width"):
        image_token_health(image, torch.ones(2, 3))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llava(tmp_path_factory.mktemp("health") / "export")


def _batch(path: Path) -> dict[str, torch.Tensor]:
    processor = AutoProcessor.from_pretrained(path)
    from PIL import Image

    images = [Image.new("RGB", (28, 28), c) for c in ((220, 30, 30), (30, 60, 220))]
    enc = processor(text=["<image>\nIs the image red?", "<image>\nIs the image blue? Yes"], images=images,
                    return_tensors="pt", padding=True)
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
            "pixel_values": enc["pixel_values"]}


def _probe_after_forward(model: LlavaForConditionalGeneration, batch: dict) -> tuple[ImageTokenProbe, dict]:
    probe = ImageTokenProbe(model)
    with torch.no_grad():
        lmm_forward(model, **batch)
    metrics = probe.metrics(batch["attention_mask"], torch.ones(2, dtype=torch.bool))
    return probe, metrics


def test_probe_healthy_projector_does_not_warn(tiny: Path) -> None:
    model = LlavaForConditionalGeneration.from_pretrained(tiny, dtype=torch.float32).eval()
    batch = _batch(tiny)
    probe, metrics = _probe_after_forward(model, batch)
    assert metrics["image_norm_ratio"] < 20 and metrics["image_cosine"] < 0.9
    # the captured tokens are the projector output of this batch: recompute them the stock way
    with torch.no_grad():
        feats = model.model.get_image_features(pixel_values=batch["pixel_values"],
                                               vision_feature_layer=model.config.vision_feature_layer,
                                               vision_feature_select_strategy=model.config.vision_feature_select_strategy,
                                               return_dict=True).pooler_output
        ids = batch["input_ids"]
        text = (ids != model.config.image_token_id) & batch["attention_mask"].bool()
        expected = image_token_health(torch.stack(list(feats)), model.get_input_embeddings()(ids)[text])
    assert metrics == pytest.approx(expected)
    assert probe.warning(metrics) is None


def test_probe_collapsed_projector_warns_once(tiny: Path) -> None:
    model = LlavaForConditionalGeneration.from_pretrained(tiny, dtype=torch.float32).eval()
    last = [m for m in model.model.multi_modal_projector.modules() if isinstance(m, torch.nn.Linear)][-1]
    text_rms = float(model.get_input_embeddings().weight.detach().pow(2).mean(-1).sqrt().mean())
    with torch.no_grad():  # one loud direction whatever the image: weight ~0, bias = 100x a text embedding's RMS
        last.weight.mul_(1e-4)
        last.bias.copy_(torch.ones_like(last.bias) * 100 * text_rms)
    probe, metrics = _probe_after_forward(model, _batch(tiny))
    assert metrics["image_norm_ratio"] > 20 and metrics["image_cosine"] > 0.99
    message = probe.warning(metrics)
    assert message is not None and "x the text embeddings" in message and "cosine" in message
    assert "\n" not in message
    assert probe.warning(metrics) is None  # said once, not on every log step
    assert probe.warning({"image_norm_ratio": 1.0, "image_cosine": 0.1}) is None
    assert probe.warning(metrics) is not None  # re-armed after a healthy step
    probe.remove()
    assert not model.model.multi_modal_projector._forward_hooks
