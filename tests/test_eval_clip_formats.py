"""Encoder-benchmark readers on small files written in the official formats, and their errors."""
import json
from pathlib import Path

import pytest

from fgclip_lmm.data.bad_records import BadRecordError, BadRecordPolicy
from fgclip_lmm.eval.clip.formats import DataFormatError, fgovd_split_name, read_coco_instances, read_fgovd
from fgclip_lmm.eval.clip.formats_global import detect_retrieval_format, read_image_folder, read_retrieval
from fgclip_lmm.eval.clip.templates import OPENAI_IMAGENET_80, load_templates


def fgovd_row(i, **over):
    row = {"img_path": f"val2017/{i:012d}.jpg", "bbox": [10.0, 20.0, 30.0, 40.0],
           "pos_expression": ["a red striped mug"], "neg_expression": ["a blue striped mug", "a red dotted mug"],
           "category_id": 47, "neg_category_ids": [], "width": 640, "height": 480, "image_id": i, "sent_id": i,
           "test_type": "1_attributes"}
    row.update(over)
    return row


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_fgovd_official_rows_and_split_names(tmp_path):
    hard = write_jsonl(tmp_path / "1_attributes_llava.jsonl",
                       [fgovd_row(1), fgovd_row(1, bbox=[0, 0, 640, 480], neg_expression=["x"] * 10)])
    trivial = write_jsonl(tmp_path / "shuffle_negatives_llava.jsonl", [fgovd_row(2, pos_expression="a cat")])
    data = read_fgovd([hard, trivial], None, BadRecordPolicy("error"))
    assert data.splits == ["hard", "trivial"] and data.split_of_row == [0, 0, 1]
    assert data.positives == ["a red striped mug"] * 2 + ["a cat"]
    assert [len(n) for n in data.negatives] == [2, 10, 2]
    assert data.boxes.images == [tmp_path / "val2017/000000000001.jpg", tmp_path / "val2017/000000000002.jpg"]
    assert data.boxes.box_image == [0, 0, 1] and data.boxes.frames[0] == (640.0, 480.0)
    assert data.boxes.boxes_xywh[0] == [10.0, 20.0, 30.0, 40.0]
    assert [fgovd_split_name(Path(n)) for n in ("2_attributes_llava.jsonl", "3_attributes.jsonl", "mine.jsonl")] \
        == ["medium", "easy", "mine"]


@pytest.mark.parametrize("row, field, reason", [
    ({"bbox": [1, 2, 3]}, "bbox", "missing_field"),
    ({"bbox": [1, 2, 0, 5]}, "bbox", "box_degenerate"),
    ({"bbox": [600, 2, 100, 5]}, "bbox", "box_out_of_range"),
    ({"neg_expression": ["n"] * 11}, "neg_expression", "wrong_negative_count"),
    ({"neg_expression": []}, "neg_expression", "wrong_negative_count"),
    ({"pos_expression": ["a", "b"]}, "pos_expression", "empty_caption"),
])
def test_fgovd_bad_rows_name_file_record_and_field(tmp_path, row, field, reason):
    path = write_jsonl(tmp_path / "1_attributes.jsonl", [fgovd_row(0), fgovd_row(1, **row)])
    with pytest.raises(BadRecordError) as err:
        read_fgovd([path], None, BadRecordPolicy("error"))
    assert str(path) in str(err.value) and "record 1" in str(err.value) and repr(field) in str(err.value)
    assert err.value.reason.value == reason
    policy = BadRecordPolicy("skip")
    data = read_fgovd([path], None, policy)
    assert len(data.positives) == 1 and policy.report.skipped == {reason: 1}


def test_fgovd_reader_rejects_a_file_in_another_format(tmp_path):
    coco = tmp_path / "instances.jsonl"
    coco.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    with pytest.raises(BadRecordError, match=r"instances.jsonl record 0, field 'img_path': not an FG-OVD row"):
        read_fgovd([coco], None, BadRecordPolicy("error"))
    broken = write_jsonl(tmp_path / "1_attributes.jsonl", [fgovd_row(0), "{not json"])
    with pytest.raises(BadRecordError, match=r"1_attributes.jsonl record 1.*invalid_json"):
        read_fgovd([broken], None, BadRecordPolicy("error"))


