"""Rule-based parts of datagen, with hand-computed expectations: phrase chunker, attribute-swap negatives,
candidate validation, caption quality checks, box selection and Grounding DINO label matching."""
from __future__ import annotations

import pytest
import torch

from fgclip_lmm.datagen.detector import SelectConfig, match_label, select_boxes
from fgclip_lmm.datagen.lexicon import LEXICON, canonical_words
from fgclip_lmm.datagen.negatives import negatives_for, rule_negatives, validate
from fgclip_lmm.datagen.phrases import chunk_phrases, head_noun, llm_phrases
from fgclip_lmm.datagen.quality import TextQuality, clean_caption, degenerate_reason


def test_chunker_finds_attribute_phrases_and_prunes_repeats() -> None:
    caption = ("The image shows five objects on a thin grid-lined pale green background. In the top left corner "
               "there is a large cyan hexagon with stripes. On the right there is a medium pink hexagon with no "
               "pattern. The cyan hexagon is to the left of the pink hexagon.")
    got = [(p.short, p.long, p.noun) for p in chunk_phrases(caption)]
    assert got == [("large cyan hexagon", "a large cyan hexagon with stripes", "hexagon"),
                   ("medium pink hexagon", "a medium pink hexagon", "hexagon")]


def test_chunker_handles_conjoined_modifiers_compounds_and_made_of() -> None:
    caption = ("A man in a red and white striped shirt holds two small wooden bowls on a dining table. "
               "An open door made of glass stands behind him.")
    got = [(p.short, p.long, p.modifiers) for p in chunk_phrases(caption)]
    assert got == [
        ("red and white striped shirt", "a red and white striped shirt", ("red", "white", "striped")),
        ("two small wooden bowls", "two small wooden bowls on a dining table", ("two", "small", "wooden")),
        ("open door", "an open door made of glass", ("open",)),
    ]
    assert chunk_phrases(caption, max_phrases=1)[0].short == "red and white striped shirt"
    assert chunk_phrases("A man holds a cup.") == []  # no attribute, nothing to perturb


def test_llm_phrase_list_is_kept_only_where_it_quotes_the_caption() -> None:
    caption = "A man holds two small wooden bowls on a table."
    reply = "1. two small wooden bowls\n- a table\n* purple cat\nthe man\n\n"
    assert [(p.short, p.long) for p in llm_phrases(caption, reply)] == [
        ("two small wooden bowls", "two small wooden bowls on a table"), ("table", "a table"), ("man", "a man")]


def test_head_noun() -> None:
    assert head_noun("large cyan striped hexagon") == "hexagon"
    assert head_noun("man wearing a red shirt") == "man"
    assert head_noun("a dog on the sofa") == "dog"
    assert head_noun("red and blue") is None


def test_rule_negatives_are_exact_for_known_phrases() -> None:
    # single swaps, round-robin over the attribute words, each axis continuing after the word's own group
    assert rule_negatives("large cyan striped hexagon") == [
        "small cyan striped hexagon", "large beige striped hexagon", "large cyan dotted hexagon",
        "medium cyan striped hexagon", "large gold striped hexagon", "large cyan checkered hexagon",
        "large silver striped hexagon", "large cyan floral hexagon", "large maroon striped hexagon",
        "large cyan plain hexagon"]
    assert rule_negatives("red car") == ["orange car", "yellow car", "green car", "blue car", "purple car",
                                         "pink car", "brown car", "black car", "white car", "gray car"]
    # count swaps keep grammatical number; capitalisation is kept
    assert rule_negatives("one red cup", 4) == ["two red cups", "one orange cup", "three red cups", "one yellow cup"]
    assert rule_negatives("Two cups", 2) == ["Three cups", "Four cups"]
    assert rule_negatives("ten cups", 12)[:2] == ["one cup", "two cups"]
    # an axis with two groups gives one single swap; then two-word swaps
    assert rule_negatives("open wet door", 4) == ["closed wet door", "open dry door", "closed dry door"]
    assert rule_negatives("man") == []


def test_rule_negatives_never_use_a_synonym_of_the_positive() -> None:
    for phrase in ("big grey wooden table", "tiny violet plaid scarf", "five shut boxes"):
        negs = rule_negatives(phrase, 30)
        assert len(negs) == len(set(negs)) >= 10
        positive = canonical_words(phrase)
        for neg in negs:
            assert canonical_words(neg) != positive
            assert neg.split()[-1] in (phrase.split()[-1], phrase.split()[-1].rstrip("es"), phrase.split()[-1] + "s")


