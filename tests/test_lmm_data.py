"""LMM dataset (dummy images, counted skips), padding collator and length/modality-grouped batch order."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer, LlavaImageProcessor, LlavaProcessor

from fgclip_lmm.data.llava_json import LlavaJsonConfig, LlavaJsonDataset
from fgclip_lmm.data.tokenizers import train_llm_tokenizer
from fgclip_lmm.lmm.assemble import add_lmm_tokens
from fgclip_lmm.lmm.dataset import (
    LmmCollator,
    LmmSupervisedDataset,
    NoUsableSampleError,
    dummy_pixel_values,
    image_seq_length,
)
from fgclip_lmm.lmm.encode import IGNORE_INDEX
from fgclip_lmm.lmm.grouping import GroupedBatchSampler, grouped_batches
from fgclip_lmm.testing import DEFAULT_TEXTS


@pytest.fixture(scope="module")
def processor(tmp_path_factory):
    root = tmp_path_factory.mktemp("proc")
    train_llm_tokenizer([t for t in DEFAULT_TEXTS for _ in range(4)], root, vocab_size=400, extra_special_tokens=())
    tok = AutoTokenizer.from_pretrained(root)
    add_lmm_tokens(tok, "<image>", "<pad>")
    image_processor = LlavaImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28},
                                          do_pad=True)
    return LlavaProcessor(image_processor=image_processor, tokenizer=tok, patch_size=14,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1)


def _records(tmp_path, n_words_long=40):
    for name, color in (("red.png", (255, 0, 0)), ("wide.png", (0, 0, 255))):
        size = (40, 20) if name == "wide.png" else (28, 28)
        Image.new("RGB", size, color).save(tmp_path / name)
    long_answer = " ".join(["cube"] * n_words_long)
    records = [
        {"id": "img", "image": "red.png", "conversations": [
            {"from": "human", "value": "<image>\nwhat color?"}, {"from": "gpt", "value": "red"}]},
        {"id": "text", "conversations": [{"from": "human", "value": "hello"}, {"from": "gpt", "value": "hi there"}]},
        {"id": "wide", "image": "wide.png", "conversations": [
            {"from": "human", "value": "describe <image> " + long_answer}, {"from": "gpt", "value": "blue"}]},
    ]
    (tmp_path / "data.json").write_text(json.dumps(records))
    return tmp_path / "data.json"


def test_image_token_count_and_dummy(processor):
    assert image_seq_length(processor) == 4  # (28/14)^2 + 1 - 1
    assert dummy_pixel_values(processor).shape == (1, 3, 28, 28) and not dummy_pixel_values(processor).any()


def test_dataset_items_dummy_images_and_processor_pixels(processor, tmp_path):
    reader = LlavaJsonDataset(LlavaJsonConfig(data_path=str(_records(tmp_path)), image_root=str(tmp_path)))
    ds = LmmSupervisedDataset(reader, processor, "vicuna_v1", model_max_length=256)
    img, text, wide = ds[0], ds[1], ds[2]
    assert img["image_mask"].tolist() == [True] and img["pixel_values"].shape == (1, 3, 28, 28)
    want = processor.image_processor(images=Image.open(tmp_path / "red.png"), return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(img["pixel_values"], want)
    assert text["image_mask"].tolist() == [False] and not text["pixel_values"].any()
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    assert (img["input_ids"] == image_id).sum() == 4 and (text["input_ids"] == image_id).sum() == 0
    # `pad` aspect mode: the 40x20 image is padded with the mean colour, not cropped
    corner = wide["pixel_values"][0, :, 0, 0]
    torch.testing.assert_close(corner, torch.zeros(3), atol=0.02, rtol=0)
    assert ds.modality_lengths[0] > 0 and ds.modality_lengths[1] < 0
    assert ds.lengths[2] > ds.lengths[0]


def test_dataset_error_policy_and_counted_skip(processor, tmp_path):
    data = _records(tmp_path, n_words_long=200)
    strict = LmmSupervisedDataset(LlavaJsonDataset(LlavaJsonConfig(data_path=str(data), image_root=str(tmp_path))),
                                  processor, "vicuna_v1", model_max_length=200)
    assert strict[0]["id"] == "img" and strict[1]["id"] == "text"
    with pytest.raises(ValueError, match="sample 'wide'.*no answer token left"):
        strict[2]
    lenient = LmmSupervisedDataset(
        LlavaJsonDataset(LlavaJsonConfig(data_path=str(data), image_root=str(tmp_path), on_bad_record="skip")),
        processor, "vicuna_v1", model_max_length=200)
    assert lenient[2]["id"] == "img"  # replaced by the next good sample
    assert lenient[2]["id"] == "img" and lenient.skipped == {"no_target": 1}  # counted once


def test_dataset_counts_cut_conversations_once_and_names_an_unusable_set(processor, tmp_path):
    data = _records(tmp_path)
    records = json.loads(data.read_text())
    records[0]["conversations"][1]["value"] = "red " * 30  # the answer runs past model_max_length
    data.write_text(json.dumps(records))

    def dataset(template, max_length):
        reader = LlavaJsonDataset(LlavaJsonConfig(data_path=str(data), image_root=str(tmp_path), on_bad_record="skip"))
        return LmmSupervisedDataset(reader, processor, template, model_max_length=max_length)

    plain = dataset("plain", 12)
    assert plain[0]["id"] == "img" and len(plain[0]["input_ids"]) == 12 and plain[1]["id"] == "text"
    assert plain.truncated == {"conversations": 1} and plain.skipped == {}  # the same sample counted once
    unusable = dataset("vicuna_v1", 20)  # the system prompt alone fills 20 tokens
    with pytest.raises(NoUsableSampleError, match="none of the 3 samples can be encoded"):
        unusable[0]
    assert unusable.skipped == {"too_long": 2, "no_target": 1}


@pytest.mark.parametrize("side", ["right", "left"])
def test_collator_pads_to_longest_on_the_requested_side(side):
    samples = [
        {"input_ids": torch.tensor([5, 6, 7]), "labels": torch.tensor([-100, 6, 7]),
         "pixel_values": torch.ones(1, 3, 2, 2), "image_mask": torch.tensor([True])},
        {"input_ids": torch.tensor([8]), "labels": torch.tensor([8]),
         "pixel_values": torch.zeros(1, 3, 2, 2), "image_mask": torch.tensor([False])},
    ]
    batch = LmmCollator(pad_token_id=0, padding_side=side)(samples)
    row = [8, 0, 0] if side == "right" else [0, 0, 8]
    assert batch["input_ids"].tolist() == [[5, 6, 7], row]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [int(t != 0) for t in row]]
    assert batch["labels"][1].tolist() == [t if t else IGNORE_INDEX for t in row]
    assert batch["pixel_values"].shape == (2, 3, 2, 2) and batch["image_mask"].tolist() == [True, False]
    with pytest.raises(ValueError, match="padding_side='middle'; known: right, left"):
        LmmCollator(pad_token_id=0, padding_side="middle")


def test_grouped_batches_cover_everything_and_group_by_modality():
    rng = np.random.default_rng(0)
    lengths = [int(n) for n in rng.integers(1, 100, 37)] + [-int(n) for n in rng.integers(1, 100, 29)]
    batches = grouped_batches(lengths, batch_size=4, world_size=2, seed=3)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    mixed = [b for b in batches if len({lengths[i] > 0 for i in b}) > 1]
    assert len(mixed) <= 2 and all(b in batches[-2:] for b in mixed)  # only the final leftover megabatch mixes
    for start in range(0, len(batches) - 2, 2):  # inside a full megabatch: sorted longest first across ranks
        step = [abs(lengths[i]) for b in batches[start:start + 2] for i in b]
        if len(step) == 8:
            assert step == sorted(step, reverse=True)
    assert batches == grouped_batches(lengths, 4, 2, seed=3) and batches != grouped_batches(lengths, 4, 2, seed=4)
    with pytest.raises(ValueError, match="lengths must be non-zero"):
        grouped_batches([3, 0], 2)


def test_grouped_sampler_partitions_ranks_and_resumes():
    lengths = [n if n % 3 else -n for n in range(1, 42)]
    ranks = [GroupedBatchSampler(lengths, 4, world_size=2, rank=r, seed=1) for r in range(2)]
    per_rank = [list(s) for s in ranks]
    assert len(per_rank[0]) == len(per_rank[1])
    seen = Counter(i for batches in per_rank for b in batches for i in b)
    assert set(seen) == set(range(len(lengths))) and max(seen.values()) <= 2  # a short last step may repeat
    assert ranks[0].epoch == 1  # a finished pass moves to the next epoch
    sampler = GroupedBatchSampler(lengths, 4, world_size=2, rank=0, seed=1)
    it = iter(sampler)
    first = [next(it) for _ in range(3)]
    resumed = GroupedBatchSampler(lengths, 4, world_size=2, rank=0, seed=1)
    resumed.load_state_dict(sampler.state_dict(consumed=2))
    assert next(iter(resumed)) == first[2]
    with pytest.raises(ValueError, match="saved with seed 1"):
        GroupedBatchSampler(lengths, 4, seed=2).load_state_dict(sampler.state_dict())
