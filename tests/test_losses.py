"""Losses: named terms, gradients to the right parameters, empty hard sets, and the gathered global loss."""
import textwrap

import torch

from fgclip_lmm.losses import GlobalContrastiveLoss, HardNegativeLoss
from fgclip_lmm.model import FGCLIPConfig, FGCLIPModel
from fgclip_lmm.testing.distributed import run_gloo_ranks


def make_batch(cfg: FGCLIPConfig, counts=(2, 1, 3), hard_boxes=(0, 2, 5), seed=0):
    g = torch.Generator().manual_seed(seed)
    b, k = len(counts), sum(counts)
    n_hard = 1 + cfg.hard_negatives_per_box

    def ids(n, length):
        x = torch.randint(0, cfg.text_config.vocab_size - 2, (n, length), generator=g)
        x[:, -1] = cfg.text_config.eos_token_id
        return x

    xy = torch.rand(k, 2, generator=g) * 0.5
    wh = torch.rand(k, 2, generator=g) * 0.4 + 0.1
    return dict(pixel_values=torch.randn(b, 3, 32, 32, generator=g), long_input_ids=ids(b, 40),
                short_input_ids=ids(b, 10), box_counts=torch.tensor(counts), boxes=torch.cat([xy, xy + wh], 1),
                box_input_ids=ids(k, 8), hard_box_index=torch.tensor(hard_boxes, dtype=torch.long),
                hard_input_ids=ids(len(hard_boxes) * n_hard, 8))


def test_forward_terms_finite_and_gradients_reach_the_right_parameters():
    torch.manual_seed(0)
    model = FGCLIPModel(FGCLIPConfig.tiny())
    out = model(**make_batch(model.config))
    assert set(out) >= {"global_long", "global_short", "region", "hard_neg", "loss",
                        "temperature/logit_scale", "temperature/logit_scale_region", "temperature/logit_scale_hard"}
    cfg = model.config
    expected = out["global_long"] + out["global_short"] + cfg.region_loss_weight * out["region"] \
        + cfg.hard_loss_weight * out["hard_neg"]
    assert torch.allclose(out["loss"], expected) and all(torch.isfinite(v).all() for v in out.values())
    per_term = {
        "global_long": ["logit_scale", "text_filip_projection.weight", "visual_projection.weight",
                        "text_model.embeddings.position_embedding_ori.weight",
                        "text_model.embeddings.position_embedding_res.weight"],
        "global_short": ["logit_scale", "text_projection.weight", "text_model.embeddings.position_embedding.weight"],
        "region": ["logit_scale_finegraind", "text_projection.weight", "vision_model.encoder.layers.1.mlp.fc1.weight"],
        "hard_neg": ["logit_scale_hardneg", "text_projection.weight", "vision_model.encoder.layers.0.mlp.fc1.weight"],
    }
    untouched = {"global_long": ["logit_scale_finegraind", "logit_scale_hardneg", "text_projection.weight"],
                 "global_short": ["text_filip_projection.weight", "logit_scale_hardneg"],
                 "region": ["logit_scale", "logit_scale_hardneg", "text_filip_projection.weight"],
                 "hard_neg": ["logit_scale", "logit_scale_finegraind", "text_filip_projection.weight"]}
    params = dict(model.named_parameters())
    for term, names in per_term.items():
        model.zero_grad()
        model(**make_batch(model.config))[term].backward()
        for name in names:
            assert params[name].grad is not None and params[name].grad.abs().sum() > 0, (term, name)
        for name in untouched[term]:
            assert params[name].grad is None or params[name].grad.abs().sum() == 0, (term, name)


def test_stage1_batch_and_empty_hard_set():
    model = FGCLIPModel(FGCLIPConfig.tiny())
    batch = make_batch(model.config)
    stage1 = model(pixel_values=batch["pixel_values"], long_input_ids=batch["long_input_ids"],
                   short_input_ids=batch["short_input_ids"])
    assert "region" not in stage1 and torch.allclose(stage1["loss"], stage1["global_long"] + stage1["global_short"])
    batch["hard_box_index"] = torch.zeros(0, dtype=torch.long)
    batch["hard_input_ids"] = torch.zeros(0, 8, dtype=torch.long)
    out = model(**batch)
    assert out["hard_neg"].item() == 0.0
    out["loss"].backward()
    assert model.logit_scale_hardneg.grad is not None  # still in the graph, so DeepSpeed sees every parameter


