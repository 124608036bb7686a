"""Shared image prefixes in the plugin: the batch is split into prefix parts correctly, and answers, P(yes) and
log-likelihoods equal the plain path on every packaged task (tiny export, greedy decoding)."""
from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from lmms_eval.api.instance import Instance
from lmms_eval.evaluator import simple_evaluate
from lmms_eval.tasks import TaskManager
from PIL import Image

import fgclip_lmm.eval.lmm.prefix as prefix_module
from fgclip_lmm.eval.lmm.model import FGClipLlava
from fgclip_lmm.eval.lmm.prefix import pad_after_prefix, prefix_length, split_parts, whole_image_batches
from fgclip_lmm.testing.worlds import png

PACKAGED = Path(prefix_module.__file__).parent / "tasks" / "synthetic"
IMAGES = [Image.open(io.BytesIO(png(c, s))).convert("RGB") for c, s in (("red", "circle"), ("blue", "square"))]


@pytest.fixture(scope="module")
def tiny_export(tiny_llava_export: Path) -> Path:
    return tiny_llava_export  # the session's tiny LLaVA export (tests/conftest.py), read-only


@pytest.fixture()
def prefills(monkeypatch) -> list[int]:
    """Rows of every prefix prefill (the shared path ran when this is non-empty)."""
    rows: list[int] = []
    original = prefix_module.prefill

    def counting(llava, embeds):
        rows.append(embeds.shape[0])
        return original(llava, embeds)
    monkeypatch.setattr(prefix_module, "prefill", counting)
    return rows


def test_prefix_split_and_padding_layouts():
    t = torch.tensor
    ids = [t([1, 9, 9, 5, 6]), t([1, 9, 9, 7]), t([1, 9, 9, 5]), t([1, 2, 3]), t([1, 9, 4, 9, 8])]
    keys = [("a",), ("a",), ("b",), (), ("a", "a")]
    assert [prefix_length(i, 9) for i in ids] == [3, 3, 3, 0, 4]
    assert prefix_length(t([1, 9, 9]), 9) == 2  # at least one token stays after the prefix
    parts = split_parts(ids, keys, 9)
    # rows 0 and 1 share (image a, tokens 1 9 9); row 2 has the same tokens but another image; rows 3 (no image)
    # and 4 (alone at its prefix length) run the plain path
    assert [(p.rows, p.prefix_len) for p in parts] == [([0, 1, 2], 3), ([3, 4], 0)]
    assert [(p.rows, p.prefix_len) for p in split_parts(ids[:1] + ids[2:3], [("a",), ("b",)], 9)] == [([0, 1], 0)]
    middle, mask = pad_after_prefix([t([1, 9, 5, 6]), t([1, 9, 7])], 2, 0, right=False)
    assert middle.tolist() == [[1, 9, 5, 6], [1, 9, 0, 7]] and mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 1]]
    right, _ = pad_after_prefix([t([1, 9, 5, 6]), t([1, 9, 7])], 2, 0, right=True)
    assert right.tolist() == [[1, 9, 5, 6], [1, 9, 7, 0]]


def test_batches_keep_an_images_questions_together():
    keys = [("a",)] * 6 + [("b",)] * 6 + [("c",)] * 20 + [("d",)] * 3
    batches = whole_image_batches(list(range(len(keys))), keys, 16)
    assert [len(b) for b in batches] == [12, 16, 4 + 3]  # a+b; c fills a batch, its rest goes with d
    assert sum(batches, []) == list(range(len(keys)))


def _run_packaged(lm: FGClipLlava) -> dict:
    manager = TaskManager(include_path=str(PACKAGED), include_defaults=False, verbosity="ERROR")
    results = simple_evaluate(model=lm, tasks=["fgclip_pope", "fgclip_attr"], task_manager=manager,
                              bootstrap_iters=0, log_samples=True, verbosity="ERROR", limit=20)
    return {(task, s["doc_id"]): s["filtered_resps"][0] for task, samples in results["samples"].items()
            for s in samples}


def test_every_packaged_task_answers_identically_with_shared_prefixes(tiny_export: Path, prefills: list[int]):
    answers, scores = {}, {}
    for share in (True, False):
        lm = FGClipLlava(pretrained=str(tiny_export), device="cpu", batch_size=8, score_yes_no=True,
                         normalize_yes_no=False, share_prefix=share)
        answers[share] = _run_packaged(lm)
        scores[share] = {k: s.p_yes for k, s in lm.yes_no_scores.items()}
        if share:
            shared_rows = sum(prefills)
    tasks = {task for task, _ in answers[True]}
    assert len(tasks) == 9 and len(answers[True]) == 9 * 20  # 3 POPE splits + 6 attribute tasks
    assert answers[True] == answers[False]
    assert 0 < shared_rows < len(answers[True]) / 2  # the questions of an image ran from one prefill
    for key, p_yes in scores[True].items():
        assert p_yes == pytest.approx(scores[False][key], rel=1e-4, abs=1e-7)


def _instance(lm: FGClipLlava, doc_id: int, image: int | None, context: str, continuation: str | None = None):
    lm.task_dict.setdefault("manual", {"test": {}})["test"][doc_id] = {"image": image}

    def visual(doc: dict) -> list:
        return [IMAGES[doc["image"]]] if doc["image"] is not None else []

    if continuation is None:
        args = (context, {"max_new_tokens": 5, "temperature": 0}, visual, doc_id, "manual", "test")
        return Instance("generate_until", args, idx=0, metadata={"task": "manual", "doc_id": doc_id, "repeats": 1})
    args = (context, continuation, visual, doc_id, "manual", "test")
    return Instance("loglikelihood", args, idx=0, metadata={"task": "manual", "doc_id": doc_id, "repeats": 1})


def test_mixed_batches_and_loglikelihood_match_the_plain_path(tiny_export: Path, prefills: list[int]):
    questions = [(0, "Is it red?"), (0, "Is there a circle in the image?"), (1, "What shape is it?"),
                 (None, "Say something."), (0, "Describe the picture briefly."), (1, "Is it blue?")]
    scored = [(0, "Is it red?", " Yes"), (0, "Is it red?", " No"), (0, "What is it?", " a red circle"),
              (1, "Is it blue?", " Yes"), (None, "Is it blue?", " No"), (1, "Is it blue?", " zzzq no")]
    out = {}
    for share in (True, False):
        lm = FGClipLlava(pretrained=str(tiny_export), device="cpu", batch_size=4, share_prefix=share,
                         normalize_yes_no=False)
        gen = lm.generate_until([_instance(lm, i, img, q) for i, (img, q) in enumerate(questions)])
        ll = lm.loglikelihood([_instance(lm, 10 + i, img, q, c) for i, (img, q, c) in enumerate(scored)])
        out[share] = ([g.text for g in gen], ll)
    assert prefills  # both calls shared prefixes
    assert out[True][0] == out[False][0]
    for (nll, greedy), (ref_nll, ref_greedy) in zip(out[True][1], out[False][1], strict=True):
        assert nll == pytest.approx(ref_nll, rel=1e-5) and greedy == ref_greedy


def test_share_prefix_argument_is_checked(tiny_export: Path):
    with pytest.raises(ValueError, match="share_prefix must be true or false, got 'maybe'"):
        FGClipLlava(pretrained=str(tiny_export), device="cpu", share_prefix="maybe")
