"""The `fgclip_llava` model on a tiny export, in-process: correctness against the stock HF path, batching,
the per-image feature cache, generation settings, P(yes) scores and direct `loglikelihood` calls."""
from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from lmms_eval.api.instance import Instance
from lmms_eval.evaluator import simple_evaluate
from lmms_eval.models import get_model
from lmms_eval.tasks import TaskManager
from PIL import Image

from fgclip_lmm.eval.lmm.answers import normalize_answer
from fgclip_lmm.eval.lmm.model import FGClipLlava
from fgclip_lmm.eval.lmm.plugin import MANIFEST
from fgclip_lmm.testing import png

IMAGE = Image.open(io.BytesIO(png("red", "circle"))).convert("RGB")


@pytest.fixture()
def tiny_export(tiny_llava_export: Path) -> Path:
    return tiny_llava_export


def _request(lm: FGClipLlava, context: str, gen_kwargs: dict | None = None, doc_id: int = 0,
             continuation: str | None = None) -> Instance:
    """A hand-made request on a one-document task held in `lm.task_dict`."""
    lm.task_dict.setdefault("manual", {"test": {}})["test"][doc_id] = {"image": IMAGE, "answer": "yes"}

    def visual(doc: dict) -> list:
        return [doc["image"]]

    if continuation is None:
        args = (context, gen_kwargs or {"max_new_tokens": 6, "temperature": 0}, visual, doc_id, "manual", "test")
        return Instance("generate_until", args, idx=0, metadata={"task": "manual", "doc_id": doc_id, "repeats": 1})
    args = (context, continuation, visual, doc_id, "manual", "test")
    return Instance("loglikelihood", args, idx=0, metadata={"task": "manual", "doc_id": doc_id, "repeats": 1})


def _evaluate(lm: FGClipLlava, tasks_dir: Path, tasks: list[str]) -> dict:
    manager = TaskManager(include_path=str(tasks_dir), include_defaults=False, verbosity="ERROR")
    return simple_evaluate(model=lm, tasks=tasks, task_manager=manager, bootstrap_iters=0, log_samples=True,
                           verbosity="ERROR")


def test_entry_point_resolves() -> None:
    assert MANIFEST.model_id == "fgclip_llava"
    assert get_model("fgclip_llava") is FGClipLlava


def test_spliced_embeddings_match_the_stock_processor_path(tiny_export: Path) -> None:
    lm = FGClipLlava(pretrained=str(tiny_export), device="cpu", score_yes_no=True)
    req = lm._prepare(0, _request(lm, "Is there a red circle?"), generation=True)
    features = lm._features([req])
    ids, mask = lm._tokenize([req], [req.prompt], features)
    stock = lm.processor(text=[req.prompt], images=[IMAGE], return_tensors="pt")
    assert torch.equal(ids, stock["input_ids"])
    with torch.no_grad():
        ours = lm.model(inputs_embeds=lm._embed([req], ids, features), attention_mask=mask).logits
        ref = lm.model(**stock).logits
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    # P(yes)/P(no) are the softmax mass of the answer tokens at the first generated step
    lm.generate_until([_request(lm, "Is there a red circle?")])
    score = lm.yes_no_scores[("manual", "test", 0)]
    probs = torch.softmax(ref[0, -1].float(), dim=-1)
    assert score.p_yes == pytest.approx(float(probs[lm.yes_ids].sum()), rel=1e-4)
    assert score.p_no == pytest.approx(float(probs[lm.no_ids].sum()), rel=1e-4)


def test_generation_settings_are_honoured(tiny_export: Path) -> None:
    lm = FGClipLlava(pretrained=str(tiny_export), device="cpu", normalize_yes_no=False)
    long = lm.generate_until([_request(lm, "Describe it.", {"max_new_tokens": 12, "temperature": 0})])
    one = lm.generate_until([_request(lm, "Describe it.", {"max_new_tokens": 1, "temperature": 0})])
    assert long[0].token_counts.output_tokens == 12 and one[0].token_counts.output_tokens == 1
    assert len(long[0].text) >= 4
    stop = long[0].text[2:4]
    cut = lm.generate_until([_request(lm, "Describe it.", {"max_new_tokens": 12, "temperature": 0, "until": [stop]})])
    assert cut[0].text == long[0].text.split(stop, 1)[0].strip()
    torch.manual_seed(0)
    hot = lm.generate_until([_request(lm, "Describe it.", {"max_new_tokens": 12, "temperature": 50.0}, doc_id=i)
                             for i in range(4)])
    assert any(h.text != long[0].text for h in hot)  # sampling at a high temperature leaves the greedy path


