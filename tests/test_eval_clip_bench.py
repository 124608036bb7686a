"""Encoder benchmarks end to end: known answers with a scripted encoder, the real tiny model against a naive
one-sample-at-a-time reference (official API calls), the vision tower run once per image batch, and bad input."""
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch.nn.functional import normalize

from fgclip_lmm.data.bad_records import BadRecordPolicy
from fgclip_lmm.data.images import CLIP_MEAN, CLIP_STD
from fgclip_lmm.data.tokenizers import train_clip_tokenizer
from fgclip_lmm.eval.clip import cli as clip_bench
from fgclip_lmm.eval.clip.benches import run_boxcls, run_fgovd, run_retrieval, run_zeroshot
from fgclip_lmm.eval.clip.encode import ClipEncoder, EncoderConfig, load_checkpoint
from fgclip_lmm.eval.clip.formats import read_coco_instances, read_fgovd
from fgclip_lmm.eval.clip.formats_global import read_image_folder, read_retrieval
from fgclip_lmm.eval.clip.templates import TemplateSet, load_templates
from fgclip_lmm.model import FGCLIPConfig, FGCLIPModel

COLOURS = ["red", "blue", "green", "yellow", "purple"]
SHAPES = ["circle", "square", "triangle", "star"]
CLASSES = ["cat", "dog", "person", "car", "bird", "cup"]
SIZES = [(40, 30), (32, 32), (50, 64), (24, 40), (64, 48), (36, 36)]


def phrase(k: int) -> str:
    return f"a {COLOURS[k % 5]} {['striped', 'dotted', 'plain'][k % 3]} {SHAPES[k % 4]}"