def coco_instances(tmp_path: Path) -> Path:
    (tmp_path / "annotations").mkdir(parents=True)
    (tmp_path / "val2017").mkdir()
    coco = {"images": [{"id": 7, "file_name": "a.jpg", "width": 100, "height": 50},
                       {"id": 9, "file_name": "b.jpg", "width": 80, "height": 80}],
            "annotations": [{"id": 1, "image_id": 9, "bbox": [0, 0, 10, 10], "category_id": 18, "iscrowd": 0},
                            {"id": 2, "image_id": 7, "bbox": [5, 5, 95.4, 45], "category_id": 1, "iscrowd": 1},
                            {"id": 3, "image_id": 7, "bbox": [1, 1, 2, 2], "category_id": 18}],
            "categories": [{"id": 18, "name": "dog"}, {"id": 1, "name": "person"}]}
    path = tmp_path / "annotations" / "instances_val2017.json"
    path.write_text(json.dumps(coco))
    return path


def test_coco_instances_every_annotation_labelled_by_category_id_order(tmp_path):
    path = coco_instances(tmp_path)
    data = read_coco_instances(path, None, BadRecordPolicy("error"))
    assert data.classnames == ["person", "dog"]  # sorted by category id: 1, 18
    assert data.labels == [1, 0, 1]
    assert data.boxes.images == [tmp_path / "val2017" / "b.jpg", tmp_path / "val2017" / "a.jpg"]
    assert data.boxes.frames[1] == (100.0, 50.0)  # the box overruns x by 0.4 px: tolerated, clamped later
    assert len(read_coco_instances(path, tmp_path, BadRecordPolicy("error"), exclude_crowd=True).labels) == 2


def test_coco_instances_errors(tmp_path):
    path = coco_instances(tmp_path)
    coco = json.loads(path.read_text())
    coco["annotations"][2]["category_id"] = 99
    path.write_text(json.dumps(coco))
    with pytest.raises(BadRecordError, match=r"annotations record 2, field 'category_id': 99 is not in 'categories'"):
        read_coco_instances(path, None, BadRecordPolicy("error"))
    captions = tmp_path / "captions.json"
    captions.write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(DataFormatError, match=r"captions.json: not a COCO instances file: top-level list 'categories'"):
        read_coco_instances(captions, None, BadRecordPolicy("error"))
    garbage = tmp_path / "garbage.json"
    garbage.write_text("[1, 2")
    with pytest.raises(DataFormatError, match="garbage.json: not a valid UTF-8 JSON file"):
        read_coco_instances(garbage, None, BadRecordPolicy("error"))


def test_retrieval_sharegpt4v_uses_the_second_turn_and_the_official_basename_layout(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "1.jpg").write_bytes(b"")
    items = [{"id": i, "image": f"coco/train2017/{i}.jpg",
              "conversations": [{"from": "human", "value": "<image>\nDescribe."},
                                {"from": "gpt", "value": f"long {i}"}]}
             for i in range(3)]
    path = tmp_path / "share-captioner.json"
    path.write_text(json.dumps(items))
    assert detect_retrieval_format(path) == "sharegpt4v"
    data = read_retrieval(path, "auto", tmp_path / "imgs", BadRecordPolicy("error"), max_items=2)
    assert data.texts == ["long 0", "long 1"] and data.text_to_image == [0, 1]
    assert data.images[1] == tmp_path / "imgs" / "1.jpg"  # basename found under the root
    assert data.images[0] == tmp_path / "imgs" / "coco/train2017/0.jpg"  # neither exists: the full path is reported
    items[1]["conversations"] = [items[1]["conversations"][0]]
    path.write_text(json.dumps(items))
    with pytest.raises(BadRecordError, match=r"record 1, field 'conversations\[1\].value'"):
        read_retrieval(path, "auto", None, BadRecordPolicy("error"), max_items=None)


