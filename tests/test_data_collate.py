"""FG-CLIP collator: the batch contract, packing without padding, empty hard sets, truncation policy."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from fgclip_lmm.data.collate import CollatorConfig, FGClipCollator
from fgclip_lmm.data.finehard import FineHardConfig, FineHardDataset
from fgclip_lmm.data.text import TextTooLongError, encode_texts
from fgclip_lmm.data.tokenizers import train_clip_tokenizer

WORDS = "a photo of red blue green small large striped dotted circle square star triangle on the left right"


def _negatives(noun: str) -> dict[str, str]:
    return {
        f"neg_{k:02d}": f"{colour} {noun}"
        for k, colour in enumerate(
            [
                "blue",
                "green",
                "small blue",
                "large green",
                "striped blue",
                "dotted green",
                "small red",
                "large red",
                "striped red",
                "dotted red",
            ]
        )
    }


def _item(i: int, n_boxes: int, hard: list[bool]) -> dict:
    boxes = [
        {
            "bbox": [0.1 * j, 0.1, 0.1 * j + 0.2, 0.6, 0.9],
            "short_expr": f"red circle {j}",
            "long_expr": f"a large red striped circle on the left {j}",
            "flag_short_neg": int(hard[j]),
            "short_expr_negs": _negatives("circle") if hard[j] else {},
        }
        for j in range(n_boxes)
    ]
    return {
        "f_path": f"grit-20m/data-12m/img/{i}.png",
        "caption": f"a large red striped circle on the left {i}",
        "short_caption": "red circle",
        "bbox_info": boxes,
    }


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return train_clip_tokenizer([WORDS] * 3, tmp_path_factory.mktemp("tok"), vocab_size=700)


@pytest.fixture()
def dataset(tmp_path):
    (tmp_path / "img").mkdir()
    layout = [(0, []), (2, [True, False]), (6, [True, True, False, True, True, True]), (1, [False])]
    for i, _ in enumerate(layout):
        Image.new("RGB", (40, 30), (60 * i, 20, 20)).save(tmp_path / "img" / f"{i}.png")
    items = [_item(i, n, hard) for i, (n, hard) in enumerate(layout)]
    (tmp_path / "part.jsonl").write_text(json.dumps(items))  # a JSON array in a .jsonl file, like FineHARD
    return FineHardDataset(
        FineHardConfig(str(tmp_path / "part.jsonl"), image_root=str(tmp_path), image_size=16, seed=3)
    )


def test_batch_contract_shapes_dtypes_and_packing(dataset, tokenizer):
    batch = FGClipCollator(tokenizer)([dataset[i] for i in range(4)])
    assert set(batch) == {
        "pixel_values",
        "long_input_ids",
        "short_input_ids",
        "box_counts",
        "boxes",
        "box_input_ids",
        "hard_box_index",
        "hard_input_ids",
        "hard_counts",
    }
    assert batch["pixel_values"].shape == (4, 3, 16, 16) and batch["pixel_values"].dtype == torch.float32
    assert batch["box_counts"].tolist() == [0, 2, 4, 1]  # max_boxes = 4 keeps the first four
    assert batch["boxes"].shape == (7, 4) and batch["box_input_ids"].shape[0] == 7
    # boxes with negatives among the packed K = 7: image 1 box 0 (-> 0), image 2 boxes 0, 1, 3 (-> 2, 3, 5)
    assert batch["hard_box_index"].tolist() == [0, 2, 3, 5]
    assert batch["hard_counts"].tolist() == [0, 1, 3, 0]
    assert batch["hard_input_ids"].shape[0] == 4 * 11
    for key in ("long_input_ids", "short_input_ids", "box_input_ids", "hard_input_ids", "box_counts", "hard_box_index"):
        assert batch[key].dtype == torch.long, key
    assert batch["boxes"].dtype == torch.float32 and bool(((batch["boxes"] >= 0) & (batch["boxes"] <= 1)).all())


def test_collator_never_encodes_padding(dataset, tokenizer):
    batch = FGClipCollator(tokenizer)([dataset[i] for i in range(4)])
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    for key in ("long_input_ids", "short_input_ids", "box_input_ids", "hard_input_ids"):
        ids = batch[key]
        assert bool((ids[:, 0] == bos).all()), key
        # every row holds real text: at least one token between bos and its first eos
        first_eos = (ids == eos).int().argmax(1)
        assert bool((first_eos >= 2).all()), key
        # padded to the longest row only: some row has no padding at all
        assert bool((ids[:, -1] == eos).all()) and int(first_eos.max()) == ids.shape[1] - 1, key
    texts = tokenizer.batch_decode(batch["hard_input_ids"], skip_special_tokens=True)
    assert texts[0].startswith("red circle") and texts[1:11] == [t.lower() for t in _negatives("circle").values()]


def test_positives_lead_each_hard_group_and_match_their_box(dataset, tokenizer):
    samples = [dataset[i] for i in range(4)]
    batch = FGClipCollator(tokenizer)(samples)
    hard = tokenizer.batch_decode(batch["hard_input_ids"], skip_special_tokens=True)
    short_by_box = [f"red circle {j}" for s in samples for j in range(len(s["box_texts"]))]
    for m, k in enumerate(batch["hard_box_index"].tolist()):
        assert hard[m * 11] == short_by_box[k]


def test_batch_without_hard_negatives_gives_empty_tensors(dataset, tokenizer):
    batch = FGClipCollator(tokenizer)([dataset[0], dataset[3]])
    assert batch["hard_box_index"].shape == (0,)
    assert batch["hard_input_ids"].shape == (0, 2) and batch["hard_counts"].tolist() == [0, 0]
    empty = FGClipCollator(tokenizer)([dataset[0]])
    assert empty["boxes"].shape == (0, 4) and empty["box_input_ids"].shape == (0, 2)


def test_region_text_choice_is_seeded_per_epoch(dataset):
    assert dataset[2]["box_texts"] == dataset[2]["box_texts"]
    seen = []
    for epoch in range(6):
        dataset.set_epoch(epoch)
        seen.append(tuple(dataset[2]["box_texts"]))
    dataset.set_epoch(0)
    flat = [text for texts in seen for text in texts]
    assert any(t.startswith("red circle") for t in flat) and any(t.startswith("a large red") for t in flat)
    assert len(set(seen)) > 1


def test_stage1_batches_have_global_keys_only(dataset, tokenizer):
    batch = FGClipCollator(tokenizer, CollatorConfig(stage=1))([dataset[1], dataset[2]])
    assert set(batch) == {"pixel_values", "long_input_ids", "short_input_ids"}


def test_truncation_policy_error_names_record_and_field_truncate_counts(dataset, tokenizer):
    samples = [dataset[1], dataset[2]]
    with pytest.raises(TextTooLongError, match=r"record 1, field 'long_caption'"):
        FGClipCollator(tokenizer, CollatorConfig(long_max_length=6))(samples)
    collator = FGClipCollator(tokenizer, CollatorConfig(long_max_length=6, truncation="truncate"))
    batch = collator(samples)
    assert batch["long_input_ids"].shape == (2, 6)
    assert batch["long_input_ids"][:, -1].tolist() == [tokenizer.eos_token_id] * 2
    assert batch["long_input_ids"][:, 0].tolist() == [tokenizer.bos_token_id] * 2
    assert collator.report.truncated == {"long_caption": 2}


def test_encode_texts_matches_hf_truncation(tokenizer):
    texts = ["red circle", "a large red striped circle on the left right left right"]
    ours, n = encode_texts(tokenizer, texts, 8, "t", "truncate")
    reference = tokenizer(texts, max_length=8, truncation=True, padding="longest", return_tensors="pt").input_ids
    assert n == 1 and torch.equal(ours, reference)


def test_empty_text_never_reaches_the_encoder(tokenizer):
    with pytest.raises(ValueError, match="rec 1, field 'box_text': empty text"):
        encode_texts(tokenizer, ["red circle", ""], 77, "box_text", "error", ["rec 0", "rec 1"])