def long_caption(k: int) -> str:  # ~190 tokens with the test tokenizer: needs the long path, fits its 248
    return " and ".join(phrase(k + j) + " on the left" for j in range(16))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("clip_world")
    corpus = [phrase(k) for k in range(60)] + [t.format(c) for t in load_templates("openai80").templates
                                                for c in CLASSES]
    tok = train_clip_tokenizer(corpus, root / "model", vocab_size=700)
    torch.manual_seed(0)
    FGCLIPModel(FGCLIPConfig.tiny(vocab_size=len(tok))).eval().save_pretrained(root / "model")
    rng = np.random.RandomState(0)
    (root / "val2017").mkdir()
    for i, (w, h) in enumerate(SIZES):
        Image.fromarray(rng.randint(0, 256, (h, w, 3), dtype=np.uint8)).save(root / "val2017" / f"{i}.png")
    fg = root / "fgovd"
    fg.mkdir()
    for split, first in (("1_attributes_llava", 0), ("2_attributes_llava", 3)):
        rows = []
        for r in range(7):
            i = (first + r) % len(SIZES)
            w, h = SIZES[i]
            rows.append({"img_path": f"val2017/{i}.png", "bbox": [r % 3, 1 + r % 2, w // 2 + r, h // 2],
                         "pos_expression": [phrase(r)], "neg_expression": [phrase(r + j) for j in range(1, 2 + r)],
                         "width": w, "height": h, "image_id": i, "category_id": 1})
        (fg / f"{split}.jsonl").write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    (root / "annotations").mkdir()
    images = [{"id": 100 + i, "file_name": f"{i}.png", "width": w, "height": h} for i, (w, h) in enumerate(SIZES)]
    anns = [{"id": k, "image_id": 100 + k % 6, "category_id": 1 + k % len(CLASSES), "iscrowd": int(k == 3),
             "bbox": [k % 4, k % 3, SIZES[k % 6][0] // 2, SIZES[k % 6][1] // 3]} for k in range(13)]
    cats = [{"id": 1 + c, "name": name} for c, name in enumerate(CLASSES)]
    (root / "annotations" / "instances_val2017.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": cats}))
    caps = [{"image_id": 100 + k % 6, "id": k, "caption": phrase(k)} for k in range(36)]
    (root / "annotations" / "captions_val2017.json").write_text(json.dumps({"images": images, "annotations": caps}))
    share = [{"image": f"coco/train2017/{i}.png", "conversations": [{"from": "human", "value": "<image>"},
                                                                    {"from": "gpt", "value": long_caption(i)}]}
             for i in range(6)]
    (root / "share.json").write_text(json.dumps(share))
    for c, name in enumerate(CLASSES[:4]):
        (root / "zs" / name).mkdir(parents=True)
        for k in range(2):
            shutil.copy(root / "val2017" / f"{(c + k) % 6}.png", root / "zs" / name / f"{k}.png")
    return root


def cli(world: Path, out: Path, bench: str, data, *extra) -> dict:
    rc = clip_bench.main(["--model", str(world / "model"), "--bench", bench, "--data", str(data), "--out", str(out),
                          "--batch-size", "4", "--no-progress", *extra])
    assert rc == 0
    return json.loads((out / f"{bench}.json").read_text())


# ---------------------------------------------------------------- naive reference (one sample at a time)
def naive_pixels(path: Path, size: int) -> torch.Tensor:
    image = Image.open(path).convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    arr = (np.asarray(image, dtype=np.float32) / 255.0 - np.array(CLIP_MEAN)) / np.array(CLIP_STD)
    return torch.from_numpy(arr.transpose(2, 0, 1).astype(np.float32))[None]


def naive_text(model, tok, text: str, long: bool) -> torch.Tensor:
    ids = tok(text, truncation=True, max_length=model.config.long_max_len if long else 77).input_ids
    return normalize(model.get_text_features(torch.tensor([ids]), walk_short_pos=not long), dim=-1)[0]


def naive_box(model, path: Path, xywh, frame) -> torch.Tensor:
    x, y, w, h = xywh
    box = torch.tensor([[x / frame[0], y / frame[1], min((x + w) / frame[0], 1.0), min((y + h) / frame[1], 1.0)]])
    return model.get_image_box_roi_features(naive_pixels(path, 32), [box], normalize=True)[0]


def rank_of(scores: torch.Tensor, target: int) -> int:
    return int(torch.argsort(scores, descending=True, stable=True).tolist().index(target))


@pytest.fixture(scope="module")
def model_tok(world):
    return load_checkpoint(str(world / "model"), None, EncoderConfig())


@torch.inference_mode()
def test_fgovd_matches_the_naive_per_row_reference(world, model_tok, tmp_path):
    got = cli(world, tmp_path, "fgovd", world / "fgovd", "--image-root", str(world))
    model, tok = model_tok
    for split, stem in (("hard", "1_attributes_llava"), ("medium", "2_attributes_llava")):
        hits, probs = [], []
        for line in (world / "fgovd" / f"{stem}.jsonl").read_text().splitlines():
            row = json.loads(line)
            roi = naive_box(model, world / row["img_path"], row["bbox"], (row["width"], row["height"]))
            texts = torch.stack([naive_text(model, tok, t,
                                            False) for t in row["pos_expression"] + row["neg_expression"]])
            prob = (100 * roi @ texts.T).softmax(-1)
            hits.append(int(prob.argmax()) == 0)
            probs.append(float(prob[0]))
        res = got["results"][split]
        assert res["n"] == 7 and res["top1"] == pytest.approx(100 * sum(hits) / 7)
        assert res["mean_p_pos"] == pytest.approx(sum(probs) / 7, abs=1e-4)
    assert got["results"]["mean"]["top1"] == pytest.approx((got["results"]["hard"]["top1"] +
                                                           got["results"]["medium"]["top1"]) / 2)
    assert got["texts"]["unique"]["fgovd_expression"] == len({phrase(k) for k in range(14)})
    assert (tmp_path / "fgovd.md").read_text().count("| hard |") == 1


@torch.inference_mode()
def test_boxcls_matches_the_naive_reference_with_template_averaging(world, model_tok, tmp_path):
    got = cli(world, tmp_path, "boxcls", world / "annotations" / "instances_val2017.json", "--templates", "openai7")
    model, tok = model_tok
    templates = load_templates("openai7").templates
    weights = torch.stack([normalize(torch.stack([naive_text(model, tok, t.format(c), False) for t in templates])
                                     .mean(0), dim=0) for c in CLASSES])
    coco = json.loads((world / "annotations" / "instances_val2017.json").read_text())
    ranks = []
    for ann in coco["annotations"]:
        i = ann["image_id"] - 100
        roi = naive_box(model, world / "val2017" / f"{i}.png", ann["bbox"], SIZES[i])
        ranks.append(rank_of(100 * roi @ weights.T, ann["category_id"] - 1))
    res = got["results"]["all"]
    assert res["n"] == 13 and got["info"]["num_templates"] == 7
    assert res["top1"] == pytest.approx(100 * sum(r < 1 for r in ranks) / 13)
    assert res["top5"] == pytest.approx(100 * sum(r < 5 for r in ranks) / 13)


@torch.inference_mode()
def test_retrieval_short_and_long_match_the_naive_reference(world, model_tok, tmp_path):
    model, tok = model_tok
    imgs = torch.stack([normalize(model.get_image_features(naive_pixels(world / "val2017" / f"{i}.png", 32)), dim=-1)[0]
                        for i in range(6)])
    for data, long, texts, owner in (
        (world / "annotations" / "captions_val2017.json", False,
         [phrase(k) for i in range(6) for k in range(i, 36, 6)[:5]], [i for i in range(6) for _ in range(5)]),
        (world / "share.json", True, [long_caption(i) for i in range(6)], list(range(6))),
    ):
        got = cli(world, tmp_path, "retrieval", data, "--image-root", str(world / "val2017"))
        assert got["info"]["text_path"] == ("long" if long else "short") and got["info"]["walk_short_pos"] is not long
        txt = torch.stack([naive_text(model, tok, t, long) for t in texts])
        sim = imgs @ txt.T
        i2t = [min(rank_of(sim[i], j) for j in range(len(texts)) if owner[j] == i) for i in range(6)]
        t2i = [rank_of(sim[:, j], owner[j]) for j in range(len(texts))]
        for key, ranks in (("image_to_text", i2t), ("text_to_image", t2i)):
            for k in (1, 5, 10):
                assert got["results"][key][f"R@{k}"] == pytest.approx(100 * sum(r < k for r in ranks) / len(ranks))
    assert all(77 < len(tok(long_caption(i)).input_ids) <= 248 for i in range(6))
    assert got["texts"]["truncated"]["long_caption"] == 0


@torch.inference_mode()
def test_zeroshot_matches_the_naive_reference(world, model_tok, tmp_path):
    got = cli(world, tmp_path, "zeroshot", world / "zs", "--templates", "single")
    model, tok = model_tok
    weights = normalize(torch.stack([naive_text(model, tok, f"a photo of a {c}.", False) for c in CLASSES[:4]]), dim=-1)
    ranks = []
    for c, name in enumerate(sorted(CLASSES[:4])):
        for k in range(2):
            f = normalize(model.get_image_features(naive_pixels(world / "zs" / name / f"{k}.png", 32)), dim=-1)[0]
            ranks.append(rank_of(f @ weights[[CLASSES.index(n) for n in sorted(CLASSES[:4])]].T, c))
    assert got["results"]["all"]["top1"] == pytest.approx(100 * sum(r == 0 for r in ranks) / 8)
    assert "top5" not in got["results"]["all"]  # 4 classes


def test_vision_tower_runs_once_per_image_batch_not_per_box(world, model_tok):
    model, tok = model_tok
    calls = []
    handle = model.vision_model.register_forward_hook(lambda m, a, o: calls.append(a[0].shape[0] if a else None))
    try:
        encoder = ClipEncoder(model, tok, EncoderConfig(batch_size=4, progress=False), BadRecordPolicy("error"))
        data = read_coco_instances(world / "annotations" / "instances_val2017.json", None, BadRecordPolicy("error"))
        feats, ok = encoder.box_features(data.boxes)
    finally:
        handle.remove()
    assert len(data.boxes) == 13 and bool(ok.all()) and len(calls) == 2  # 6 images in batches of 4
    assert torch.allclose(feats.norm(dim=-1), torch.ones(13), atol=1e-5)


# ---------------------------------------------------------------- known answers with a scripted encoder
class ScriptedEncoder:
    """Texts map to one-hot vectors; a box / image feature is the vector of the text `target` names for it."""

    def __init__(self, target: dict[str, str]):
        self.target, self.vocab, self.text_calls = target, {}, []
        self.model = SimpleNamespace(config=SimpleNamespace(short_max_len=77, long_max_len=248))

    def vec(self, text: str) -> torch.Tensor:
        return torch.eye(64)[self.vocab.setdefault(text, len(self.vocab))]

    def text_features(self, texts, long, field_name, region=False):
        self.text_calls.append((field_name, long, list(texts)))
        return torch.stack([self.vec(t) for t in texts])

    def box_features(self, table, keep=None):
        ok = torch.ones(len(table), dtype=torch.bool) if keep is None else keep[torch.tensor(table.box_image)]
        return torch.stack([self.vec(self.target[r]) for r in table.records]), ok

    def image_features(self, paths, records, keep=None):
        ok = torch.ones(len(paths), dtype=torch.bool) if keep is None else keep
        return torch.stack([self.vec(self.target[str(p)]) for p in paths]), ok


def test_fgovd_known_answer_per_split_and_skipped_images(tmp_path):
    rows = [{"img_path": f"{i}.jpg", "bbox": [0, 0, 5, 5], "pos_expression": [f"pos {i}"],
             "neg_expression": ["shared neg", f"neg {i}"][: 1 + i % 2]} for i in range(5)]
    hard, medium = tmp_path / "1_attributes.jsonl", tmp_path / "2_attributes.jsonl"
    hard.write_text("\n".join(json.dumps(r) for r in rows[:3]))
    medium.write_text("\n".join(json.dumps(r) for r in rows[3:]))
    data = read_fgovd([hard, medium], None, BadRecordPolicy("error"))
    # hard: row 0 -> positive, row 1 -> its negative, row 2 -> positive; medium: row 3 positive, row 4 image skipped.
    target = dict(zip(data.boxes.records, ["pos 0", "neg 1", "pos 2", "pos 3", "pos 4"], strict=True))
    enc = ScriptedEncoder(target)
    keep = torch.tensor([True, True, True, True, False])
    res = run_fgovd(enc, data, keep)
    assert res.rows["hard"]["top1"] == pytest.approx(200 / 3) and res.rows["hard"]["n"] == 3
    assert res.rows["medium"] == {"n": 1, "skipped": 1, "top1": 100.0, "mean_p_pos": pytest.approx(1.0),
                                  "mean_negatives": 2.0}
    assert res.rows["mean"]["top1"] == pytest.approx((200 / 3 + 100) / 2)
    (_field, long, texts), = enc.text_calls
    assert not long and sorted(texts) == sorted(set(texts)) and texts.count("shared neg") == 1  # each text once


def test_boxcls_and_zeroshot_known_answers_with_templates(tmp_path):
    templates = TemplateSet("two", ("a {}.", "the {}!"))
    path = tmp_path / "instances.json"
    anns = [{"image_id": 1, "bbox": [0, 0, 4, 4], "category_id": c} for c in (1, 2, 3, 1)]
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "x.jpg", "width": 8, "height": 8}],
                                "annotations": anns,
                                "categories": [{"id": c, "name": n} for c, n in ((1, "ant"), (2, "bee"), (3, "cow"))]}))
    data = read_coco_instances(path, tmp_path, BadRecordPolicy("error"))
    # Box features equal one template's prompt of a chosen class: right, right, wrong (cow box looks like a bee), wrong.
    enc = ScriptedEncoder(dict(zip(data.boxes.records, ["a ant.", "the bee!", "a bee.", "the cow!"], strict=True)))
    res = run_boxcls(enc, data, torch.ones(1, dtype=torch.bool), templates)
    assert res.rows["all"]["top1"] == 50.0 and res.rows["all"]["n"] == 4
    assert res.rows["all"]["mean_class_top1"] == pytest.approx(100 * (0.5 + 1 + 0) / 3)
    assert len(enc.text_calls[0][2]) == 6  # 3 classes x 2 templates, each encoded once
    for c in ("ant", "bee"):
        (tmp_path / "zs" / c).mkdir(parents=True)
        (tmp_path / "zs" / c / "1.png").write_bytes(b"")
    zs = read_image_folder(tmp_path / "zs", None, None)
    enc = ScriptedEncoder({str(zs.images[0]): "the ant!", str(zs.images[1]): "a ant."})
    assert run_zeroshot(enc, zs, torch.ones(2, dtype=torch.bool), templates).rows["all"]["top1"] == 50.0


