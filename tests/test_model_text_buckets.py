"""Length-bucketed text encoding: the buckets partition the rows, and the bucketed forward gives the unbucketed
loss (bit-identical where the attention kernel is width-invariant, float32 rounding otherwise)."""
import itertools

import pytest
import torch
from test_losses import make_batch
from torch.nn.attention import SDPBackend, sdpa_kernel

from fgclip_lmm.model import FGCLIPConfig, FGCLIPModel
from fgclip_lmm.model.modeling_fgclip import _merge_widths, length_buckets


def ragged(cfg: FGCLIPConfig, rows: int, width: int, shortest: int, gen: torch.Generator) -> torch.Tensor:
    """(rows, width) ids of random true lengths in [shortest, width], eos-padded like the collator's batches."""
    ids = torch.randint(0, cfg.text_config.vocab_size - 2, (rows, width), generator=gen)
    lengths = torch.randint(shortest, width + 1, (rows,), generator=gen)
    ids[torch.arange(width)[None] >= lengths[:, None] - 1] = cfg.text_config.eos_token_id
    return ids


def ragged_batch(cfg: FGCLIPConfig, shortest: int, seed: int = 1) -> dict:
    batch = make_batch(cfg)
    gen = torch.Generator().manual_seed(seed)
    for key, width in (("long_input_ids", 120), ("short_input_ids", 22), ("box_input_ids", 18),
                       ("hard_input_ids", 18)):
        batch[key] = ragged(cfg, batch[key].shape[0], width, shortest, gen)
    return batch


def test_buckets_partition_rows_at_multiples_of_eight():
    gen = torch.Generator().manual_seed(0)
    first_eos = torch.randint(0, 77, (300,), generator=gen)
    buckets = length_buckets(first_eos, 77, 8, max_buckets=32)
    rows = torch.cat([r for _, r in buckets])
    assert sorted(rows.tolist()) == list(range(300))
    widths = [w for w, _ in buckets]
    assert widths == sorted(widths) and all(w % 8 == 0 or w == 77 for w in widths)
    for width, members in buckets:  # every row fits, and none could take the next narrower multiple of 8
        assert bool((first_eos[members] < width).all())
        assert bool((first_eos[members] >= min(width, 80) - 8).all())


def test_bucket_merging_is_optimal():
    widths, counts = [8, 16, 24, 32, 40, 48], [50, 1, 30, 2, 2, 9]

    def cost(subset, overhead):
        return sum(c * min(s for s in subset if s >= w) for w,
                   c in zip(widths, counts, strict=True)) + overhead * len(subset)
    for k, overhead in itertools.product((1, 2, 3, 4, 8), (0, 40, 400, 10**6)):
        chosen = _merge_widths(widths, counts, k, overhead)
        assert len(chosen) <= k and chosen[-1] == widths[-1] and chosen == sorted(chosen)
        best = min(cost(list(s) + [48], overhead) for r in range(min(k, 6)) for s in
                   itertools.combinations(widths[:-1], r))
        assert cost(chosen, overhead) == best
    assert _merge_widths(widths, counts, 8, 10**6) == [48]  # a huge per-call cost: one bucket
    first_eos = torch.tensor([3] * 50 + [50] * 9)
    assert [w for w, _ in length_buckets(first_eos, 64, 8, max_buckets=1)] == [56]


@pytest.mark.parametrize("width", [32, 64])
def test_bucketed_loss_is_bit_identical_with_a_width_invariant_kernel(width):
    torch.manual_seed(0)
    model = FGCLIPModel(FGCLIPConfig.tiny(width=width)).train()
    batch = ragged_batch(model.config, shortest=9)
    with sdpa_kernel(SDPBackend.MATH):
        terms = {}
        for bucket in (True, False):
            model.bucket_texts = bucket
            terms[bucket] = model(**batch)
    for name in ("global_long", "global_short", "region", "hard_neg", "loss"):
        assert torch.equal(terms[True][name], terms[False][name]), name


def test_bucketed_forward_matches_within_rounding_on_the_default_kernel():
    torch.manual_seed(0)
    model = FGCLIPModel(FGCLIPConfig.tiny(width=64)).train()
    batch = ragged_batch(model.config, shortest=2)
    grads, losses = {}, {}
    for bucket in (True, False):
        model.bucket_texts = bucket
        model.zero_grad()
        out = model(**batch)
        out["loss"].backward()
        losses[bucket] = out["loss"].detach()
        grads[bucket] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    torch.testing.assert_close(losses[True], losses[False], rtol=2e-6, atol=0)
    assert grads[True].keys() == grads[False].keys()
    # weight gradients sum over rows in another order; compare relative to the whole gradient's norm (some,
    # like the key biases', are zero in exact arithmetic and pure rounding noise here)
    flat = {b: torch.cat([g.flatten() for g in grads[b].values()]) for b in grads}
    assert float((flat[True] - flat[False]).norm()) <= 1e-5 * float(flat[False].norm())
    # the long path takes up to TEXT_MAX_BUCKETS widths, here 120 tokens -> 15 multiples of 8 merged into 8
    with torch.no_grad():
        long_ids = batch["long_input_ids"].repeat(8, 1)
        assert len(length_buckets((long_ids == model.config.text_config.eos_token_id).int().argmax(-1), 120, 8)) <= 8
        torch.testing.assert_close(model.get_text_features(long_ids, walk_short_pos=False, bucket=True),
                                   model.get_text_features(long_ids, walk_short_pos=False, bucket=False),
                                   rtol=1e-5, atol=1e-6)
