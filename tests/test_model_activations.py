"""Fused QuickGELU: same values and gradients as transformers' QuickGELUActivation, installed in FG-CLIP."""
import torch
from transformers.activations import QuickGELUActivation

from fgclip_lmm.model import FGCLIPConfig, FGCLIPModel
from fgclip_lmm.model.activations import FusedQuickGELU, fuse_quick_gelu


def test_fused_quick_gelu_equals_transformers_within_1e_6():
    x = torch.cat([torch.linspace(-30, 30, 20000), torch.randn(50000) * 3]).reshape(-1, 7)
    grad = torch.randn_like(x)
    ref_in, our_in = x.clone().requires_grad_(), x.clone().requires_grad_()
    ref, ours = QuickGELUActivation()(ref_in), FusedQuickGELU()(our_in)
    ref.backward(grad)
    ours.backward(grad)
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(our_in.grad, ref_in.grad, rtol=1e-6, atol=1e-6)
    with torch.no_grad():  # bf16 too (autocast training): within bf16 rounding of the reference
        xb = x.bfloat16()
        torch.testing.assert_close(FusedQuickGELU()(xb).float(), QuickGELUActivation()(xb.float()), rtol=1e-2,
                                   atol=1e-2)


def test_fgclip_model_uses_it_with_unchanged_weights_and_outputs():
    torch.manual_seed(0)
    model = FGCLIPModel(FGCLIPConfig.tiny())
    fused = [m for m in model.modules() if isinstance(m, FusedQuickGELU)]
    layers = model.config.text_config.num_hidden_layers + model.config.vision_config.num_hidden_layers
    assert len(fused) == layers and not any(isinstance(m, QuickGELUActivation) for m in model.modules())
    reference = FGCLIPModel(model.config)
    reference.load_state_dict(model.state_dict(), strict=True)
    for module in reference.modules():  # back to transformers' activation
        if isinstance(getattr(module, "activation_fn", None), FusedQuickGELU):
            module.activation_fn = QuickGELUActivation()
    assert fuse_quick_gelu(model) == 0  # idempotent
    pixels = torch.randn(2, 3, 32, 32)
    ids = torch.randint(0, 500, (3, 12))
    ids[:, -1] = model.config.text_config.eos_token_id
    with torch.no_grad():
        torch.testing.assert_close(model.get_image_features(pixels), reference.get_image_features(pixels),
                                   rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(model.get_text_features(ids), reference.get_text_features(ids), rtol=1e-5,
                                   atol=1e-6)
