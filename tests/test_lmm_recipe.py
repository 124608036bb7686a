"""Issue 15's recipe parts: world questions without text shortcuts, the text-only world data, text pretraining of
the tiny LLM, and the match_text projector initialisation."""
import json
from collections import Counter

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from fgclip_lmm.commands import tiny_llm
from fgclip_lmm.data.synth import records
from fgclip_lmm.data.synth.world import sample_scene
from fgclip_lmm.errors import InputError
from fgclip_lmm.lmm.health import image_token_health
from fgclip_lmm.lmm.projector_init import match_text_weights
from fgclip_lmm.lmm.text_pretrain import TextPretrainConfig, encode_rows, pretrain_text, read_text_conversations
from fgclip_lmm.testing import write_tiny_llm

SCENES = [sample_scene(i, "train", 0) for i in range(600)]


def test_count_pairs_ask_the_same_numbers_in_both_halves():
    asked = {"Yes": Counter(), "No": Counter()}
    for scene in SCENES:
        rng = np.random.default_rng(scene.index)
        for question, answer in records.yes_no_pair("count", scene, rng):
            number = "1" if "exactly 1 " in question else question.split("exactly ")[1].split()[0]
            asked[answer][number] += 1
    for number in map(str, range(1, 6)):  # both halves near 1/5 each: the number asked does not give the answer
        assert abs(asked["Yes"][number] - asked["No"][number]) < 0.06 * len(SCENES), (number, asked)
    # the former shape-count pairs put "1" in 80%+ of the yes halves
    assert max(asked["Yes"].values()) < 0.3 * len(SCENES)


def test_warmup_questions_are_balanced_and_true():
    answers = Counter()
    for scene in SCENES:
        rng = np.random.default_rng(scene.index)
        for kind in records.SIMPLE_KINDS:
            question, answer = records.simple_yes_no(kind, scene, rng)
            value = question.removeprefix("Is there anything ").removeprefix("Is there a ").removeprefix("an ")
            value = value.removeprefix("n ").split(" in the image")[0]
            present = {o.colour for o in scene.objects} | {o.shape for o in scene.objects}
            assert (value in present) == (answer == "Yes"), question
            answers[answer] += 1
    assert abs(answers["Yes"] - answers["No"]) < 0.08 * sum(answers.values())


def test_instruct_records_are_single_turn_and_text_records_mirror_them():
    for scene in SCENES[:200]:
        image, text = records.instruct_records(scene, 0), records.text_records(scene, 0)
        assert 1 <= len(image) == len(text) <= records.INSTRUCT_PER_IMAGE
        questions = [r["conversations"][0]["value"] for r in image]
        assert len(set(questions)) == len(questions)  # distinct questions; a pair's halves in different records
        for a, b in zip(image, text, strict=True):
            assert len(a["conversations"]) == len(b["conversations"]) == 2 and "image" not in b
            assert a["conversations"][0]["value"].removeprefix("<image>\n") == \
                b["conversations"][0]["value"].removeprefix(records.scene_text(scene) + "\n")
            assert a["conversations"][1] == b["conversations"][1]
        for o in scene.objects:
            assert f"{o.size} {o.colour} {o.pattern} {o.shape} {o.where}" in text[0]["conversations"][0]["value"]


def test_no_warmup_share_drops_the_warmup_questions():
    warm = [q for s in SCENES[:200] for q, _ in records.instruct_turns(s, 0, simple_share=0.0)]
    assert not any(q.startswith("Is there anything") for q in warm)
    share = [q.startswith("Is there anything") for s in SCENES[:200] for q, _ in records.instruct_turns(s, 0)]
    assert 0.15 < sum(share) / len(share) < 0.35  # half are warm-up questions, half of those about colour


@pytest.fixture(scope="module")
def text_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("text_world")
    rows = [r for s in SCENES[:12] for r in records.text_records(s, 0)]
    (root / "text.json").write_text(json.dumps(rows))
    texts = [turn["value"] for row in rows for turn in row["conversations"]]
    llm = write_tiny_llm(root / "llm", hidden=32, layers=2, heads=2, kv_heads=1, texts=texts, vocab_size=600)
    return root, llm