def test_retrieval_known_answer_drops_a_failed_image_and_its_captions(tmp_path):
    caps = {"images": [{"id": i, "file_name": f"{i}.jpg"} for i in range(3)],
            "annotations": [{"image_id": i, "caption": f"cap {i}.{k}"} for i in range(3) for k in range(2)]}
    path = tmp_path / "captions.json"
    path.write_text(json.dumps(caps))
    data = read_retrieval(path, "coco", tmp_path, BadRecordPolicy("error"), None)
    # Image 0 looks like its caption 1; image 2 looks like image 0's caption 0 (a miss both ways); image 1 failed.
    enc = ScriptedEncoder({str(data.images[0]): "cap 0.1", str(data.images[2]): "cap 0.0"})
    enc.image_features = lambda paths, records, keep=None: (
        torch.stack([enc.vec("cap 0.1"), torch.zeros(64), enc.vec("cap 0.0")]), torch.tensor([True, False, True]))
    res = run_retrieval(enc, data, torch.ones(3, dtype=torch.bool), "auto")
    assert res.rows["image_to_text"] == {"n": 2, "R@1": 50.0, "R@5": 100.0, "R@10": 100.0}
    # Texts of images 0 and 2: cap 0.0 -> image 2 first (miss), cap 0.1 -> image 0 (hit), cap 2.x -> tie, image 0 first.
    assert res.rows["text_to_image"]["n"] == 4 and res.rows["text_to_image"]["R@1"] == 25.0
    assert res.info["images_skipped"] == 1 and enc.text_calls[0][1] is False  # COCO captions: short path


