"""FG-CLIP 2 losses: every term against a float64 loop over the formulas, per-term gradients, bf16, the TIC rule
below 10 boxes, the CMR margin as state, and 2 gloo processes against 1."""
import math
import textwrap

import pytest
import torch

from fgclip_lmm.losses_fgclip2 import (
    FGCLIP2Loss,
    HardNegativeLoss,
    RegionContrastiveLoss,
    SigmoidGlobalLoss,
    TextIntraContrastiveLoss,
)
from fgclip_lmm.testing.distributed import run_gloo_ranks
from fgclip_lmm.testing.fgclip2 import make_batch, tiny_model


def unit(x: torch.Tensor) -> list[list[float]]:
    x = x.double()
    return (x / x.norm(dim=-1, keepdim=True)).tolist()


def dot(a, b) -> float:
    return sum(p * q for p, q in zip(a, b, strict=True))


def ref_sigmoid(image, text, s, b) -> float:
    img, txt = unit(image), unit(text)
    total = 0.0
    for i, x in enumerate(img):
        for j, y in enumerate(txt):
            z = 1.0 if i == j else -1.0
            total += math.log(1 + math.exp(-z * (s * dot(x, y) + b)))
    return total / len(img)


def ref_ce(logits: list[list[float]], targets: list[int]) -> float:
    return sum(math.log(sum(math.exp(v) for v in row)) - row[t] for row,
               t in zip(logits, targets, strict=True)) / len(targets)


def ref_region(region, text, s) -> float:
    r, t = unit(region), unit(text)
    rt = [[s * dot(x, y) for y in t] for x in r]
    tr = [[s * dot(y, x) for x in r] for y in t]
    return 0.5 * (ref_ce(rt, list(range(len(r)))) + ref_ce(tr, list(range(len(r)))))


def ref_tic(text, top_k=10, cut=0.95) -> float:
    t = unit(text)
    rows = []
    for i, x in enumerate(t):
        row = [0.0 if i == j or dot(x, y) > cut else dot(x, y) for j, y in enumerate(t)]
        row = sorted(row + [0.0] * max(0, top_k - len(row)), reverse=True)[:top_k]
        rows.append(math.log(sum(math.exp(v) for v in row)))
    return sum(rows) / len(rows)


def ref_hard(region, text, s, thr):
    """(itc, pair, cmr, next threshold estimate) by loops over the official formulas."""
    r = unit(region)
    groups = [unit(g) for g in text]
    pos = [g[0] for g in groups]
    negs = [y for g in groups for y in g[1:]]
    m = len(r)
    itc = 0.5 * (ref_ce([[s * dot(x, y) for y in pos + negs] for x in r], list(range(m)))
                 + ref_ce([[s * dot(g, x) for x in r] for g in pos], list(range(m))))
    pair_logits = [[s * dot(x, y) for y in g] for x, g in zip(r, groups, strict=True)]
    pair = ref_ce(pair_logits, [0] * m)
    cmr = [max(0.0, thr + d - row[0]) for row in pair_logits for d in row[1:]]
    da = [d for row in pair_logits for d in row[1:] if d != 0]
    estimate = sum(row[0] for row in pair_logits) / m - sum(da) / len(da)
    return itc, pair, sum(cmr) / len(cmr), estimate