def test_text_pretraining_learns_the_answers_and_writes_atomically(text_world, tmp_path):
    root, llm = text_world
    out = tmp_path / "pretrained"
    record = pretrain_text(llm, out, TextPretrainConfig(str(root / "text.json"), steps=60, batch_size=16, lr=3e-3,
                                                        model_max_length=1024),
                           progress=False)
    n = len(json.loads((root / "text.json").read_text()))
    assert n > 80 and record["used"] == n and not record["skipped"] and record["truncated"] == 0
    assert record["loss_last"] < 0.6 * record["loss_first"], record
    assert not out.with_name(out.name + ".tmp").exists()
    saved = json.loads((out / "text_pretrain.json").read_text())
    assert saved["losses"] == record["losses"] and len(saved["losses"]) == 60
    before = AutoModelForCausalLM.from_pretrained(str(llm)).model.embed_tokens.weight
    after = AutoModelForCausalLM.from_pretrained(str(out)).model.embed_tokens.weight
    assert not torch.equal(before, after)


def test_text_pretraining_refuses_image_rows_and_counts_truncation(text_world, tmp_path):
    root, llm = text_world
    bad = tmp_path / "bad.json"
    rows = json.loads((root / "text.json").read_text())
    bad.write_text(json.dumps(rows[:3] + [{**rows[3], "image": "images/train/000003.png"}]))
    with pytest.raises(InputError, match=r"bad.json record 3 .*field 'image'"):
        read_text_conversations(bad)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(llm))
    _, counts = encode_rows(rows[:8], tokenizer, TextPretrainConfig("x", model_max_length=20))
    assert counts == {"skipped": {"no_target": 8}, "truncated": 0, "used": 0}  # cut before the first answer
    first, _ = encode_rows(rows[:1], tokenizer, TextPretrainConfig("x", model_max_length=4096))
    turns = [t for row in rows[:3] for t in row["conversations"]]  # one 3-turn conversation
    encoded, counts = encode_rows([{"id": "m", "conversations": turns}], tokenizer,
                                  TextPretrainConfig("x", model_max_length=len(first[0][0]) + 4))
    assert counts["used"] == 1 and counts["truncated"] == 1  # later turns cut, counted
    assert len(encoded[0][0]) == len(first[0][0]) + 4


def test_tiny_llm_command_pretrains(text_world, tmp_path, capsys):
    root, llm = text_world
    code = tiny_llm.main(["--tokenizer", str(llm), "--out", str(tmp_path / "llm"), "--hidden", "32",
                          "--pretrain-text", str(root / "text.json"), "--pretrain-steps", "3"])
    n = len(json.loads((root / "text.json").read_text()))
    assert code == 0 and f"text-pretrained (3 steps on {n} conversations" in capsys.readouterr().out
    assert (tmp_path / "llm" / "text_pretrain.json").is_file()
    assert tiny_llm.main(["--tokenizer", str(llm), "--out", str(tmp_path / "x"),
                          "--pretrain-text", str(tmp_path / "missing.json")]) == 2
    assert "--pretrain-text" in capsys.readouterr().err


def test_match_text_weights_is_standardise_centre_scale():
    torch.manual_seed(0)
    from torch import nn

    class Projector(nn.Module):  # the stock LlavaMultiModalProjector layout
        def __init__(self):
            super().__init__()
            self.linear_1, self.act, self.linear_2 = nn.Linear(6, 8), nn.GELU(), nn.Linear(8, 8)

        def forward(self, x):
            return self.linear_2(self.act(self.linear_1(x)))

    features = torch.randn(40, 6) * torch.tensor([50.0, 0.1, 3, 3, 3, 3]) + 7.0  # loud, offset, uneven dims
    text = torch.randn(30, 8) * 0.02
    projector = Projector()
    reference = Projector()
    reference.load_state_dict(projector.state_dict())
    found = match_text_weights(projector, features, text)
    assert found["ratio_before"] > 20 and found["ratio_after"] == pytest.approx(1.0, rel=1e-4)
    out = projector(features)
    assert out.mean(dim=0).abs().max() < 1e-5 * out.abs().max()
    # linear_1 now sees the standardised features of the original projector
    standard = (features - features.mean(0)) / features.std(0)
    hidden = reference.act(reference.linear_1(standard))
    expected = reference.linear_2(hidden) - reference.linear_2(hidden).mean(0)
    scale = out.norm() / expected.norm()
    torch.testing.assert_close(out, expected * scale, rtol=1e-4, atol=1e-6)
    assert image_token_health(out, text)["image_norm_ratio"] == pytest.approx(1.0, rel=1e-4)
