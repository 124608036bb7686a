"""The four encoder benchmarks on already-read data: FG-OVD, box classification, retrieval and zero-shot
classification (docs/model.md, "Evaluation protocols"). Each returns a `BenchResult` whose rows become the JSON
and markdown tables.

- FG-OVD: the box's RoIAlign feature against 1 positive + up to 10 negatives (77-token path), softmax(100 cos);
  a row is correct when the argmax is the positive. Accuracy per split (hard / medium / easy / trivial) and the
  unweighted mean over splits.
- Box classification: every annotation's RoIAlign feature against C class embeddings (templates averaged after
  normalisation, renormalised), softmax(100 cos); top-1 / top-5.
- Retrieval: global image features against captions on the long (248, `walk_short_pos=False`) or short (77)
  path; R@1/5/10 image->text (any of the image's captions) and text->image.
- Zero-shot: global image features against template-averaged class embeddings; top-1 / top-5.
Records whose image is missing or unloadable are dropped only under `skip`, and the result counts them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from fgclip_lmm.data.bad_records import BadRecordPolicy

from .encode import ClipEncoder, check_images_exist, unique
from .formats import BoxClsData, FGOVDData, RetrievalData, ZeroShotData
from .metrics import FGOVD_SCALE, class_embeddings, fgovd_scores, recall_at, retrieval_ranks, topk_accuracy, topk_ranks
from .templates import TemplateSet

RECALL_KS = (1, 5, 10)
TOPK = (1, 5)
LONG_FORMATS = {"sharegpt4v": True, "dci": True, "coco": False}


@dataclass
class BenchResult:
    """Metric rows (label -> metric -> value; percentages in [0, 100]) plus what was evaluated and how."""

    bench: str
    rows: dict[str, dict[str, float | int]]
    columns: list[str]
    info: dict = field(default_factory=dict)


def prepare_images(paths, records, policy: BadRecordPolicy) -> torch.Tensor:
    """Check every image file exists before any model work; returns the (N,) mask of present images."""
    return check_images_exist(list(paths), list(records), policy)


def _image_records(box_image: list[int], records: list[str], n_images: int) -> list[str]:
    first: dict[int, str] = {}
    for image, record in zip(box_image, records, strict=True):
        first.setdefault(image, record)
    return [first[i] for i in range(n_images)]


def box_image_mask(boxes, policy: BadRecordPolicy) -> torch.Tensor:
    return prepare_images(boxes.images, _image_records(boxes.box_image, boxes.records, len(boxes.images)), policy)


def classifier(encoder: ClipEncoder, classnames: list[str], templates: TemplateSet, region: bool) -> torch.Tensor:
    """(C, P) class embeddings: every distinct prompt encoded once on the short path (FG-CLIP 2: the box walk when
    the classes are matched against boxes, `region`), then template-averaged."""
    prompts = templates.prompts(classnames)
    distinct, inverse = unique(prompts)
    feats = encoder.text_features(distinct, long=False, field_name="class_prompt", region=region)
    return class_embeddings(feats[inverse], len(classnames), len(templates.templates))


def run_fgovd(encoder: ClipEncoder, data: FGOVDData, image_ok: torch.Tensor) -> BenchResult:
    n_neg = torch.tensor([len(n) for n in data.negatives], dtype=torch.long)
    width = 1 + int(n_neg.max())
    texts = [t for pos, negs in zip(data.positives, data.negatives, strict=True) for t in (pos, *negs)]
    distinct, inverse = unique(texts)
    text_feats = encoder.text_features(distinct, long=False, field_name="fgovd_expression", region=True)
    # Scatter each row's flattened [pos, negs...] ids into a (K, width) table padded with -1.
    per_row = n_neg + 1
    row = torch.repeat_interleave(torch.arange(len(per_row)), per_row)
    col = torch.arange(len(texts)) - torch.repeat_interleave(per_row.cumsum(0) - per_row, per_row)
    index = torch.full((len(per_row), width), -1, dtype=torch.long)
    index[row, col] = inverse
    box_feats, ok = encoder.box_features(data.boxes, image_ok)
    correct, p_pos = fgovd_scores(box_feats[ok], text_feats, index[ok], FGOVD_SCALE)
    split = torch.tensor(data.split_of_row, dtype=torch.long)[ok]
    n_splits = len(data.splits)
    n = torch.bincount(split, minlength=n_splits)
    hits = torch.bincount(split, weights=correct.double(), minlength=n_splits)
    prob = torch.bincount(split, weights=p_pos.double(), minlength=n_splits)
    negs = torch.bincount(split, weights=n_neg[ok].double(), minlength=n_splits)
    rows_read = torch.bincount(torch.tensor(data.split_of_row, dtype=torch.long), minlength=n_splits)
    rows: dict[str, dict] = {}
    for i, name in enumerate(data.splits):
        count = int(n[i])
        rows[name] = {"n": count, "skipped": int(rows_read[i]) - count,
                      "top1": float(hits[i]) * 100.0 / count if count else float("nan"),
                      "mean_p_pos": float(prob[i]) / count if count else float("nan"),
                      "mean_negatives": float(negs[i]) / count if count else float("nan")}
    scored = [r["top1"] for r in rows.values() if r["n"]]
    if len(rows) > 1 and scored:
        rows["mean"] = {"n": int(n.sum()), "skipped": int(rows_read.sum() - n.sum()),
                        "top1": sum(scored) / len(scored), "mean_p_pos": float(prob.sum()) / max(int(n.sum()), 1),
                        "mean_negatives": float(negs.sum()) / max(int(n.sum()), 1)}
    info = {"text_path": "short", "text_max_length": encoder.model.config.short_max_len, "score": "softmax(100*cos)",
            "splits": dict(zip(data.splits, map(str, data.sources), strict=True))}
    return BenchResult("fgovd", rows, ["n", "skipped", "top1", "mean_p_pos", "mean_negatives"], info)


def run_boxcls(encoder: ClipEncoder, data: BoxClsData, image_ok: torch.Tensor, templates: TemplateSet) -> BenchResult:
    weights = classifier(encoder, data.classnames, templates, region=True)
    box_feats, ok = encoder.box_features(data.boxes, image_ok)
    labels = torch.tensor(data.labels, dtype=torch.long)[ok]
    ranks = topk_ranks(FGOVD_SCALE * box_feats[ok] @ weights.T, labels)
    n_classes = len(data.classnames)
    row = {"n": int(ok.sum()), "skipped": len(data.labels) - int(ok.sum()), **topk_accuracy(ranks, TOPK, n_classes)}
    # Mean per-class top-1 over classes that have boxes (robust to COCO's class imbalance).
    per_class_n = torch.bincount(labels, minlength=n_classes)
    per_class_hit = torch.bincount(labels, weights=(ranks == 0).double(), minlength=n_classes)
    present = per_class_n > 0
    row["mean_class_top1"] = float((per_class_hit[present] / per_class_n[present]).mean() * 100.0) \
        if bool(present.any()) else float("nan")
    info = {"classes": n_classes, "templates": templates.name, "num_templates": len(templates.templates),
            "text_path": "short", "score": "softmax(100*cos)"}
    return BenchResult("boxcls", {"all": row}, list(row), info)


def run_retrieval(encoder: ClipEncoder, data: RetrievalData, image_ok: torch.Tensor, text_path: str) -> BenchResult:
    long = LONG_FORMATS[data.format] if text_path == "auto" else text_path == "long"
    distinct, inverse = unique(data.texts)
    text_feats = encoder.text_features(distinct, long=long, field_name="long_caption" if long else "short_caption")
    image_feats, ok = encoder.image_features(data.images, data.image_records, image_ok)
    t2i = torch.tensor(data.text_to_image, dtype=torch.long)
    keep_text = ok[t2i]
    new_index = torch.cumsum(ok.long(), 0) - 1  # old image index -> index among kept images
    i2t_ranks, t2i_ranks = retrieval_ranks(image_feats[ok], text_feats[inverse[keep_text]], new_index[t2i[keep_text]])
    rows = {"image_to_text": {"n": int(ok.sum()), **recall_at(i2t_ranks, RECALL_KS)},
            "text_to_image": {"n": int(keep_text.sum()), **recall_at(t2i_ranks, RECALL_KS)}}
    cfg = encoder.model.config
    info = {"format": data.format, "text_path": "long" if long else "short", "walk_short_pos": not long,
            "text_max_length": cfg.long_max_len if long else cfg.short_max_len,
            "images_read": len(data.images), "images_skipped": len(data.images) - int(ok.sum()),
            "captions_read": len(data.texts),
            "captions_per_image_max": int(torch.bincount(t2i).max()) if len(t2i) else 0}
    return BenchResult("retrieval", rows, ["n", *(f"R@{k}" for k in RECALL_KS)], info)


def run_zeroshot(
    encoder: ClipEncoder, data: ZeroShotData, image_ok: torch.Tensor, templates: TemplateSet
) -> BenchResult:
    weights = classifier(encoder, data.classnames, templates, region=False)
    image_feats, ok = encoder.image_features(data.images, [str(p) for p in data.images], image_ok)
    labels = torch.tensor(data.labels, dtype=torch.long)[ok]
    ranks = topk_ranks(image_feats[ok] @ weights.T, labels)
    row = {"n": int(ok.sum()), "skipped": len(data.labels) - int(ok.sum()),
           **topk_accuracy(ranks, TOPK, len(data.classnames))}
    info = {"classes": len(data.classnames), "templates": templates.name, "num_templates": len(templates.templates),
            "text_path": "short"}
    return BenchResult("zeroshot", {"all": row}, list(row), info)
