"""Yes/no normalisation (LLaVA's POPE rule), yes/no document detection and answer-token discovery."""
from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from fgclip_lmm.eval.lmm.answers import (
    is_yes_no_doc,
    is_yes_no_task,
    normalize_answer,
    parse_yes_no,
    yes_no_token_ids,
)
from fgclip_lmm.eval.lmm.requests import RequestGenerationConfig, build_prompt, expand_image_tokens


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Yes.", "yes"),
        ("Yes, there is", "yes"),
        ("yes", "yes"),
        ("no", "no"),
        ("No", "no"),
        ("No.", "no"),
        ("NO!", "no"),
        ("There is no dog.", "no"),
        ("There is not a dog in the image", "no"),
        ("Not really.", "no"),
        ("Yes. There is no cat, though.", "yes"),  # only the first sentence counts (LLaVA)
        ("nope", "yes"),  # LLaVA's rule: anything without no/not is yes
        ("There is a dog", "yes"),
    ],
)
def test_llava_rule(text: str, expected: str) -> None:
    assert parse_yes_no(text) == expected
    assert normalize_answer(text) == expected


@pytest.fixture()
def tiny_export(tiny_llava_export: Path) -> Path:
    return tiny_llava_export


def test_strict_mode_and_empty_answer() -> None:
    assert parse_yes_no("There is a dog", strict=True) is None
    assert parse_yes_no("Yes, there is", strict=True) == "yes"
    assert parse_yes_no("no", strict=True) == "no"
    assert normalize_answer("   ") == ""
    assert normalize_answer("There is a dog.", strict=True) == "There is a dog."
    assert normalize_answer("Yes, there is", strict=True) == "yes"


def test_yes_no_doc_detection() -> None:
    assert is_yes_no_doc({"answer": "Yes"})
    assert is_yes_no_doc({"answer": "no."})
    assert not is_yes_no_doc({"answer": "(a)"})
    assert not is_yes_no_doc({"gt_answer": "1"})
    assert is_yes_no_task("pope_random", ("pope",))
    assert not is_yes_no_task("mmvp", ("pope", "mme"))


def test_yes_no_token_ids_are_disjoint_answer_starts(tiny_export) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_export)
    yes_ids, no_ids = yes_no_token_ids(tokenizer)
    assert yes_ids and no_ids and not set(yes_ids) & set(no_ids)
    for i in yes_ids:
        assert "yes".startswith(tokenizer.decode([i]).strip().lower())
    for i in no_ids:
        assert "no".startswith(tokenizer.decode([i]).strip().lower())


def test_generation_settings_and_prompt_helpers(tiny_export) -> None:
    greedy = RequestGenerationConfig.from_gen_kwargs({"max_new_tokens": 5, "temperature": 0, "top_p": 0,
                                                      "until": "\n"}, 99)
    assert (greedy.max_new_tokens, greedy.do_sample, greedy.until) == (5, False, ("\n",))
    assert greedy.truncate("yes\nno") == "yes"
    sampled = RequestGenerationConfig.from_gen_kwargs({"temperature": 0.7}, 99)
    assert sampled.do_sample and sampled.max_new_tokens == 99 and sampled.generate_kwargs()["temperature"] == 0.7
    with pytest.raises(ValueError, match="until"):
        RequestGenerationConfig.from_gen_kwargs({"until": 3}, 8)
    tokenizer = AutoTokenizer.from_pretrained(tiny_export)
    prompt = build_prompt("Is it red?", 1, tokenizer, "<image>", tokenizer.chat_template)
    assert prompt.count("<image>") == 1 and prompt.index("<image>") < prompt.index("Is it red?")
    assert expand_image_tokens("a<image>b", "<image>", [3]) == "a<image><image><image>b"
    with pytest.raises(ValueError, match="2 images"):
        build_prompt("<image> one", 2, tokenizer, "<image>", tokenizer.chat_template)