def test_retrieval_dci_directory_and_coco_captions(tmp_path):
    ann = tmp_path / "annotations"
    ann.mkdir()
    for i in range(2):
        (ann / f"sa_{i}.json").write_text(json.dumps({"image": f"sa_{i}.jpg", "extra_caption": f"dense {i}",
                                                       "short_caption": "s"}))
    (tmp_path / "photos").mkdir()
    data = read_retrieval(ann, "auto", None, BadRecordPolicy("error"), None)
    assert data.format == "dci" and data.texts == ["dense 0", "dense 1"]
    assert data.images == [tmp_path / "photos" / "sa_0.jpg", tmp_path / "photos" / "sa_1.jpg"]
    caps = {"images": [{"id": 5, "file_name": "x.jpg"}, {"id": 6, "file_name": "y.jpg"}],
            "annotations": [{"image_id": 5 + (k % 2), "caption": f"c{k}"} for k in range(13)]}
    path = tmp_path / "captions_val2017.json"
    path.write_text(json.dumps(caps))
    data = read_retrieval(path, "auto", tmp_path, BadRecordPolicy("error"), None, captions_per_image=5)
    assert data.format == "coco" and len(data.texts) == 10
    assert data.texts[:5] == ["c0", "c2", "c4", "c6", "c8"] and data.text_to_image == [0] * 5 + [1] * 5
    instances = coco_instances(tmp_path / "other")  # an instances file handed to retrieval
    with pytest.raises(BadRecordError, match=r"annotations record 0, field 'caption'.*instances file"):
        read_retrieval(instances, "coco", None, BadRecordPolicy("error"), None)
    bad = tmp_path / "table.csv"
    bad.write_text("a,b\n")
    with pytest.raises(DataFormatError, match="table.csv: not a retrieval file"):
        read_retrieval(bad, "auto", None, BadRecordPolicy("error"), None)


def test_image_folder_with_a_mapclsloc_file(tmp_path):
    for wnid in ("n01440764", "n01443537"):
        (tmp_path / "val" / wnid / "sub").mkdir(parents=True)
        for k in range(3):
            (tmp_path / "val" / wnid / ("sub" if k else "") / f"{k}.JPEG").write_bytes(b"")
    (tmp_path / "val" / "n01440764" / "notes.txt").write_text("not an image")
    mapping = tmp_path / "imagenet2012_mapclsloc.txt"
    mapping.write_text("n01443537 2 goldfish\nn01440764 1 tench_fish\n")
    data = read_image_folder(tmp_path / "val", mapping, None)
    assert data.classnames == ["tench fish", "goldfish"] and data.labels == [0, 0, 0, 1, 1, 1]
    assert read_image_folder(tmp_path / "val", None, None).classnames == ["n01440764", "n01443537"]
    assert read_image_folder(tmp_path / "val", None, 2).labels == [0, 1]  # evenly spaced subset
    mapping.write_text("n01443537 2 goldfish\n")
    with pytest.raises(DataFormatError, match=r"no name for 'n01440764'"):
        read_image_folder(tmp_path / "val", mapping, None)
    with pytest.raises(DataFormatError, match="ImageFolder"):
        read_image_folder(mapping, None, None)


def test_templates_builtin_and_file(tmp_path):
    assert len(load_templates("openai80").templates) == 80 == len(set(OPENAI_IMAGENET_80))
    assert load_templates("single").prompts(["cat", "dog"]) == ["a photo of a cat.", "a photo of a dog."]
    t = load_templates("openai7")
    assert t.prompts(["x"])[0] == "itap of a x." and len(t.prompts(["x", "y"])) == 14
    path = tmp_path / "t.txt"
    path.write_text("a {} here\n\nthe {}\n")
    assert load_templates(str(path)).templates == ("a {} here", "the {}")
    path.write_text("a {} and {}\n")
    with pytest.raises(ValueError, match=r"t.txt line 1"):
        load_templates(str(path))
    with pytest.raises(FileNotFoundError, match="neither a built-in set"):
        load_templates("openai81")
