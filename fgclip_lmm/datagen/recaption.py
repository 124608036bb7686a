"""Step 1, `recaption`: a long and a short caption per image with an image-text-to-text model.

Output items follow the FineHARD schema with no boxes yet: `{"f_path", "caption", "short_caption", "bbox_info": []}`
(`f_path` relative to `--images`). The paper's long captions come from CogVLM2-19B with an unpublished prompt
(360CVGroup/FG-CLIP#30); `DEFAULT_LONG_PROMPT` is ours, written to produce what the later steps need: every
object with its colour, size, material, pattern, count and state, and where it is. The short caption is either
generated (`--short-source generate`, `DEFAULT_SHORT_PROMPT`) or taken from the input record's `short_caption`
(`--short-source input`, e.g. the alt-text, as FineHARD keeps GRIT's original caption).

A reply is cleaned (`quality.clean_caption`) and checked (`quality.degenerate_reason`: empty, too short, not
text, repetition). A degenerate reply is counted and regenerated with sampling (temperature rising per retry,
seed per attempt) up to `max_retries` times; an image whose long or short caption never passes is rejected with
reason `long:<why>` / `short:<why>` and written nowhere but the stats.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fgclip_lmm.data.bad_records import BadRecordPolicy
from fgclip_lmm.datagen.hf_models import DecodingConfig
from fgclip_lmm.datagen.inputs import ImageFailure, image_items, load_images
from fgclip_lmm.datagen.quality import TextQuality, clean_caption, degenerate_reason
from fgclip_lmm.datagen.runner import Outcome, RunResult, Shard, StepConfig, WorkItem, lazy, run_step
from fgclip_lmm.errors import InputError

DEFAULT_LONG_PROMPT = (
    "Describe this image in detail in one paragraph of 80 to 150 words. Name every clearly visible object and, "
    "for each one, state its colour, size, material, pattern or texture, how many there are, and its state "
    "(for example open, empty, wet, standing), and say where it is in the image and relative to the other objects. "
    "Then describe the background and the setting. Describe only what is visible; do not guess, speculate or "
    "mention the image quality."
)
DEFAULT_SHORT_PROMPT = "Write a short caption for this image: one sentence of at most 20 words."

# images, prompt, options -> one reply per image
ImageGenerateFn = Callable[[list, str, DecodingConfig], list[str]]


@dataclass(frozen=True)
class RecaptionConfig(StepConfig):
    image_root: str
    out: str
    model: str | None = None  # any AutoModelForImageTextToText checkpoint (local dir or hub id)
    input: str | None = None  # optional records (f_path[, short_caption]) instead of listing image_root
    long_prompt: str = DEFAULT_LONG_PROMPT
    short_prompt: str = DEFAULT_SHORT_PROMPT
    short_source: str = "generate"  # "generate" or "input"
    max_new_tokens: int = 320
    short_max_new_tokens: int = 48
    min_words: int = 20
    short_min_words: int = 3
    max_retries: int = 2
    retry_temperature: float = 0.8
    seed: int = 0

    def __post_init__(self) -> None:
        if self.short_source not in ("generate", "input"):
            raise InputError(f"short_source must be 'generate' or 'input', got {self.short_source!r}")
        if self.max_retries < 0:
            raise InputError(f"max_retries must be >= 0, got {self.max_retries}")

    def settings(self, model_name: str) -> dict:
        return {"model": model_name, "long_prompt": self.long_prompt, "short_prompt": self.short_prompt,
                "short_source": self.short_source, "max_new_tokens": self.max_new_tokens,
                "short_max_new_tokens": self.short_max_new_tokens, "min_words": self.min_words,
                "short_min_words": self.short_min_words, "max_retries": self.max_retries,
                "retry_temperature": self.retry_temperature, "seed": self.seed}


def generate_with_retries(images: list, prompt: str, generate: ImageGenerateFn, quality: TextQuality,
                          max_new_tokens: int, max_retries: int, temperature: float, seed: int,
                          first_line: bool = False) -> tuple[list[str | None], list[list[str]]]:
    """(caption or None per image, the degenerate reasons seen per image); greedy first, then sampled retries."""
    texts: list[str | None] = [None] * len(images)
    failures: list[list[str]] = [[] for _ in images]
    pending = list(range(len(images)))
    for attempt in range(max_retries + 1):
        if not pending:
            break
        options = DecodingConfig(max_new_tokens=max_new_tokens, do_sample=attempt > 0,
                                    temperature=temperature + 0.1 * max(attempt - 1, 0),
                                    seed=seed + 1_000_003 * attempt)
        replies = generate([images[i] for i in pending], prompt, options)
        if len(replies) != len(pending):
            raise RuntimeError(f"caption generator returned {len(replies)} replies for {len(pending)} images")
        still = []
        for i, reply in zip(pending, replies, strict=True):
            text = clean_caption(reply, first_line_only=first_line)
            reason = degenerate_reason(text, quality)
            if reason is None:
                texts[i] = text
            else:
                failures[i].append(reason)
                still.append(i)
        pending = still
    return texts, failures


def _counts(prefix: str, ok: bool, failures: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {f"{prefix}_attempts": len(failures) + int(ok)}
    for reason in failures:
        counts[f"{prefix}_degenerate:{reason}"] = counts.get(f"{prefix}_degenerate:{reason}", 0) + 1
    return counts


def make_batch_fn(config: RecaptionConfig, generate: Callable[[], ImageGenerateFn], policy: BadRecordPolicy):
    long_q = TextQuality(min_words=config.min_words)
    short_q = TextQuality(min_words=config.short_min_words)

    def batch_fn(batch: list[WorkItem]) -> list[Outcome]:
        loaded = load_images(batch, config.image_root, policy, config.input or config.image_root,
                             config.allow_paths_outside_root, config.max_image_pixels)
        good = [i for i, image in enumerate(loaded) if not isinstance(image, ImageFailure)]
        images = [loaded[i] for i in good]
        seed = config.seed + batch[0].index
        longs, long_fail = (generate_with_retries(images, config.long_prompt, generate(), long_q, config.max_new_tokens,
                                                  config.max_retries, config.retry_temperature, seed)
                            if images else ([], []))
        with_long = [j for j, text in enumerate(longs) if text is not None]
        shorts: list[str | None] = [None] * len(images)
        short_fail: list[list[str]] = [[] for _ in images]
        if config.short_source == "generate" and with_long:
            got, fails = generate_with_retries([images[j] for j in with_long], config.short_prompt, generate(), short_q,
                                               config.short_max_new_tokens, config.max_retries,
                                               config.retry_temperature, seed + 7, first_line=True)
            for j, text, fail in zip(with_long, got, fails, strict=True):
                shorts[j], short_fail[j] = text, fail
        elif config.short_source == "input":
            for j in with_long:
                raw = batch[good[j]].data.get("short_caption")
                text = clean_caption(raw) if isinstance(raw, str) else ""
                reason = degenerate_reason(text, short_q)
                shorts[j], short_fail[j] = (text, []) if reason is None else (None, [f"input_{reason}"])
        outcomes: list[Outcome] = [Outcome.rejected(image.reason, detail=image.detail)
                                   if isinstance(image, ImageFailure) else None for image in loaded]
        for j, i in enumerate(good):
            counts = _counts("long", longs[j] is not None, long_fail[j])
            if longs[j] is None:
                outcomes[i] = Outcome.rejected(f"long:{long_fail[j][-1]}", counts)
                continue
            counts.update(_counts("short", shorts[j] is not None, short_fail[j]))
            if shorts[j] is None:
                outcomes[i] = Outcome.rejected(f"short:{short_fail[j][-1]}", counts)
                continue
            record = {"f_path": batch[i].f_path, "caption": longs[j], "short_caption": shorts[j], "bbox_info": []}
            outcomes[i] = Outcome.ok(record, counts)
        return outcomes

    return batch_fn


def run_recaption(config: RecaptionConfig, generate: ImageGenerateFn | None = None,
                  shard: Shard | None = None) -> RunResult:
    """Run the step; `generate` replaces the HF model (tests, custom backends)."""
    if generate is None and not config.model:
        raise InputError("recaption needs --model (an image-text-to-text checkpoint)")
    policy = BadRecordPolicy(config.on_bad_record)
    items = image_items(config.image_root, config.input, policy)
    if generate is not None:
        get = lazy(lambda: generate)
    else:
        from fgclip_lmm.datagen.hf_models import ImageTextGenerator

        get = lazy(lambda: ImageTextGenerator(config.model, config.device, config.dtype))
    run = config.run_config(config.out)
    model_name = config.model or getattr(generate, "name", "custom")
    return run_step("recaption", items, make_batch_fn(config, get, policy), run, config.settings(model_name), shard)
