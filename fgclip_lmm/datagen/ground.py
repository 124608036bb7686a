"""Step 2, `ground`: region phrases from each long caption, then their boxes from an open-vocabulary detector.

Input: FineHARD items with `f_path` and `caption` (the `recaption` output, or official files); any old
`bbox_info` is replaced. Phrases come from the rule-based chunker (`--phrases rules`, default) or from a chat LLM
(`--phrases llm --phrase-model ID`) whose list is kept only where it quotes the caption, falling back to the
chunker when nothing survives. Each image's phrases are the detector's queries; `detector.select_boxes` keeps
boxes scoring above `threshold` (0.4 as in the paper) after class-agnostic NMS, at most `max_boxes` per image.

Each kept box becomes `{"bbox": [x1, y1, x2, y2, score], "short_expr", "long_expr", "flag_short_neg": 0,
"short_expr_negs": {}}` (normalised xyxy, 4 decimals; the fifth value is the detector score, as FineHARD's
fifth value appears to be). An image without phrases or boxes is kept with `bbox_info: []` (its captions still
train the global loss) unless `drop_empty`, which rejects it as `no_phrases` / `no_boxes`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fgclip_lmm.data.bad_records import BadRecordPolicy
from fgclip_lmm.datagen.detector import SelectConfig, select_boxes
from fgclip_lmm.datagen.hf_models import DecodingConfig
from fgclip_lmm.datagen.inputs import ImageFailure, finehard_items, load_images
from fgclip_lmm.datagen.phrases import Phrase, chunk_phrases, llm_phrases
from fgclip_lmm.datagen.runner import Outcome, RunResult, Shard, StepConfig, WorkItem, lazy, run_step
from fgclip_lmm.errors import InputError

PHRASE_PROMPT = (
    "List the distinct physical objects described in the caption below as short noun phrases copied word for word "
    "from the caption, keeping their attribute words (colour, size, material, pattern, count, state). "
    "Write one phrase per line, with no numbering and no other text.\nCaption: {caption}"
)

DetectFn = Callable[[list, list[list[str]]], list[dict]]  # images, queries per image -> boxes/scores/labels
ChatFn = Callable[..., list[str]]  # prompts, options -> replies


@dataclass(frozen=True)
class GroundConfig(StepConfig):
    input: str
    image_root: str
    out: str
    detector: str | None = None  # OWLv2 / OWL-ViT / Grounding DINO checkpoint
    phrases: str = "rules"  # "rules" or "llm"
    phrase_model: str | None = None  # chat LLM for --phrases llm
    max_phrases: int = 10
    threshold: float = 0.4
    nms_iou: float = 0.5
    max_boxes: int = 4
    max_boxes_per_phrase: int = 1
    min_box_side: float = 0.01
    text_threshold: float = 0.25  # Grounding DINO only
    drop_empty: bool = False
    phrase_max_new_tokens: int = 128

    def __post_init__(self) -> None:
        if self.phrases not in ("rules", "llm"):
            raise InputError(f"phrases must be 'rules' or 'llm', got {self.phrases!r}")
        if not 0.0 <= self.threshold < 1.0 or not 0.0 < self.nms_iou <= 1.0:
            raise InputError(f"threshold must be in [0, 1) and nms_iou in (0, 1], got {self.threshold}, {self.nms_iou}")
        if self.max_boxes < 1 or self.max_boxes_per_phrase < 1 or self.max_phrases < 1:
            raise InputError("max_boxes, max_boxes_per_phrase and max_phrases must be >= 1")

    @property
    def select(self) -> SelectConfig:
        return SelectConfig(self.threshold, self.nms_iou, self.max_boxes, self.max_boxes_per_phrase, self.min_box_side)

    def settings(self, detector_name: str, phrase_name: str | None) -> dict:
        return {"detector": detector_name, "phrases": self.phrases, "phrase_model": phrase_name,
                "max_phrases": self.max_phrases, "threshold": self.threshold, "nms_iou": self.nms_iou,
                "max_boxes": self.max_boxes, "max_boxes_per_phrase": self.max_boxes_per_phrase,
                "min_box_side": self.min_box_side, "text_threshold": self.text_threshold,
                "drop_empty": self.drop_empty}


def extract_phrases(captions: list[str], config: GroundConfig, chat: Callable[[], ChatFn] | None,
                    counts: list[dict[str, int]]) -> list[list[Phrase]]:
    if config.phrases == "rules":
        return [chunk_phrases(c, config.max_phrases) for c in captions]
    replies = chat()([PHRASE_PROMPT.format(caption=c) for c in captions],
                     DecodingConfig(max_new_tokens=config.phrase_max_new_tokens))
    out = []
    for caption, reply, count in zip(captions, replies, counts, strict=True):
        phrases = llm_phrases(caption, reply, config.max_phrases)
        if not phrases:
            count["phrases_llm_fallback"] = 1
            phrases = chunk_phrases(caption, config.max_phrases)
        out.append(phrases)
    return out


def box_entry(box, phrase: Phrase) -> dict:
    x1, y1, x2, y2 = (round(v, 4) for v in box.xyxy)
    return {"bbox": [x1, y1, x2, y2, round(box.score, 4)], "short_expr": phrase.short, "long_expr": phrase.long,
            "flag_short_neg": 0, "short_expr_negs": {}}


def make_batch_fn(config: GroundConfig, detect: Callable[[], DetectFn], chat: Callable[[], ChatFn] | None,
                  policy: BadRecordPolicy):
    def batch_fn(batch: list[WorkItem]) -> list[Outcome]:
        counts = [{} for _ in batch]
        phrases = extract_phrases([item.data["caption"] for item in batch], config, chat, counts)
        need = [i for i, p in enumerate(phrases) if p]
        loaded = load_images([batch[i] for i in need], config.image_root, policy, config.input,
                             config.allow_paths_outside_root, config.max_image_pixels)
        found: dict[int, list] = {}
        usable = [(i, image) for i, image in zip(need, loaded, strict=True) if not isinstance(image, ImageFailure)]
        if usable:
            detections = detect()([image for _, image in usable], [[p.short for p in phrases[i]] for i, _ in usable])
            for (i, _), det in zip(usable, detections, strict=True):
                found[i] = select_boxes(det["boxes"], det["scores"], det["labels"], len(phrases[i]), config.select)
        failed = {i: image for i, image in zip(need, loaded, strict=True) if isinstance(image, ImageFailure)}
        outcomes = []
        for i, item in enumerate(batch):
            count = counts[i]
            count["phrases"] = len(phrases[i])
            if i in failed:
                outcomes.append(Outcome.rejected(failed[i].reason, count, failed[i].detail))
                continue
            boxes = found.get(i, [])
            count["boxes"] = len(boxes)
            if not boxes:
                reason = "no_phrases" if not phrases[i] else "no_boxes"
                count[reason] = 1
                if config.drop_empty:
                    outcomes.append(Outcome.rejected(reason, count))
                    continue
            record = {**item.data, "bbox_info": [box_entry(box, phrases[i][box.label]) for box in boxes]}
            outcomes.append(Outcome.ok(record, count))
        return outcomes

    return batch_fn


def run_ground(config: GroundConfig, detect: DetectFn | None = None, chat: ChatFn | None = None,
               shard: Shard | None = None) -> RunResult:
    """Run the step; `detect` / `chat` replace the HF detector / phrase LLM (tests, custom backends)."""
    if detect is None and not config.detector:
        raise InputError("ground needs --detector (an OWLv2 / OWL-ViT / Grounding DINO checkpoint)")
    if config.phrases == "llm" and chat is None and not config.phrase_model:
        raise InputError("--phrases llm needs --phrase-model (a chat LLM checkpoint)")
    policy = BadRecordPolicy(config.on_bad_record)
    items = finehard_items(config.input, policy, config.image_root, mode="ground",
                           allow_outside_root=config.allow_paths_outside_root)
    if detect is None:
        from fgclip_lmm.datagen.detector import OpenVocabDetector

        get_detect = lazy(lambda: OpenVocabDetector(config.detector, config.device, config.dtype,
                                                    config.text_threshold))
    else:
        get_detect = lazy(lambda: detect)
    get_chat = None
    if config.phrases == "llm":
        if chat is None:
            from fgclip_lmm.datagen.hf_models import ChatGenerator

            get_chat = lazy(lambda: ChatGenerator(config.phrase_model, config.device, config.dtype))
        else:
            get_chat = lazy(lambda: chat)
    run = config.run_config(config.out)
    settings = config.settings(config.detector or getattr(detect, "name", "custom"),
                               config.phrase_model or (getattr(chat, "name", "custom") if chat else None))
    return run_step("ground", items, make_batch_fn(config, get_detect, get_chat, policy), run, settings, shard)
