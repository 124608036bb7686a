"""Length grouping balances the ranks of a synchronous step (not only padding within a micro-batch)."""
import random

from fgclip_lmm.lmm.grouping import grouped_batches


def sync_efficiency(batches, lengths, world):
    real = sum(lengths)
    slots = 0
    for start in range(0, len(batches), world):
        step = batches[start:start + world]
        slots += world * max(len(b) * max(lengths[i] for i in b) for b in step)
    return real / slots


def test_ranks_of_a_step_get_similar_lengths():
    rng = random.Random(0)
    lengths = [rng.randint(50, 900) for _ in range(16 * 8 * 32)]
    grouped = grouped_batches(lengths, 16, world_size=8, seed=0, group_by_modality=False)
    single_window = grouped_batches(lengths, 16, world_size=8, seed=0, group_by_modality=False, window_steps=1)
    assert sorted(i for b in grouped for i in b) == list(range(len(lengths)))
    assert sync_efficiency(grouped, lengths, 8) > 0.9 > 0.7 > sync_efficiency(single_window, lengths, 8)
