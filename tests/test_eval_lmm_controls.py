"""Blind controls (`eval-lmm --controls gray,shuffled`): the substitution itself, a model that cannot see the image
(gain 0, "answered from text priors"), and a tiny LLaVA trained in the test to read a planted colour cue
(large gain)."""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
import torch
from lmms_eval.api.instance import Instance
from lmms_eval.tasks.mme.utils import mme_doc_to_text
from PIL import Image
from transformers import AutoProcessor, LlavaForConditionalGeneration

from fgclip_lmm.eval.lmm import cli
from fgclip_lmm.eval.lmm.controls import (
    GRAY,
    TEXT_PRIOR_LABEL,
    ImageControl,
    control_report,
    image_control_arg,
    parse_controls,
)
from fgclip_lmm.eval.lmm.features import image_key
from fgclip_lmm.eval.lmm.requests import build_prompt
from fgclip_lmm.eval.lmm.task_files import write_task_dir
from fgclip_lmm.testing import build_tiny_llava

torch.set_num_threads(1)
POST_PROMPT = "\nAnswer the question using a single word or phrase."
RED, BLUE = (220, 30, 30), (30, 60, 220)


def _visual(doc: dict) -> list[Image.Image]:
    return [doc["image"]]


def _instance(doc_id: int, task: str = "t") -> Instance:
    return Instance("generate_until", ("ctx", {}, _visual, doc_id, task, "test"), idx=0,
                    metadata={"task": task, "doc_id": doc_id, "repeats": 1})


