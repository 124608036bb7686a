"""Open-vocabulary detection for `ground`: transformers' OWLv2 / OWL-ViT or Grounding DINO, then box selection.

`OpenVocabDetector(model_id)(images, queries)` returns, per image, normalised xyxy `boxes` (n, 4), `scores` (n,)
and `labels` (n,), the index of the query each box answers (-1 when it matches none). Models load through
`AutoModelForZeroShotObjectDetection` + `AutoProcessor`:

* OWLv2 / OWL-ViT: the queries of an image are separate texts; the processor pads the query lists of a batch with
  " ", whose labels (>= the image's query count) are dropped later. OWLv2 pads images to a square at the bottom /
  right, so `post_process_object_detection` is given the real (h, w) and boxes are divided by (w, h).
* Grounding DINO: the queries are joined as "q1. q2. ..." and each box's decoded text span is mapped back to a query
  (`match_label`: exact, then the query sharing most words).

`select_boxes` applies the paper's recipe (NMS and confidence > 0.4; docs/model.md, "How FineHARD was built") plus
caps: clip to the image, drop boxes narrower than `min_box_side`, class-agnostic NMS (`torchvision.ops.nms`), at
most `max_boxes_per_phrase` boxes per query and `max_boxes` per image, best score first.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.ops import nms

from fgclip_lmm.datagen.hf_models import load_model
from fgclip_lmm.datagen.lexicon import tokenize
from fgclip_lmm.errors import CheckpointError

OWL_TYPES = ("owlv2", "owlvit")
GDINO_TYPES = ("grounding-dino", "mm-grounding-dino")


@dataclass(frozen=True)
class SelectConfig:
    threshold: float = 0.4  # keep scores strictly above (paper: confidence > 0.4)
    nms_iou: float = 0.5
    max_boxes: int = 4
    max_boxes_per_phrase: int = 1
    min_box_side: float = 0.01  # normalised width and height


@dataclass(frozen=True)
class Box:
    xyxy: tuple[float, float, float, float]  # normalised, clipped to [0, 1]
    score: float
    label: int  # query index


def select_boxes(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, num_queries: int,
                 config: SelectConfig) -> list[Box]:
    """Threshold, clip, size filter, class-agnostic NMS and caps; best score first."""
    boxes = boxes.float().reshape(-1, 4).clamp(0.0, 1.0)
    scores, labels = scores.float().reshape(-1), labels.long().reshape(-1)
    wide = (boxes[:, 2] - boxes[:, 0] >= config.min_box_side) & (boxes[:, 3] - boxes[:, 1] >= config.min_box_side)
    keep = (scores > config.threshold) & (labels >= 0) & (labels < num_queries) & wide
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    chosen: list[Box] = []
    per_label: dict[int, int] = {}
    for i in nms(boxes, scores, config.nms_iou).tolist():  # indices sorted by decreasing score
        label = int(labels[i])
        if per_label.get(label, 0) >= config.max_boxes_per_phrase:
            continue
        per_label[label] = per_label.get(label, 0) + 1
        chosen.append(Box(tuple(float(v) for v in boxes[i]), float(scores[i]), label))
        if len(chosen) == config.max_boxes:
            break
    return chosen


def match_label(label: str, queries: list[str]) -> int:
    """The query a Grounding DINO text span names: exact match, else most shared words (ties: first), else -1."""
    words = [w.lower() for w in tokenize(label) if w[0].isalnum()]
    normalised = [" ".join(w.lower() for w in tokenize(q) if w[0].isalnum()) for q in queries]
    if " ".join(words) in normalised:
        return normalised.index(" ".join(words))
    overlap = [len(set(words) & set(q.split())) for q in normalised]
    best = max(overlap, default=0)
    return overlap.index(best) if best > 0 else -1


class OpenVocabDetector:
    """`detector(images, queries) -> [{"boxes", "scores", "labels"}]` with an OWL or Grounding DINO checkpoint."""

    def __init__(self, model_id: str, device: str | None = None, dtype: str = "auto", text_threshold: float = 0.25):
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

        self.processor = AutoProcessor.from_pretrained(model_id)
        self.model, self.device = load_model(AutoModelForZeroShotObjectDetection, model_id, device, dtype)
        self.kind = self.model.config.model_type
        if self.kind not in OWL_TYPES + GDINO_TYPES:
            raise CheckpointError(f"{model_id}: model type {self.kind!r} is not supported; use OWLv2 / OWL-ViT "
                                  f"({', '.join(OWL_TYPES)}) or Grounding DINO ({', '.join(GDINO_TYPES)})")
        self.text_threshold = text_threshold

    @torch.inference_mode()
    def __call__(self, images: list, queries: list[list[str]]) -> list[dict[str, torch.Tensor]]:
        sizes = [(image.height, image.width) for image in images]
        if self.kind in OWL_TYPES:
            inputs = self.processor(text=queries, images=images, return_tensors="pt", truncation=True)
            outputs = self.model(**inputs.to(self.device).to(self.model.dtype))
            results = self.processor.image_processor.post_process_object_detection(
                outputs, threshold=0.0, target_sizes=sizes)
            labels = [r["labels"].cpu() for r in results]
        else:
            texts = [". ".join(q.lower() for q in qs) + "." for qs in queries]
            inputs = self.processor(images=images, text=texts, padding=True, return_tensors="pt")
            outputs = self.model(**inputs.to(self.device).to(self.model.dtype))
            results = self.processor.post_process_grounded_object_detection(
                outputs, inputs["input_ids"], threshold=0.0, text_threshold=self.text_threshold, target_sizes=sizes)
            special = set(self.processor.tokenizer.all_special_tokens)
            labels = [torch.tensor([match_label(" ".join(w for w in t.split() if w not in special), qs)
                                    for t in r["text_labels"]], dtype=torch.long)
                      for r, qs in zip(results, queries, strict=True)]
        out = []
        for (h, w), result, label in zip(sizes, results, labels, strict=True):
            scale = torch.tensor([w, h, w, h], dtype=torch.float32)
            out.append({"boxes": result["boxes"].float().cpu() / scale, "scores": result["scores"].float().cpu(),
                        "labels": label.reshape(-1)})
        return out