def test_hard_loss_matches_hand_computation_and_mask():
    region = torch.randn(3, 8)
    text = torch.randn(3, 4, 8)
    scale = torch.tensor(2.0)
    n = torch.nn.functional.normalize
    logits = scale.exp() * (n(region, dim=-1).unsqueeze(1) * n(text, dim=-1)).sum(-1)
    expected = -(logits.log_softmax(-1)[:, 0]).mean()
    assert torch.allclose(HardNegativeLoss()(region, text, scale), expected, atol=1e-6)
    valid = torch.tensor([[True, True, False, False]] * 3)
    masked = -(logits[:, :2].log_softmax(-1)[:, 0]).mean()
    assert torch.allclose(HardNegativeLoss()(region, text, scale, valid), masked, atol=1e-6)


def test_logit_scale_clamp():
    img, txt = torch.randn(4, 8), torch.randn(4, 8)
    high = torch.tensor(9.0)
    assert torch.allclose(GlobalContrastiveLoss(logit_scale_max=4.6052)(img, txt, high),
                          GlobalContrastiveLoss()(img, txt, torch.tensor(4.6052)))


def test_short_texts_encoded_once(monkeypatch):
    model = FGCLIPModel(FGCLIPConfig.tiny())
    batch = make_batch(model.config)
    batch["box_input_ids"][1] = batch["box_input_ids"][0]
    seen = []
    original = model.encode_text
    monkeypatch.setattr(model, "encode_text", lambda ids, walk_short_pos=True, bucket=None: seen.append(
        (ids.shape[0], walk_short_pos)) or original(ids, walk_short_pos, bucket))
    model(**batch)
    total = sum(batch[k].shape[0] for k in ("short_input_ids", "box_input_ids", "hard_input_ids"))
    short_calls = [n for n, short in seen if short]
    assert len(short_calls) == 1 and short_calls[0] < total  # one call, duplicates dropped


TWO_RANK_SCRIPT = textwrap.dedent("""
    import os, sys, torch, torch.distributed as dist
    from fgclip_lmm.losses import GlobalContrastiveLoss
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    g = torch.Generator().manual_seed(0)
    img, txt = torch.randn(8, 6, generator=g), torch.randn(8, 6, generator=g)
    scale = torch.tensor(3.0, requires_grad=True)
    local_img = img[rank * 4:(rank + 1) * 4].clone().requires_grad_(True)
    loss = GlobalContrastiveLoss(rank=rank, world_size=world)(local_img, txt[rank * 4:(rank + 1) * 4], scale)
    losses = [torch.zeros(1) for _ in range(world)]
    dist.all_gather(losses, loss.detach().reshape(1))
    loss.backward()
    grads = [torch.zeros(4, 6) for _ in range(world)]
    dist.all_gather(grads, local_img.grad)
    if rank == 0:
        torch.save({"mean_loss": torch.cat(losses).mean(), "img_grad": torch.cat(grads)}, sys.argv[1])
    dist.destroy_process_group()
""")


def test_gathered_global_loss_equals_single_process(tmp_path):
    run_gloo_ranks(TWO_RANK_SCRIPT, tmp_path, tmp_path / "out.pt")
    result = torch.load(tmp_path / "out.pt", weights_only=True)
    g = torch.Generator().manual_seed(0)
    img, txt = torch.randn(8, 6, generator=g), torch.randn(8, 6, generator=g)
    img.requires_grad_(True)
    full = GlobalContrastiveLoss(rank=0, world_size=1)(img, txt, torch.tensor(3.0))
    full.backward()
    assert torch.allclose(result["mean_loss"], full.detach(), atol=1e-6)
    # each rank's loss is the mean over its rows, so the summed per-rank gradients are 2x the full-batch mean's
    assert torch.allclose(result["img_grad"] / 2, img.grad, atol=1e-6)