def test_validate_reasons() -> None:
    accepted = {" ".join(canonical_words("blue car"))}

    def check(candidate: str) -> str | None:
        return validate(candidate, "large red car", "car", accepted, max_words=10)

    assert check("") == "empty"
    assert check("\ufffd\ufffd car") == "not_text"
    assert check("large red truck") == "missing_noun"
    assert check("big red car") == "same_as_positive"  # big = large after synonym folding
    assert check("the large red car") == "same_as_positive"
    assert check("large red car with a roof") == "adds_only"
    assert check("red cars") == "drops_only"
    assert check("blue car") == "duplicate"
    assert check("one two three four five six seven eight nine ten car") == "too_long"
    assert check("small red cars") is None
    assert check("large green car") is None


def test_invalid_llm_candidates_are_rejected_and_replaced_to_exactly_k() -> None:
    reply = ("Here are ten variants:\n1. blue car\n2. Red car\n3. big red car\n- a blue car\n\n* green truck\n"
             "\"yellow car.\"\n\ufffd\ufffd car\n")
    counts: dict[str, int] = {}
    negs, reason = negatives_for("red car", reply, 10, counts)
    assert reason is None and len(negs) == 10
    assert negs[:2] == ["blue car", "yellow car"]  # the valid LLM ones first, in order
    assert negs[2:] == ["orange car", "green car", "purple car", "pink car", "brown car", "black car", "white car",
                        "gray car"]  # lexicon fill, skipping the swaps the LLM already gave
    assert counts == {"llm_candidates": 8, "llm_accepted": 2, "llm_rejected:missing_noun": 2,
                      "llm_rejected:same_as_positive": 1, "llm_rejected:adds_only": 1,
                      "llm_rejected:duplicate": 1, "llm_rejected:not_text": 1, "lexicon_accepted": 8,
                      "lexicon_rejected:duplicate": 2}


def test_boxes_that_cannot_reach_k_are_flagged_with_a_reason() -> None:
    counts: dict[str, int] = {}
    assert negatives_for("open door", None, 10, counts) == ([], "too_few")
    assert negatives_for("man", "woman\nboy", 10, counts) == ([], "no_attribute")
    assert negatives_for("red and blue", None, 10, counts) == ([], "no_noun")
    assert negatives_for("open door", None, 1, counts) == (["closed door"], None)


def test_caption_quality() -> None:
    q = TextQuality(min_words=5)
    assert degenerate_reason("", q) == "empty"
    assert degenerate_reason("A red car.", q) == "too_short"
    assert degenerate_reason("al\tir withelligen\ufffd Ag6\x1eR\x0eage", q) == "not_text"
    assert degenerate_reason("%%% ### 123 456 789 000 +++", q) == "not_text"
    assert degenerate_reason("red red red red red red red red red red", q) == "repetition"
    assert degenerate_reason("a red car and a red car and a red car and a red car", q) == "repetition"
    assert degenerate_reason("A red car is parked next to a small wooden house.", q) is None
    assert clean_caption("ASSISTANT: A red car is parked. It has four wh") == "A red car is parked."
    assert clean_caption('  "Two dogs play."\nSecond line', first_line_only=True) == "Two dogs play."


def test_select_boxes_threshold_nms_caps_and_clipping() -> None:
    boxes = torch.tensor([[0.1, 0.1, 0.5, 0.5], [0.12, 0.1, 0.5, 0.52], [0.6, 0.6, 1.2, 0.9], [0.0, 0.0, 0.005, 0.5],
                          [0.2, 0.6, 0.4, 0.9], [0.5, 0.0, 0.9, 0.3], [0.3, 0.3, 0.6, 0.6]])
    scores = torch.tensor([0.9, 0.95, 0.8, 0.99, 0.4, 0.7, 0.6])
    labels = torch.tensor([0, 1, 1, 0, 2, 0, 5])
    got = select_boxes(boxes, scores, labels, num_queries=3, config=SelectConfig())
    # box 3 too thin, box 4 not above 0.4, box 6 answers a padding query; NMS keeps 1 over 0;
    # one box per phrase: label 1 has 1 (kept) so 2 goes; label 0 then gets box 5
    assert [(b.label, round(b.score, 2)) for b in got] == [(1, 0.95), (0, 0.7)]
    many = select_boxes(boxes, scores, labels, 3, SelectConfig(threshold=0.0, max_boxes_per_phrase=5, max_boxes=3))
    assert [round(b.score, 2) for b in many] == [0.95, 0.8, 0.7]
    assert many[1].xyxy == pytest.approx((0.6, 0.6, 1.0, 0.9))  # clipped to the image


def test_match_label() -> None:
    queries = ["large red circle", "small blue square"]
    assert match_label("large red circle", queries) == 0
    assert match_label("blue square", queries) == 1
    assert match_label("circle", queries) == 0
    assert match_label("", queries) == -1 and match_label("tree", queries) == -1


def test_lexicon_words_are_unique_and_alternatives_exclude_own_group() -> None:
    assert LEXICON["big"].alternatives() == ["small", "medium"]
    assert LEXICON["open"].alternatives() == ["closed"]
    assert "large" not in LEXICON["huge"].alternatives()
