"""Step 3, `negatives`: exactly K hard negatives per region phrase that change attributes and keep the noun.

For every box, a chat LLM (`AutoModelForCausalLM`, prompt `NEG_PROMPT` through the tokenizer's chat template)
proposes rewrites of `short_expr`, one per line; the paper used Llama-3.1-70B (docs/model.md, "How FineHARD was
built"). Every candidate is cleaned and validated (`validate`): `empty` / `not_text`, `too_long`, `missing_noun`
(the head noun, singular or plural, must stay), `same_as_positive` (equal to the positive once articles are dropped
and lexicon synonyms are folded: "big" = "large"), `adds_only` (keeps every word of the positive and only adds some:
"big red car" for "red car" may still be true), `drops_only` (only removes words: "red car" for "big red car" is
true of the region) and `duplicate` (of an accepted negative, same folding). Rejected candidates are counted by
reason. Missing negatives are filled, in order, from `rule_negatives`, a deterministic attribute swap over the
lexicon; a box ends with exactly K (`flag_short_neg: 1`) or with none (`flag_short_neg: 0`, reason counted as
`box_short:no_noun | no_attribute | too_few`).

`rule_negatives` replaces one attribute word at a time by the other groups of its axis, starting after its own
group, round-robin over the phrase's attribute words; then two words at a time. A count change keeps grammatical
number: "one red cup" -> "two red cups".
"""
from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from fgclip_lmm.data.bad_records import BadRecordPolicy
from fgclip_lmm.datagen.hf_models import DecodingConfig
from fgclip_lmm.datagen.inputs import finehard_items
from fgclip_lmm.datagen.lexicon import (
    COUNT_ONE,
    LEXICON,
    canonical_words,
    noun_forms,
    pluralize,
    singularize,
)
from fgclip_lmm.datagen.phrases import head_noun
from fgclip_lmm.datagen.quality import TextQuality, degenerate_reason, words
from fgclip_lmm.datagen.runner import Outcome, RunResult, Shard, StepConfig, WorkItem, lazy, run_step
from fgclip_lmm.errors import InputError

NEG_PROMPT = (
    "Write {k} hard negative variants of the image-region phrase below. Each variant must keep the noun "
    "\"{noun}\" exactly, but change one or two attributes of it (colour, material, size, pattern, count or "
    "state) so that it no longer describes the same region. Keep the wording short and close to the original. "
    "Write one variant per line, with no numbering and no other text.\nPhrase: {phrase}"
)
_TOKEN = re.compile(r"[A-Za-z][A-Za-z'-]*|\d+")
_MARKER = re.compile(r"^\s*(?:[-*\u2022]|\d+\s*[.):]|\(\d+\))\s*")
ChatFn = Callable[..., list[str]]  # prompts, options -> replies


@dataclass(frozen=True)
class NegativesConfig(StepConfig):
    input: str
    out: str
    model: str | None = None  # chat LLM; None needs rules_only
    rules_only: bool = False  # lexicon swaps only, no LLM
    image_root: str | None = None  # when given, records whose image is missing are rejected
    num_negatives: int = 10
    prompt: str = NEG_PROMPT
    max_new_tokens: int = 256
    llm_batch_size: int = 32  # phrases per generate call
    temperature: float = 0.0  # 0 = greedy
    seed: int = 0
    batch_size: int = field(default=16, kw_only=True)

    def __post_init__(self) -> None:
        if self.num_negatives < 1:
            raise InputError(f"num_negatives must be >= 1, got {self.num_negatives}")
        if "{phrase}" not in self.prompt:
            raise InputError("the negatives prompt must contain {phrase} (and may use {k} and {noun})")
        try:
            self.prompt.format(k=1, noun="n", phrase="p")
        except (KeyError, IndexError, ValueError) as error:
            raise InputError(f"negatives prompt: bad placeholder {error}; only {{phrase}}, {{k}} and {{noun}} "
                             "are filled (write literal braces as {{ and }})") from None
        if not self.rules_only and not self.model:
            raise InputError("negatives needs --model (a chat LLM) or --rules-only")

    def settings(self, model_name: str | None) -> dict:
        return {"model": None if self.rules_only else model_name, "num_negatives": self.num_negatives,
                "prompt": self.prompt, "max_new_tokens": self.max_new_tokens, "temperature": self.temperature,
                "seed": self.seed}