def test_every_term_matches_a_float64_loop_over_the_formulas():
    g = torch.Generator().manual_seed(0)
    image, long_text, short_text = (torch.randn(5, 12, generator=g) for _ in range(3))
    region, region_text = torch.randn(13, 12, generator=g), torch.randn(13, 12, generator=g)
    region_text[3] = region_text[1] + 0.01 * torch.randn(12, generator=g)  # a near duplicate: > 0.95, zeroed
    hard_region, hard_text = torch.randn(4, 12, generator=g), torch.randn(4, 11, 12, generator=g)
    scale, bias, fine, hard = torch.tensor([2.3]), torch.tensor([-3.0]), torch.tensor(2.0), torch.tensor(1.5)
    criterion = FGCLIP2Loss(rank=0, world_size=1)
    with torch.no_grad():
        criterion.hard_loss.cmr_threshold.fill_(0.7)
    terms = criterion(image, long_text, short_text, scale, bias, region, region_text, fine, hard_region, hard_text,
                      hard, update_threshold=True)
    s = math.exp(2.3)
    want = {"global_long": ref_sigmoid(image, long_text, s, -3.0),
            "global_short": ref_sigmoid(image, short_text, s, -3.0),
            "region": ref_region(region, region_text, math.exp(2.0)), "region_text": ref_tic(region_text)}
    itc, pair, cmr, estimate = ref_hard(hard_region, hard_text, math.exp(1.5), 0.7)
    want.update(hard_itc=itc, hard_pair=pair, hard_cmr=cmr, hard_neg=0.6 * itc + 3 * pair + 0.4 * cmr)
    want["loss"] = (want["global_long"] + want["global_short"] + 0.2 * want["region"] + 0.1 * want["region_text"]
                    + 0.5 * want["hard_neg"])
    assert set(terms) == set(want)
    for name, value in want.items():
        assert terms[name].dtype == torch.float32
        assert terms[name].item() == pytest.approx(value, rel=1e-5, abs=1e-5), name
    assert criterion.cmr_threshold.item() == pytest.approx(min(max(estimate, 0.0), 10.0), abs=1e-5)


@pytest.mark.parametrize("k", [1, 2, 9, 10, 11])
def test_tic_rule_below_ten_boxes(k):
    text = torch.randn(k, 8, requires_grad=True)
    value = TextIntraContrastiveLoss()(text)
    assert value.item() == pytest.approx(ref_tic(text.detach()), rel=1e-6)
    value.backward()
    if k == 1:  # one box: a constant log 10 (the row is [0] padded with zeros), no gradient
        assert value.item() == pytest.approx(math.log(10)) and text.grad.abs().sum() == 0
    else:
        assert text.grad.abs().sum() > 0
    empty = torch.zeros(0, 8, requires_grad=True)
    zero = TextIntraContrastiveLoss()(empty)
    zero.backward()
    assert zero.item() == 0.0 and empty.grad is not None


def test_cmr_threshold_is_state_clamped_and_only_updated_when_asked():
    loss = HardNegativeLoss()
    region = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    good = torch.stack([torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.2]]),
                        torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.3, -1.0]])])
    scale = torch.tensor(math.log(20.0))
    first = loss(region, good, scale, update_threshold=False)
    assert loss.cmr_threshold.item() == 0.0 and first["hard_cmr"].item() == 0.0  # first step: margin 0
    loss(region, good, scale, update_threshold=True)
    assert loss.cmr_threshold.item() == 10.0  # 20 - mean of the nonzero negatives (about -19.4): 39, clamped to 10
    bad = good[:, [1, 0, 2]]  # the positive is now the worse phrase: negative estimate, clamped to 0
    with_margin = loss(region, bad, scale, update_threshold=True)
    assert with_margin["hard_cmr"].item() > 0 and loss.cmr_threshold.item() == 0.0
    assert "hard_loss.cmr_threshold" in FGCLIP2Loss().state_dict()
    assert HardNegativeLoss().to(torch.bfloat16).cmr_threshold.dtype == torch.float32
    empty = loss(torch.zeros(0, 2), torch.zeros(0, 3, 2), scale, update_threshold=True)
    assert empty["hard_neg"].item() == 0.0 and loss.cmr_threshold.item() == 0.0
    with pytest.raises(ValueError, match=r"\(M=2, 1 \+ N >= 2, D\)"):
        loss(region, good[:, :1], scale)


