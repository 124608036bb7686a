"""`eval-clip` on an FG-CLIP 2 checkpoint: each bench against a naive one-sample-at-a-time run of the official
FG-CLIP 2 protocol (per-image NaFlex budget, box walk for region phrases, long walk at 196, attention masks)."""
import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from test_eval_clip_bench import CLASSES, long_caption, rank_of, world  # noqa: F401 (world is a fixture)
from torch.nn.functional import normalize
from transformers import AutoTokenizer

from fgclip_lmm.model import FGCLIP2Config, FGCLIP2Model
from fgclip_lmm.model.naflex import budget_for, make_image_processor

BUDGETS = (16, 32, 64)


@pytest.fixture(scope="module")
def fg2(world):  # noqa: F811 (the imported fixture)
    out = world / "model2"
    tok = AutoTokenizer.from_pretrained(world / "model")
    torch.manual_seed(0)
    config = FGCLIP2Config.tiny(vocab_size=len(tok))
    model = FGCLIP2Model(config).eval()
    with torch.no_grad():  # spread the box-walk phrases apart (a random tower maps padded phrases close together)
        model.boxtext_head.weight.normal_(std=2.0)
    model.save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(world / "model" / name, out / name)
    return out, model, tok


def naive_inputs(path: Path, patch: int = 8) -> dict:
    image = Image.open(path).convert("RGB")
    processor = make_image_processor(patch, max(BUDGETS))
    return dict(processor(images=image, max_num_patches=budget_for(*image.size, patch, BUDGETS), return_tensors="pt"))


def naive_text(model, tok, text: str, walk: str) -> torch.Tensor:
    length = 196 if walk == "long" else 64
    enc = tok([text], padding="max_length", max_length=length, truncation=True, return_tensors="pt")
    feats = model.get_text_features(enc["input_ids"], attention_mask=enc["attention_mask"], walk_type=walk)
    return normalize(feats, dim=-1)[0]


def _cli2(model_dir: Path, out: Path, bench: str, data, *extra) -> dict:
    from fgclip_lmm.eval.clip import cli as clip_bench

    rc = clip_bench.main(["--model", str(model_dir), "--bench", bench, "--data", str(data), "--out", str(out),
                          "--batch-size", "4", "--no-progress", "--patch-budgets", *map(str, BUDGETS), *extra])
    assert rc == 0
    return json.loads((out / f"{bench}.json").read_text())


@torch.inference_mode()
def test_fgovd_uses_the_box_walk_and_per_image_naflex(world, fg2, tmp_path):  # noqa: F811
    model_dir, model, tok = fg2
    got = _cli2(model_dir, tmp_path, "fgovd", world / "fgovd", "--image-root", str(world))
    for split, stem in (("hard", "1_attributes_llava"), ("medium", "2_attributes_llava")):
        hits, probs = [], []
        for line in (world / "fgovd" / f"{stem}.jsonl").read_text().splitlines():
            row = json.loads(line)
            x, y, w, h = row["bbox"]
            fw, fh = row["width"], row["height"]
            box = torch.tensor([[x / fw, y / fh, min((x + w) / fw, 1.0), min((y + h) / fh, 1.0)]])
            roi = model.get_image_box_roi_features(**naive_inputs(world / row["img_path"]), box_info=[box])[0]
            phrases = row["pos_expression"] + row["neg_expression"]
            texts = torch.stack([naive_text(model, tok, t, "box") for t in phrases])
            prob = (100 * roi @ texts.T).softmax(-1)
            hits.append(int(prob.argmax()) == 0)
            probs.append(float(prob[0]))
        res = got["results"][split]
        assert res["n"] == 7 and res["top1"] == pytest.approx(100 * sum(hits) / 7)
        assert res["mean_p_pos"] == pytest.approx(sum(probs) / 7, abs=1e-4)
    settings = got["settings"]
    assert settings["image_size"] is None and "NaFlex" in settings["resize"] and "[16, 32, 64]" in settings["resize"]
    assert "box walk" in settings["texts"] and "attention mask" in settings["texts"]
    assert "box walk" in (tmp_path / "fgovd.md").read_text()


@torch.inference_mode()
def test_long_retrieval_and_zeroshot_use_the_long_and_short_walks(world, fg2, tmp_path):  # noqa: F811
    model_dir, model, tok = fg2
    got = _cli2(model_dir, tmp_path, "retrieval", world / "share.json", "--image-root", str(world / "val2017"))
    imgs = torch.stack([normalize(model.get_image_features(**naive_inputs(world / "val2017" / f"{i}.png")), dim=-1)[0]
                        for i in range(6)])
    txt = torch.stack([naive_text(model, tok, long_caption(i), "long") for i in range(6)])
    sim = imgs @ txt.T
    for key, ranks in (("image_to_text", [rank_of(sim[i], i) for i in range(6)]),
                       ("text_to_image", [rank_of(sim[:, j], j) for j in range(6)])):
        for k in (1, 5):
            assert got["results"][key][f"R@{k}"] == pytest.approx(100 * sum(r < k for r in ranks) / 6)
    assert got["info"]["text_max_length"] == 196
    got = _cli2(model_dir, tmp_path, "zeroshot", world / "zs", "--templates", "single")
    names = sorted(CLASSES[:4])
    weights = torch.stack([naive_text(model, tok, f"a photo of a {c}.", "short") for c in names])
    ranks = [rank_of(normalize(model.get_image_features(**naive_inputs(world / "zs" / name / f"{k}.png")),
                               dim=-1)[0] @ weights.T, c) for c, name in enumerate(names) for k in range(2)]
    assert got["results"]["all"]["top1"] == pytest.approx(100 * sum(r == 0 for r in ranks) / 8)


def test_fgclip2_settings_errors(world, fg2, tmp_path):  # noqa: F811
    from fgclip_lmm.eval.clip import cli as clip_bench

    assert clip_bench.main(["--model", str(fg2[0]), "--bench", "zeroshot", "--data", str(world / "zs"),
                            "--out", str(tmp_path), "--image-size", "32", "--no-progress"]) == 2
    assert clip_bench.main(["--model", str(world / "model"), "--bench", "zeroshot", "--data", str(world / "zs"),
                            "--out", str(tmp_path), "--patch-budgets", "16", "--no-progress"]) == 2