# ---------------------------------------------------------------- bad input
def run_cli(world, out, *args):
    return clip_bench.main(["--model", str(world / "model"), "--out", str(out), "--no-progress", *args])


def test_checkpoint_errors(world, tmp_path, capsys):
    # A missing checkpoint is reported first, even when the data path is missing too.
    rc = clip_bench.main(["--model", str(tmp_path / "nope"), "--bench", "fgovd", "--data", str(tmp_path / "none")])
    err = capsys.readouterr().err
    assert rc == 2 and f"--model {tmp_path / 'nope'}: no such checkpoint directory" in err
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(world / "model" / "config.json", bare)
    shutil.copy(world / "model" / "model.safetensors", bare)
    args = ["--bench", "fgovd", "--data", str(world / "fgovd"), "--image-root", str(world), "--out",
            str(tmp_path / "o"),
            "--no-progress"]
    assert clip_bench.main(["--model", str(bare), *args]) == 2
    assert "has no tokenizer files" in capsys.readouterr().err
    assert clip_bench.main(["--model", str(bare), "--tokenizer", str(world / "model"), *args]) == 0
    assert run_cli(world, tmp_path, "--bench", "fgovd", "--data", str(world / "fgovd"), "--image-root", str(world),
                   "--image-size", "64") == 2
    assert "differs from the checkpoint's vision image_size 32" in capsys.readouterr().err


