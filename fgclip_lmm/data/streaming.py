"""Streaming readers: any record format through a `datasets` streaming dataset, validated and decoded on the fly.

For shards too large to validate up front. `RecordStream` splits the stream across (rank, DataLoader worker)
nodes with `datasets.distributed.split_dataset_by_node`, validates each raw record with the same parser the
map-style reader uses, decodes its image, and yields the same sample dicts. Bad records follow the policy as
they arrive; record indices in messages count within the node's stream. Per-rank counts are not equalised
(a stream has no length): bound streaming runs by steps.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from fgclip_lmm.data.bad_records import BadReason, BadRecordPolicy
from fgclip_lmm.data.images import ImageConfig, ImagePreprocessor, ImageTooLargeError
from fgclip_lmm.data.records_io import resolve_data_files, stream_records


class RecordStream(IterableDataset):
    """`parse(raw, source, index, policy=...) -> record | None`; `to_sample(record, pixels, rng) -> dict`."""

    def __init__(
        self,
        data_path,
        parse: Callable,
        to_sample: Callable,
        preprocessor: ImagePreprocessor,
        policy: BadRecordPolicy,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.data_path, self.files = data_path, resolve_data_files(data_path)
        self.parse, self.to_sample, self.preprocessor, self.policy = parse, to_sample, preprocessor, policy
        self.seed, self.rank, self.world_size, self.epoch = seed, rank, world_size, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        from datasets.distributed import split_dataset_by_node

        worker = get_worker_info()
        workers, worker_id = (worker.num_workers, worker.id) if worker else (1, 0)
        node, nodes = self.rank * workers + worker_id, self.world_size * workers
        stream = split_dataset_by_node(stream_records(self.files), rank=node, world_size=nodes)
        source = f"{self.data_path} (stream node {node}/{nodes})"
        for index, raw in enumerate(stream):
            record = self.parse(raw, source, index, policy=self.policy)
            if record is None:
                continue
            pixels = None
            if record.image_path is not None:
                try:
                    pixels = self.preprocessor.load(record.image_path)
                except FileNotFoundError:
                    self.policy.reject(
                        BadReason.MISSING_IMAGE,
                        source,
                        index,
                        record.image_field,
                        f"image not found: {record.image_path}",
                    )
                    continue
                except ImageTooLargeError as error:
                    self.policy.reject(BadReason.IMAGE_TOO_LARGE, source, index, record.image_field, str(error))
                    continue
                except Exception as error:  # noqa: BLE001 - any decoder failure is a corrupt image
                    self.policy.reject(
                        BadReason.CORRUPT_IMAGE,
                        source,
                        index,
                        record.image_field,
                        f"cannot decode {record.image_path}: {error}",
                    )
                    continue
            yield self.to_sample(record, pixels, np.random.default_rng((self.seed, self.epoch, node, index)))


def _stream(config, parse, to_sample, policy, seed, rank, world_size) -> RecordStream:
    policy = policy or BadRecordPolicy(config.on_bad_record)
    return RecordStream(
        config.data_path,
        functools.partial(parse, config=config),
        to_sample,
        ImagePreprocessor(ImageConfig(size=config.image_size, max_pixels=config.max_image_pixels)),
        policy,
        seed,
        rank,
        world_size,
    )


def stream_finehard(config, policy: BadRecordPolicy | None = None, rank: int = 0, world_size: int = 1) -> RecordStream:
    from fgclip_lmm.data.finehard import make_finehard_sample, parse_finehard_record

    return _stream(config, parse_finehard_record, make_finehard_sample, policy, config.seed, rank, world_size)


def stream_pairs(config, policy: BadRecordPolicy | None = None, rank: int = 0, world_size: int = 1) -> RecordStream:
    from fgclip_lmm.data.pairs import make_pair_sample, parse_pair_record

    return _stream(config, parse_pair_record, make_pair_sample, policy, 0, rank, world_size)


def stream_llava(config, policy: BadRecordPolicy | None = None, rank: int = 0, world_size: int = 1) -> RecordStream:
    from fgclip_lmm.data.llava_json import make_llava_sample, parse_llava_record

    return _stream(config, parse_llava_record, make_llava_sample, policy, 0, rank, world_size)
