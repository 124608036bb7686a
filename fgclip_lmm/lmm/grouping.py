"""Length- and modality-grouped batch order (LLaVA's `group_by_modality_length`), as plain index lists and as a
resumable, rank-aware batch sampler.

Algorithm (per epoch, seeded by `seed + epoch`, identical on every rank): split the indices by modality (the sign
of `modality_lengths`: > 0 image, < 0 text-only; with `group_by_modality=False` everything is one group), shuffle
each group and cut it into windows of `window_steps` steps (a step is `world_size x batch_size` samples). Each
window is sorted by length (longest first) and cut into consecutive micro-batches, and each run of `world_size`
consecutive micro-batches is one step. The full steps of both modalities are shuffled together; the partial
leftovers are joined into final (possibly mixed) steps. Every index appears exactly once; with `drop_last` the
incomplete tail step is dropped instead.

A step's micro-batches are neighbours in a sorted window, so the ranks of a synchronous data-parallel step hold
similar lengths and none waits long on another (with `window_steps=1` each step would be one random sample of
lengths, and the rank given its longest part would set every step's time; measured in
benchmarks/bench_lmm_train.py).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


def _window_steps(indices: list[int], lengths: Sequence[int], batch_size: int, world_size: int,
                  window_steps: int) -> list[list[list[int]]]:
    """Steps (lists of `world_size` micro-batches) cut from length-sorted windows of `window_steps` steps."""
    step = batch_size * world_size
    steps = []
    for start in range(0, len(indices), step * window_steps):
        window = sorted(indices[start:start + step * window_steps], key=lambda i: -abs(lengths[i]))
        micro = [window[k:k + batch_size] for k in range(0, len(window), batch_size)]
        steps += [micro[k:k + world_size] for k in range(0, len(micro), world_size)]
    return steps


def grouped_batches(
    lengths: Sequence[int], batch_size: int, world_size: int = 1, seed: int = 0, group_by_modality: bool = True,
    drop_last: bool = False, window_steps: int = 16,
) -> list[list[int]]:
    """Micro-batches in global order (see the module docstring); `lengths` may be signed modality lengths."""
    if batch_size <= 0 or world_size <= 0 or window_steps <= 0:
        raise ValueError(f"batch_size, world_size and window_steps must be > 0, got {batch_size}, {world_size}, "
                         f"{window_steps}")
    if any(length == 0 for length in lengths):
        raise ValueError("lengths must be non-zero (the sign carries the modality); estimated_length() returns >= 1")
    generator = torch.Generator().manual_seed(seed)
    size = batch_size * world_size
    if group_by_modality:
        groups = [[i for i, n in enumerate(lengths) if n > 0], [i for i, n in enumerate(lengths) if n < 0]]
    else:
        groups = [list(range(len(lengths)))]
    full, leftovers = [], []
    for group in groups:
        order = [group[i] for i in torch.randperm(len(group), generator=generator).tolist()]
        cut = len(order) - len(order) % size
        full += _window_steps(order[:cut], lengths, batch_size, world_size, window_steps)
        leftovers += order[cut:]
    steps = [full[i] for i in torch.randperm(len(full), generator=generator).tolist()]
    if leftovers:
        steps += _window_steps(leftovers, lengths, batch_size, world_size, 1)
    batches = [batch for step in steps for batch in step]
    if drop_last:
        n_steps = sum(1 for step in steps if sum(map(len, step)) == size)
        batches = batches[: n_steps * world_size]
    return batches


class GroupedBatchSampler(Sampler[list[int]]):
    """Rank r's micro-batches of `grouped_batches` for the current epoch; resumable via `state_dict`.

    Use as `DataLoader(dataset, batch_sampler=GroupedBatchSampler(...))`. Without `drop_last`, a final step with
    fewer than `world_size` micro-batches gives the ranks that have none the step's first micro-batch again, so
    every rank runs the same number of steps.
    """

    def __init__(
        self, lengths: Sequence[int], batch_size: int, world_size: int = 1, rank: int = 0, seed: int = 0,
        group_by_modality: bool = True, drop_last: bool = False, window_steps: int = 16,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside [0, {world_size})")
        self.lengths = list(lengths)
        self.batch_size, self.world_size, self.rank, self.seed = batch_size, world_size, rank, seed
        self.group_by_modality, self.drop_last, self.window_steps = group_by_modality, drop_last, window_steps
        self.epoch = 0
        self.position = 0  # micro-batches of this epoch already consumed by this rank

    def _rank_batches(self) -> list[list[int]]:
        batches = grouped_batches(self.lengths, self.batch_size, self.world_size, self.seed + self.epoch,
                                  self.group_by_modality, self.drop_last, self.window_steps)
        mine = []
        for start in range(0, len(batches), self.world_size):
            step = batches[start:start + self.world_size]
            mine.append(step[self.rank] if self.rank < len(step) else step[0])
        return mine

    def __len__(self) -> int:
        return len(self._rank_batches())

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._rank_batches()
        while self.position < len(batches):
            batch = batches[self.position]
            self.position += 1
            yield batch
        self.set_epoch(self.epoch + 1)

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.position = int(epoch), 0

    def state_dict(self, consumed: int | None = None) -> dict:
        """`consumed`: micro-batches the model has actually trained on this epoch (a DataLoader reads ahead)."""
        return {"epoch": self.epoch, "position": self.position if consumed is None else int(consumed),
                "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        if state.get("seed", self.seed) != self.seed:
            raise ValueError(f"sampler state was saved with seed {state['seed']}, this sampler has seed {self.seed}")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
