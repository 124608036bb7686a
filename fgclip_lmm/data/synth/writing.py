"""Deterministic writers for the synthetic world's files, and the text corpus the tokenizers learn from.

JSON keeps insertion order and `ensure_ascii=False`; parquet goes through `datasets` with the schema of
`fgclip_lmm.eval.lmm.task_files` (HF `Image` feature for the image column, so lmms-eval decodes it to PIL) and no
timestamps, so the same rows give the same bytes. Each writer returns the path relative to the world root, for the
manifest.
"""

from __future__ import annotations

import json
from pathlib import Path


def _target(root: Path, relative: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_json(root: Path, relative: str, value, indent: int | None = None) -> str:
    text = json.dumps(value, ensure_ascii=False, indent=indent)
    _target(root, relative).write_text(text + "\n", encoding="utf-8")
    return relative


def write_jsonl(root: Path, relative: str, rows: list[dict]) -> str:
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    _target(root, relative).write_text(text, encoding="utf-8")
    return relative


def write_parquet(root: Path, relative: str, rows: list[dict], kind: str) -> str:
    """A yes/no question parquet in the one schema of `fgclip_lmm.eval.lmm.task_files` (`pope` or `mme`)."""
    from fgclip_lmm.eval.lmm.task_files import PARQUET_FEATURES
    from fgclip_lmm.eval.lmm.task_files import write_parquet as write_task_parquet

    write_task_parquet(rows, PARQUET_FEATURES[kind], _target(root, relative))
    return relative


def _conversation_texts(records: list[dict]) -> list[str]:
    return [turn["value"].replace("<image>\n", "") for r in records for turn in r["conversations"]]


def text_corpus(
    finehard: dict[str, list[dict]],
    llava: list[dict],
    pope: dict[str, list[dict]],
    mme: list[dict],
    fgovd: dict[str, dict[str, list[dict]]],
    short_retrieval: dict,
) -> list[str]:
    """Every text of the world (captions, phrases, negatives, questions, answers), for tokenizer training."""
    texts: list[str] = []
    for items in finehard.values():
        for item in items:
            texts += [item["caption"], "a photo of " + item["short_caption"]]
            for box in item["bbox_info"]:
                texts += [box["short_expr"], box["long_expr"], *box["short_expr_negs"].values()]
    texts += _conversation_texts(llava)
    texts += [row["question"] for rows in pope.values() for row in rows] + [row["question"] for row in mme]
    texts += [
        e
        for levels in fgovd.values()
        for rows in levels.values()
        for row in rows
        for e in row["pos_expression"] + row["neg_expression"]
    ]
    texts += [a["caption"] for a in short_retrieval["annotations"]]
    return texts