def test_wrong_format_names_the_file_and_record(world, tmp_path, capsys):
    captions = world / "annotations" / "captions_val2017.json"
    assert run_cli(world, tmp_path, "--bench", "boxcls", "--data", str(captions)) == 2
    assert f"{captions}: not a COCO instances file" in capsys.readouterr().err
    assert run_cli(world, tmp_path, "--bench", "fgovd", "--data", str(captions)) == 2
    assert "captions_val2017.json record 0, field 'img_path': not an FG-OVD row" in capsys.readouterr().err
    assert run_cli(world, tmp_path, "--bench", "zeroshot", "--data", str(captions)) == 2
    assert "ImageFolder" in capsys.readouterr().err


def broken_copy(world: Path, tmp_path: Path) -> Path:
    """A copy of the hard FG-OVD split whose image 2 is corrupt and whose image 5 is missing."""
    (tmp_path / "val2017").mkdir(parents=True)
    for i in range(5):
        shutil.copy(world / "val2017" / f"{i}.png", tmp_path / "val2017")
    (tmp_path / "val2017" / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    shutil.copy(world / "fgovd" / "1_attributes_llava.jsonl", tmp_path)
    row = {"img_path": "val2017/2.png", "bbox": [1, 1, 5, 5], "pos_expression": ["a cup"], "neg_expression": ["a cat"]}
    (tmp_path / "2_attributes_llava.jsonl").write_text(json.dumps(row) + "\n")  # a split whose only image is corrupt
    return tmp_path


def test_unloadable_and_missing_images_error_or_counted_skip(world, tmp_path, capsys, monkeypatch):
    data = broken_copy(world, tmp_path / "w")
    rc = run_cli(world, tmp_path / "o", "--bench", "fgovd", "--data", str(data))
    err = capsys.readouterr().err
    assert rc == 2 and "5.png" in err and "image file not found" in err and "1_attributes_llava.jsonl record 5" in err
    (tmp_path / "w" / "val2017" / "5.png").write_bytes((world / "val2017" / "5.png").read_bytes())
    rc = run_cli(world, tmp_path / "o", "--bench", "fgovd", "--data", str(data))
    err = capsys.readouterr().err
    assert rc == 2 and "2.png" in err and "cannot load image" in err and "record 2" in err and "corrupt_image" in err
    (tmp_path / "w" / "val2017" / "5.png").unlink()
    got = cli(world, tmp_path / "o", "fgovd", data, "--on-bad-record", "skip")
    assert got["skipped"]["by_reason"] == {"missing_image": 1, "corrupt_image": 1}
    assert got["results"]["hard"]["n"] == 5 and got["results"]["hard"]["skipped"] == 2  # rows 2 and 5
    assert got["results"]["medium"] == {"n": 0, "skipped": 1, "top1": None, "mean_p_pos": None, "mean_negatives": None}
    assert got["results"]["mean"]["top1"] == got["results"]["hard"]["top1"]  # only splits with rows count
    assert "**Skipped 2 bad records (corrupt_image: 1, missing_image: 1)" in (tmp_path / "o" / "fgovd.md").read_text()


# ---------------------------------------------------------------- the synthetic world, end to end
@pytest.fixture(scope="module")
def synth_world(tmp_path_factory):
    from transformers import AutoTokenizer

    from fgclip_lmm.data.synth.generate import SynthConfig, generate

    root = tmp_path_factory.mktemp("synth")
    # 40 images, seed 1: 4 test images holding 2 / 2 / 1 / 1 objects (two single-object images for zeroshot).
    manifest = generate(SynthConfig(out=str(root / "world"), images=40, seed=1, size=64, workers=1, progress=False))
    tok = AutoTokenizer.from_pretrained(root / "world" / manifest["files"]["tokenizers"]["clip"])
    torch.manual_seed(1)
    FGCLIPModel(FGCLIPConfig.tiny(vocab_size=len(tok))).eval().save_pretrained(root / "model")  # no tokenizer files
    return root, manifest


def test_every_bench_runs_on_a_synthetic_world_root(synth_world):
    root, manifest = synth_world
    boxcls = json.loads((root / "world" / manifest["files"]["boxcls"]["test"]).read_text())
    n_boxes = len(boxcls["annotations"])
    per_image = {}
    for ann in boxcls["annotations"]:
        per_image[ann["image_id"]] = per_image.get(ann["image_id"], 0) + 1
    singles = sum(1 for n in per_image.values() if n == 1)
    assert singles >= 1, "the generator changed: pick a seed whose test split holds a single-object image"

    def run(bench, *extra):
        out = root / "out" / bench / "-".join(extra)
        rc = clip_bench.main(["--model", str(root / "model"), "--bench", bench, "--data", str(root / "world"),
                              "--out", str(out), "--no-progress", "--batch-size", "3", *extra])
        assert rc == 0
        return json.loads((out / f"{bench}.json").read_text())

    fgovd = run("fgovd")
    assert list(fgovd["results"]) == ["hard", "medium", "easy", "trivial", "mean"]
    for level, rows in manifest["counts"]["benchmarks"]["fgovd"]["test"].items():
        assert fgovd["results"][level]["n"] == rows == n_boxes and fgovd["results"][level]["mean_negatives"] == 10
    assert fgovd["tokenizer"].endswith("tokenizers/clip") and fgovd["synth_set"] == "test"
    held = run("fgovd", "--synth-set", "heldout")
    assert held["results"]["hard"]["n"] == manifest["counts"]["benchmarks"]["fgovd"]["heldout"]["hard"]
    box = run("boxcls")
    assert box["results"]["all"]["n"] == n_boxes and box["info"]["classes"] == len(boxcls["categories"])
    long = run("retrieval")
    assert long["info"]["text_path"] == "long" and long["results"]["image_to_text"]["n"] == 4
    short = run("retrieval", "--synth-set", "short")
    assert short["info"]["text_path"] == "short" and short["results"]["text_to_image"]["n"] == 4 * 5
    zs = run("zeroshot")
    assert zs["results"]["all"]["n"] == singles
    for got in (fgovd, held, box, long, short, zs):
        assert got["skipped"]["total"] == 0
        for row in got["results"].values():
            assert all(0.0 <= v <= 100.0 for k, v in row.items() if k.startswith(("top", "R@")))
    with pytest.raises(SystemExit):
        clip_bench.main(["--model", str(root / "model"), "--bench", "nope", "--data", str(root / "world")])
    assert clip_bench.main(["--model", str(root / "model"), "--bench", "boxcls", "--data", str(root / "world"),
                            "--synth-set", "val", "--no-progress"]) == 2