def test_forward_terms_and_per_term_gradients():
    model = tiny_model()
    model.train()
    out = model(**make_batch(model.config))
    names = {"global_long", "global_short", "region", "region_text", "hard_neg", "hard_itc", "hard_pair", "hard_cmr"}
    assert names | {"loss", "cmr_threshold"} <= set(out) and all(torch.isfinite(v).all() for v in out.values())
    touches = {
        "global_long": ["logit_scale", "logit_bias", "longtext_head.weight", "vision_model.head.probe",
                        "text_model.embeddings.position_embedding_ori.weight",
                        "text_model.embeddings.position_embedding_res.weight"],
        "global_short": ["logit_scale", "logit_bias", "text_model.head.weight",
                         "text_model.embeddings.position_embedding.weight"],
        "region": ["logit_scale_finegraind", "boxtext_head.weight", "dense_feature_head.mlp.fc1.weight",
                   "vision_model.encoder.layers.1.mlp.fc1.weight"],
        "region_text": ["boxtext_head.weight", "text_model.encoder.layers.0.mlp.fc1.weight"],
        "hard_itc": ["logit_scale_hardneg", "boxtext_head.weight", "dense_feature_head.attention.in_proj_weight"],
        "hard_pair": ["logit_scale_hardneg", "boxtext_head.weight", "vision_model.embeddings.patch_embedding.weight"],
        "hard_cmr": ["logit_scale_hardneg", "boxtext_head.weight", "dense_feature_head.mlp.fc2.weight"],
    }
    never = {
        "global_long": ["text_model.head.weight", "boxtext_head.weight", "logit_scale_finegraind",
                        "dense_feature_head.probe"],
        "global_short": ["longtext_head.weight", "boxtext_head.weight", "logit_scale_hardneg",
                         "text_model.embeddings.position_embedding_res.weight"],
        "region": ["logit_scale", "logit_scale_hardneg", "text_model.head.weight", "longtext_head.weight",
                   "vision_model.head.probe"],
        "region_text": ["logit_scale_finegraind", "dense_feature_head.mlp.fc1.weight", "vision_model.head.probe"],
        "hard_itc": ["logit_scale", "logit_scale_finegraind", "text_model.head.weight"],
        "hard_pair": ["logit_scale", "logit_scale_finegraind", "longtext_head.weight"],
        "hard_cmr": ["logit_scale", "logit_scale_finegraind", "text_model.head.weight"],
    }
    params = dict(model.named_parameters())
    batch = make_batch(model.config)
    with torch.no_grad():  # centre the box-phrase features: a random tower maps every padded phrase to cosine > 0.95,
        # which TIC zeroes by design (near duplicates), leaving it without gradient
        pooled = model.encode_text(batch["box_input_ids"]).mean(0)
        model.boxtext_head.bias.copy_(-model.boxtext_head.weight @ pooled)
    for term, touched in touches.items():
        model.zero_grad()
        with torch.no_grad():
            model.criterion.cmr_threshold.fill_(0.5)  # a margin, so CMR is active on random features
        model(**batch)[term].backward()
        for name in touched:
            assert params[name].grad is not None and params[name].grad.abs().sum() > 0, (term, name)
        for name in never[term]:
            assert params[name].grad is None or params[name].grad.abs().sum() == 0, (term, name)


def test_bf16_model_trains_every_term_and_eval_keeps_the_margin():
    model = tiny_model()
    batch = make_batch(model.config)
    model.eval()
    with torch.no_grad():
        reference = model(**batch)
    assert model.criterion.cmr_threshold.item() == 0.0  # eval forward: no update
    model = model.to(torch.bfloat16).train()
    out = model(**{k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in batch.items()})
    out["loss"].backward()
    for name in ("global_long", "region", "region_text", "hard_itc", "hard_pair", "loss"):
        assert out[name].dtype == torch.float32 and torch.isfinite(out[name])
        assert out[name].item() == pytest.approx(reference[name].item(), rel=0.05, abs=0.05), name
    assert model.dense_feature_head.mlp.fc1.weight.grad.abs().sum() > 0  # box terms reach the dense head in bf16
    assert model.criterion.cmr_threshold.dtype == torch.float32 and model.criterion.cmr_threshold.item() > 0


