"""A resumable, distributed sampler: its state (epoch, position, seed) is saved and restored with checkpoints.

Each epoch draws one permutation of the whole dataset from `seed + epoch` (identical on every rank), extends it
by wrapping (or cuts it, with `drop_last`) to a multiple of `num_replicas`, and gives rank r the slice
`r::num_replicas`, so every rank gets the same number of samples. `position` counts the samples of the current
epoch this rank has already consumed; iteration restarts from there.

A DataLoader pulls indices ahead of training (workers x prefetch), so the sampler's own count runs ahead of what
the model has seen. The trainer should therefore pass the consumed count: `state_dict(consumed=steps * batch)`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class ResumableSampler(Sampler[int]):
    def __init__(
        self,
        dataset_len: int,
        seed: int = 0,
        shuffle: bool = True,
        num_replicas: int = 1,
        rank: int = 0,
        drop_last: bool = False,
    ):
        if dataset_len <= 0:
            raise ValueError("ResumableSampler needs a non-empty dataset")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} outside [0, {num_replicas})")
        if drop_last and dataset_len < num_replicas:
            raise ValueError(f"drop_last with {dataset_len} samples leaves nothing for {num_replicas} ranks")
        self.dataset_len, self.seed, self.shuffle = dataset_len, seed, shuffle
        self.num_replicas, self.rank, self.drop_last = num_replicas, rank, drop_last
        self.epoch = 0
        self.position = 0

    @property
    def num_samples(self) -> int:
        """Samples per rank per epoch (equal on every rank)."""
        if self.drop_last:
            return self.dataset_len // self.num_replicas
        return math.ceil(self.dataset_len / self.num_replicas)

    def __len__(self) -> int:
        return self.num_samples - self.position

    def epoch_indices(self, epoch: int | None = None) -> torch.Tensor:
        """This rank's full index order for `epoch` (default: the current one)."""
        epoch = self.epoch if epoch is None else epoch
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + epoch)
            order = torch.randperm(self.dataset_len, generator=generator)
        else:
            order = torch.arange(self.dataset_len)
        total = self.num_samples * self.num_replicas
        if total > self.dataset_len:
            order = order.repeat(math.ceil(total / self.dataset_len))
        return order[:total][self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        indices = self.epoch_indices()
        while self.position < len(indices):
            index = int(indices[self.position])
            self.position += 1
            yield index
        self.epoch += 1
        self.position = 0

    def set_epoch(self, epoch: int) -> None:
        """Start `epoch` from its beginning (DistributedSampler-compatible)."""
        self.epoch, self.position = epoch, 0

    def state_dict(self, consumed: int | None = None) -> dict[str, int]:
        """State to checkpoint; `consumed` (samples this rank trained on this epoch) overrides the prefetch count."""
        position = self.position if consumed is None else consumed
        if not 0 <= position <= self.num_samples:
            raise ValueError(f"consumed={position} outside [0, {self.num_samples}] for this epoch")
        return {
            "epoch": self.epoch,
            "position": position,
            "seed": self.seed,
            "dataset_len": self.dataset_len,
            "num_replicas": self.num_replicas,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        for key in ("seed", "dataset_len", "num_replicas"):
            if key in state and state[key] != getattr(self, key):
                raise ValueError(
                    f"sampler state has {key}={state[key]} but this run uses {getattr(self, key)}; "
                    "resuming would not replay the same samples"
                )
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        if self.position >= self.num_samples:  # checkpointed exactly at an epoch boundary
            self.epoch, self.position = self.epoch + 1, 0