def _swap(tokens: list[re.Match], text: str, changes: dict[int, str], noun_at: int | None) -> str:
    """`text` with token i replaced by changes[i] (capitalisation kept), fixing the noun's number on count swaps."""
    changes = dict(changes)
    for i, new in list(changes.items()):
        old = tokens[i].group(0).lower()
        if noun_at is not None and LEXICON[old].category == "count":
            noun = tokens[noun_at].group(0)
            if new == COUNT_ONE:
                changes[noun_at] = singularize(noun)
            elif LEXICON[old].canonical() == COUNT_ONE:
                changes[noun_at] = pluralize(noun)
    out, last = [], 0
    for i, new in sorted(changes.items()):
        token = tokens[i]
        original = token.group(0)
        out += [text[last:token.start()], new.capitalize() if original[:1].isupper() and i != noun_at else new]
        last = token.end()
    return "".join(out + [text[last:]])


def rule_negatives(phrase: str, limit: int = 10) -> list[str]:
    """Deterministic attribute-swapped variants of `phrase` (at most `limit`), single swaps first."""
    tokens = list(_TOKEN.finditer(phrase))
    noun = head_noun(phrase)
    noun_at = max((i for i, t in enumerate(tokens) if t.group(0).lower() == noun), default=None)
    slots = [(i, LEXICON[t.group(0).lower()].alternatives()) for i,
             t in enumerate(tokens) if t.group(0).lower() in LEXICON]
    out: list[str] = []
    seen = {" ".join(canonical_words(phrase))}

    def add(changes: dict[int, str]) -> bool:
        candidate = _swap(tokens, phrase, changes, noun_at)
        key = " ".join(canonical_words(candidate))
        if key not in seen:
            seen.add(key)
            out.append(candidate)
        return len(out) >= limit

    for r in range(max((len(alts) for _, alts in slots), default=0)):
        for i, alts in slots:
            if r < len(alts) and add({i: alts[r]}):
                return out
    for (i, alts_i), (j, alts_j) in itertools.combinations(slots, 2):
        for a, b in zip(alts_i, itertools.cycle(alts_j)):
            if add({i: a, j: b}):
                return out
    return out


def clean_candidate(line: str) -> str:
    return " ".join(_MARKER.sub("", line).strip().strip("\"'`").rstrip(".;,").split())


def validate(candidate: str, positive: str, noun: str, accepted: set[str], max_words: int) -> str | None:
    """Why `candidate` is not a usable negative of `positive`, or None. `accepted`: folded keys already taken."""
    reason = degenerate_reason(candidate, TextQuality(min_words=1))
    if reason is not None:
        return reason
    tokens = words(candidate)
    if len(tokens) > max_words:
        return "too_long"
    if not noun_forms(noun) & set(tokens):
        return "missing_noun"
    folded, folded_positive = canonical_words(candidate), canonical_words(positive)
    key = " ".join(folded)
    if key == " ".join(folded_positive):
        return "same_as_positive"
    if set(folded) >= set(folded_positive):
        return "adds_only"  # "big red car" for "red car" may still be true of the region
    if set(folded) <= set(folded_positive):
        return "drops_only"  # "red car" for "big red car" is true of the region
    if key in accepted:
        return "duplicate"
    return None