def test_one_box_and_no_hard_boxes_work():
    model = tiny_model()
    batch = make_batch(model.config, counts=(1, 0, 0), hard_boxes=())
    out = model(**batch)
    assert out["region"].item() == pytest.approx(0.0, abs=1e-6)  # one box is its own only candidate
    assert out["region_text"].item() == pytest.approx(math.log(10), rel=1e-6)
    assert out["hard_neg"].item() == 0.0
    out["loss"].backward()
    assert model.logit_scale_hardneg.grad is not None  # still in the graph, so DeepSpeed sees every parameter


def test_region_loss_empty_is_zero_in_graph():
    region = torch.zeros(0, 4, requires_grad=True)
    scale = torch.tensor(1.0, requires_grad=True)
    value = RegionContrastiveLoss()(region, torch.zeros(0, 4), scale)
    value.backward()
    assert value.item() == 0.0 and scale.grad is not None


TWO_RANK_SCRIPT = textwrap.dedent("""
    import sys, torch, torch.distributed as dist
    from fgclip_lmm.losses_fgclip2 import HardNegativeLoss, SigmoidGlobalLoss
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    g = torch.Generator().manual_seed(0)
    img, txt = torch.randn(8, 6, generator=g), torch.randn(8, 6, generator=g)
    region, text = torch.randn(6, 6, generator=g), torch.randn(6, 11, 6, generator=g)
    rows = slice(rank * 4, (rank + 1) * 4)
    local_img, local_txt = img[rows].clone().requires_grad_(True), txt[rows].clone().requires_grad_(True)
    criterion = SigmoidGlobalLoss(rank=rank, world_size=world)
    loss = criterion(local_img, local_txt, torch.tensor([2.0]), torch.tensor([-1.0]))
    loss.backward()
    hard = HardNegativeLoss(rank=rank, world_size=world)
    hard(region[rank * 3:(rank + 1) * 3], text[rank * 3:(rank + 1) * 3], torch.tensor(1.0), update_threshold=True)
    out = {}
    for name, value in (("loss", loss.detach().reshape(1)), ("img_grad", local_img.grad), ("txt_grad", local_txt.grad)):
        parts = [torch.zeros_like(value) for _ in range(world)]
        dist.all_gather(parts, value)
        out[name] = torch.cat(parts)
    out["threshold"] = hard.cmr_threshold.clone()
    torch.save(out, sys.argv[1] + f".{rank}")
    dist.destroy_process_group()
""")


def test_two_gloo_processes_equal_one(tmp_path):
    run_gloo_ranks(TWO_RANK_SCRIPT, tmp_path, tmp_path / "out.pt")
    results = [torch.load(tmp_path / f"out.pt.{r}", weights_only=True) for r in range(2)]
    g = torch.Generator().manual_seed(0)
    img, txt = torch.randn(8, 6, generator=g), torch.randn(8, 6, generator=g)
    region, text = torch.randn(6, 6, generator=g), torch.randn(6, 11, 6, generator=g)
    img.requires_grad_(True)
    txt.requires_grad_(True)
    full = SigmoidGlobalLoss(rank=0, world_size=1)(img, txt, torch.tensor([2.0]), torch.tensor([-1.0]))
    full.backward()
    result = results[0]
    torch.testing.assert_close(result["loss"].mean(), full.detach(), rtol=0, atol=1e-6)
    # each rank divides by its own 4 images: the summed per-rank gradients are twice the full-batch mean's
    torch.testing.assert_close(result["img_grad"] / 2, img.grad, rtol=0, atol=1e-6)
    torch.testing.assert_close(result["txt_grad"] / 2, txt.grad, rtol=0, atol=1e-6)
    estimates = [ref_hard(region[r * 3:(r + 1) * 3], text[r * 3:(r + 1) * 3], math.e, 0.0)[3] for r in range(2)]
    expected = min(max(sum(estimates) / 2, 0.0), 10.0)
    for r in range(2):  # every rank holds the same all-reduced margin
        assert results[r]["threshold"].item() == pytest.approx(expected, abs=1e-5)