def test_control_substitution_gray_and_deranged() -> None:
    # 12 documents over 4 pictures (3 questions each, like POPE): the donor always shows another picture
    docs = [{"image": Image.new("RGB", (20, 10), (10 * (i // 3), 0, 0))} for i in range(12)]
    gray = ImageControl("gray").apply([_instance(i) for i in range(12)], lambda t, s: docs)
    for request in gray:
        (image,) = request.arguments[2](docs[request.arguments[3]])
        assert image.size == (20, 10) and image.getpixel((3, 3)) == GRAY
    control = ImageControl("shuffled", seed=3)
    shuffled = control.apply([_instance(i) for i in range(12)], lambda t, s: docs)
    donors = [control.donor(docs, _visual, "t", "test", i) for i in range(12)]
    assert all(image_key(docs[d]["image"]) != image_key(docs[i]["image"]) for i, d in enumerate(donors))
    for i, request in enumerate(shuffled):
        assert request.arguments[3] == i and request.arguments[0] == "ctx"  # only the visual changed
        assert image_key(request.arguments[2](docs[i])[0]) == image_key(docs[donors[i]]["image"])
    assert donors == [ImageControl("shuffled", seed=3).donor(docs, _visual, "t", "test", i) for i in range(12)]
    assert donors != [ImageControl("shuffled", seed=4).donor(docs, _visual, "t", "test", i) for i in range(12)]
    same = [{"image": Image.new("RGB", (4, 4))} for _ in range(3)]
    with pytest.raises(ValueError, match="same image"):
        ImageControl("shuffled").donor(same, _visual, "t", "test", 0)


def test_control_names_and_report() -> None:
    assert parse_controls("gray, shuffled,gray") == ["gray", "shuffled"]
    with pytest.raises(ValueError, match="known: gray, shuffled"):
        parse_controls("gray,noise")
    assert image_control_arg("none") is None and image_control_arg("gray").kind == "gray"
    image = {"t": {"color": {0: True, 1: True, 2: True, 3: False}}}
    blind = {"gray": {"t": {"color": {0: True, 1: False, 2: False, 3: False}}},
             "shuffled": {"t": {"color": {0: True, 1: True, 2: True, 3: True}}}}
    entry = control_report(image, blind)["t"]["color"]
    assert entry["accuracy_image"] == 0.75 and entry["accuracy_gray"] == 0.25 and entry["accuracy_shuffled"] == 1.0
    assert entry["visual_gain"] == pytest.approx(-0.25) and entry["label"] == TEXT_PRIOR_LABEL
    with pytest.raises(ValueError, match="answered 1 of the 4"):
        control_report(image, {"gray": {"t": {"color": {0: True}}}})


def _png(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (28, 28), color).save(buf, format="PNG")
    return buf.getvalue()


def _colour(i: int) -> tuple[str, tuple[int, int, int]]:
    """Image i: red or blue, each a slightly different shade (distinct pictures for the shuffled control)."""
    name, (r, g, b) = ("red", RED) if i % 2 == 0 else ("blue", BLUE)
    return name, (r, g + i, b)


def _cue_rows(n_images: int) -> list[dict]:
    """The planted cue: "Is the image red?" about a red and a blue image (one Yes/No pair per two images), so the
    answer depends on the pixels alone."""
    rows = []
    for i in range(n_images):
        name, rgb = _colour(i)
        rows.append({"question_id": f"cue-{i // 2}", "question": "Is the image red?",
                     "answer": "Yes" if name == "red" else "No", "category": "color",
                     "image_source": f"img{i}", "image": {"bytes": _png(rgb), "path": None}})
    return rows


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llava(tmp_path_factory.mktemp("controls") / "export")


@pytest.fixture(scope="module")
def cue_tasks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cue_tasks")
    write_task_dir(out, {}, {"color": _cue_rows(8)})
    return out


def _eval(export: Path, tasks: Path, out: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.setattr(cli, "SYNTHETIC_DIR", tasks)
    assert cli.main(["--model", str(export), "--tasks", "fgclip_attr_color", "--out", str(out),
                     "--controls", "gray,shuffled", "--batch-size", "8", "--no-calibration"]) == 0
    return json.loads((out / "eval_lmm.json").read_text())


def test_blind_model_gets_no_visual_gain(tiny: Path, cue_tasks: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    export = tmp_path / "blind"
    shutil.copytree(tiny, export)
    model = LlavaForConditionalGeneration.from_pretrained(export, dtype=torch.float32)
    for p in model.model.multi_modal_projector.parameters():  # every image becomes the same zero tokens
        torch.nn.init.zeros_(p)
    model.save_pretrained(export)
    payload = _eval(export, cue_tasks, tmp_path / "out", monkeypatch)
    entry = payload["report"]["controls"]["by_task"]["fgclip_attr_color"]["color"]
    assert entry["n"] == 8
    assert entry["accuracy_gray"] == entry["accuracy_shuffled"] == entry["accuracy_image"]
    assert entry["visual_gain"] == 0 and entry["label"] == TEXT_PRIOR_LABEL
    assert payload["header"]["controls"] == ["gray", "shuffled"]
    for kind in ("gray", "shuffled"):
        assert len((tmp_path / "out" / "controls" / kind / "samples_fgclip_attr_color.jsonl").read_text()
                   .splitlines()) == 8
    assert TEXT_PRIOR_LABEL in (tmp_path / "out" / "eval_lmm.md").read_text()


def _train_on_cue(export: Path, steps: int = 400) -> float:
    """Fine-tune every weight of the tiny LLaVA on the cue questions, prompts built exactly as the plugin does."""
    processor = AutoProcessor.from_pretrained(export)
    tokenizer = processor.tokenizer
    tokenizer.padding_side = "right"
    model = LlavaForConditionalGeneration.from_pretrained(export, dtype=torch.float32).train()
    texts, images = [], []
    for row in _cue_rows(8):
        context = mme_doc_to_text(row, {"pre_prompt": "", "post_prompt": POST_PROMPT})
        prompt = build_prompt(context, 1, tokenizer, "<image>", tokenizer.chat_template)
        texts.append(prompt + row["answer"] + tokenizer.eos_token)
        images.append(Image.open(io.BytesIO(row["image"]["bytes"])).convert("RGB"))
    enc = processor(text=texts, images=images, return_tensors="pt", padding=True)
    prompt_lens = [len(processor(text=t.rsplit("ASSISTANT:", 1)[0] + "ASSISTANT:", images=[i])["input_ids"][0])
                   for t, i in zip(texts, images, strict=True)]
    labels = torch.full_like(enc["input_ids"], -100)
    for row, start in enumerate(prompt_lens):
        keep = enc["attention_mask"][row].bool()
        keep[:start] = False
        labels[row, keep] = enc["input_ids"][row, keep]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    for _ in range(steps):
        loss = model(**enc, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if loss.item() < 0.01:
            break
    model.eval().save_pretrained(export)
    return float(loss.detach())


def test_model_reading_a_planted_cue_has_a_large_visual_gain(tiny: Path, cue_tasks: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    export = tmp_path / "seeing"
    shutil.copytree(tiny, export)
    assert _train_on_cue(export) < 0.05
    payload = _eval(export, cue_tasks, tmp_path / "out", monkeypatch)
    entry = payload["report"]["controls"]["by_task"]["fgclip_attr_color"]["color"]
    assert entry["accuracy_image"] == 1.0
    assert entry["accuracy_gray"] == 0.5  # one gray picture: the same answer about a red and a blue image
    assert entry["visual_gain"] >= 0.4 and entry["label"] == "uses the image"