def negatives_for(positive: str, replies: str | None, k: int, counts: dict[str, int]) -> tuple[list[str], str | None]:
    """(exactly k negatives, None) or ([], reason): LLM candidates first, lexicon swaps for the rest."""
    def bump(key: str, n: int = 1) -> None:
        counts[key] = counts.get(key, 0) + n

    noun = head_noun(positive)
    if noun is None:
        return [], "no_noun"
    accepted: list[str] = []
    keys: set[str] = set()
    max_words = 2 * len(words(positive)) + 4
    for source, candidates in (("llm", (replies or "").splitlines()), ("lexicon", rule_negatives(positive, 4 * k))):
        for raw in candidates:
            if len(accepted) == k:
                break
            candidate = clean_candidate(raw)
            if source == "llm" and not candidate:
                continue  # blank lines are layout, not candidates
            reason = validate(candidate, positive, noun, keys, max_words)
            if source == "llm":
                bump("llm_candidates")
            if reason is not None:
                bump(f"{source}_rejected:{reason}")
                continue
            accepted.append(candidate)
            keys.add(" ".join(canonical_words(candidate)))
            bump(f"{source}_accepted")
    if len(accepted) < k:
        return [], "too_few" if any(w in LEXICON for w in words(positive)) else "no_attribute"
    return accepted, None


def make_batch_fn(config: NegativesConfig, chat: Callable[[], ChatFn] | None):
    k = config.num_negatives

    def batch_fn(batch: list[WorkItem]) -> list[Outcome]:
        boxes = [(i, j, box) for i, item in enumerate(batch) for j, box in enumerate(item.data["bbox_info"])]
        replies: list[str | None] = [None] * len(boxes)
        if chat is not None and boxes:
            prompts = [config.prompt.format(k=k, noun=head_noun(box["short_expr"]) or box["short_expr"],
                                            phrase=box["short_expr"]) for _, _, box in boxes]
            sample = config.temperature > 0
            for start in range(0, len(prompts), config.llm_batch_size):
                options = DecodingConfig(max_new_tokens=config.max_new_tokens, do_sample=sample,
                                            temperature=config.temperature if sample else 1.0,
                                            seed=config.seed + batch[0].index + start)
                replies[start:start + config.llm_batch_size] = chat()(prompts[start:start + config.llm_batch_size],
                                                                      options)
        counts = [{} for _ in batch]
        new_boxes: list[list[dict]] = [[] for _ in batch]
        for (i, _, box), reply in zip(boxes, replies, strict=True):
            negs, reason = negatives_for(box["short_expr"], reply, k, counts[i])
            if reason is None:
                counts[i]["boxes_full"] = counts[i].get("boxes_full", 0) + 1
            else:
                counts[i][f"box_short:{reason}"] = counts[i].get(f"box_short:{reason}", 0) + 1
            new_boxes[i].append({**box, "flag_short_neg": int(reason is None),
                                 "short_expr_negs": {f"{n:02d}": neg for n, neg in enumerate(negs)}})
        return [Outcome.ok({**item.data, "bbox_info": new_boxes[i]}, counts[i]) for i, item in enumerate(batch)]

    return batch_fn


def run_negatives(config: NegativesConfig, chat: ChatFn | None = None, shard: Shard | None = None) -> RunResult:
    """Run the step; `chat` replaces the HF LLM (tests, custom backends)."""
    policy = BadRecordPolicy(config.on_bad_record)
    items = finehard_items(config.input, policy, config.image_root, mode="negatives",
                           num_negatives=config.num_negatives,
                           allow_outside_root=config.allow_paths_outside_root)
    get_chat = None
    if not config.rules_only:
        if chat is None:
            from fgclip_lmm.datagen.hf_models import ChatGenerator

            get_chat = lazy(lambda: ChatGenerator(config.model, config.device, config.dtype))
        else:
            get_chat = lazy(lambda: chat)
    run = config.run_config(config.out)
    model_name = config.model or getattr(chat, "name", "custom")
    return run_step("negatives", items, make_batch_fn(config, get_chat), run, config.settings(model_name), shard)