def _reference_loglikelihood(lm: FGClipLlava, context: str, continuation: str) -> tuple[float, bool]:
    """Summed NLL and greedy flag of `continuation` through the stock processor + model forward."""
    req = lm._prepare(0, _request(lm, context, continuation=continuation), generation=False)
    full = lm.processor(text=[req.prompt + req.continuation], images=[IMAGE], return_tensors="pt")
    n_ctx = lm.processor(text=[req.prompt], images=[IMAGE], return_tensors="pt")["input_ids"].shape[1]
    with torch.no_grad():
        logp = torch.log_softmax(lm.model(**full).logits[0, n_ctx - 1 : -1].float(), dim=-1)
    targets = full["input_ids"][0, n_ctx:]
    return -logp.gather(-1, targets[:, None]).sum().item(), bool((logp.argmax(-1) == targets).all())


def test_loglikelihood_direct_call(tiny_export: Path) -> None:
    lm = FGClipLlava(pretrained=str(tiny_export), device="cpu")
    # Make " Yes" the greedy answer for this prompt: point the lm_head row of "▁Yes" at the last hidden state.
    req = lm._prepare(0, _request(lm, "Is it red?"), generation=True)
    stock = lm.processor(text=[req.prompt], images=[IMAGE], return_tensors="pt")
    hidden = []
    hook = lm.model.lm_head.register_forward_hook(lambda m, i, o: hidden.append(i[0][0, -1].detach()))
    with torch.no_grad():
        lm.model(**stock)
        hook.remove()
        yes_id = lm.tokenizer.convert_tokens_to_ids("\u2581Yes")
        lm.model.lm_head.weight[yes_id] = hidden[0] * (12.0 / hidden[0].norm() ** 2)
    continuations = [" zzzq", " Yes", " No", " Yes Yes"]
    got = lm.loglikelihood([_request(lm, "Is it red?", continuation=c) for c in continuations])
    for (nll, greedy), continuation in zip(got, continuations, strict=True):
        ref_nll, ref_greedy = _reference_loglikelihood(lm, "Is it red?", continuation)
        assert nll == pytest.approx(ref_nll, rel=1e-4) and nll > 0
        assert greedy == ref_greedy
    assert [g for _, g in got[:3]] == [False, True, False]
    assert got[1][0] < got[2][0]  # the greedy answer is the likelier one
    flipped = FGClipLlava(pretrained=str(tiny_export), device="cpu", loglikelihood_returns="logprob")
    logprob = flipped.loglikelihood([_request(flipped, "Is it red?", continuation=" zzzq")])[0][0]
    assert logprob < 0
    assert logprob == pytest.approx(-_reference_loglikelihood(flipped, "Is it red?", " zzzq")[0], rel=1e-4)


def test_batched_equals_batch_size_one_and_cache_counts(tiny_export: Path, fixture_tasks: Path) -> None:
    tasks = ["fgclip_pope", "fgclip_attr_color"]
    runs = {}
    for batch_size in (1, 5):
        lm = FGClipLlava(pretrained=str(tiny_export), device="cpu", batch_size=batch_size, score_yes_no=True,
                         normalize_yes_no=False)
        calls: list[int] = []
        lm.model.model.vision_tower.register_forward_hook(lambda m, i, o, calls=calls: calls.append(i[0].shape[0]))
        results = _evaluate(lm, fixture_tasks, tasks)
        runs[batch_size] = {k: (s.raw, s.p_yes) for k, s in lm.yes_no_scores.items()}
        # 3 splits x 12 questions + 6 attribute questions, all about the same 3 distinct images
        uses = 3 * 12 + 6
        assert lm.feature_cache.stats.misses == 3 and sum(calls) == 3
        assert lm.feature_cache.stats.hits == uses - 3
        assert len(lm.feature_cache) == 0  # freed by clean() at the end of the run; the model is kept
        assert sum(len(v) for v in results["samples"].values()) == uses
    assert runs[1].keys() == runs[5].keys() and len(runs[1]) == 42
    for key, (raw, p_yes) in runs[1].items():
        assert runs[5][key][0] == raw
        assert runs[5][key][1] == pytest.approx(p_yes, rel=1e-4, abs=1e-7)


def test_yes_no_answers_are_normalised_in_lmms_eval_samples(tiny_export: Path, fixture_tasks: Path) -> None:
    lm = FGClipLlava(pretrained=str(tiny_export), device="cpu", batch_size=8, score_yes_no=True)
    results = _evaluate(lm, fixture_tasks, ["fgclip_pope_random"])
    answers = [s["filtered_resps"][0] for s in results["samples"]["fgclip_pope_random"]]
    assert set(answers) <= {"yes", "no"}
    for sample in results["samples"]["fgclip_pope_random"]:
        score = lm.yes_no_scores[("fgclip_pope_random", "test", sample["doc_id"])]
        assert sample["filtered_resps"][0] == score.answer
        assert score.answer == normalize_answer(score.raw)
