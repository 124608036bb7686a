"""`fgclip-lmm synth`: generate the synthetic fine-grained world and its `manifest.json`.

Downstream code (trainers, evals, demo) finds every artifact ONLY through `DIR/manifest.json`
(`fgclip_lmm.data.synth.manifest.load_manifest` reads it). All paths in it are relative to DIR. Keys:

* `format` ("fgclip-lmm-synth/2"), `seed`, `image_size`, `num_images`.
* `splits`: {train|val|test|heldout: {"count", "first_index"}}; images of a split are disjoint from all others,
  and `heldout` images each hold at least one (colour, shape) pair that never occurs (in images or texts)
  anywhere else: `heldout_combinations` lists those pairs.
* `vocabulary`: {shapes, colours, sizes, patterns, positions, backgrounds, background_styles}.
* `settings`: {image_root (".", the root every image path is relative to), finehard_strip_prefix (the fake
  "grit-20m/data-12m/" prefix of `f_path`, strip it as with real FineHARD), short_caption_prefix ("a photo of "),
  num_hard_negatives (10), hard_fraction (share of boxes with negatives), max_objects (5)}.
* `files`:
  - `images`: {split: "images/<split>"} (PNG, `<index:06d>.png`)
  - `stage1`: {split: "stage1/<split>.jsonl"} rows `{image, long_caption, short_caption}`
  - `finehard`: {split: "finehard/<split>.json"} (a JSON array, official item schema)
  - `llava`: {align: train captions (LCS-558K style), instruct: train single-turn QA (8 per image) + a few
    text-only rows, instruct_val: val QA, text: the instruct conversations with the image as text (`scene_text`),
    for pretraining a random LLM before it sees images} (LLaVA JSON)
  - `pope`: {random|popular|adversarial: parquet} (fields id, question_id, question, answer yes/no,
    image_source, image, category) and `mme`: parquet (question_id "<category>/<stem>.png" shared by a Yes/No
    pair, question, answer Yes/No, image, category in existence|count|position|color|shape|size); test split
  - `fgovd`: {test|heldout: {hard|medium|easy|trivial: JSONL}} (official FG-OVD rows)
  - `boxcls`: {test|heldout: COCO instances JSON}; `retrieval`: {long: ShareGPT4V JSON, short: COCO captions JSON}
  - `tokenizers`: {clip: HF dir, llm: HF dir}
* `counts`: {splits: {split: {images, objects}}, benchmarks: {pope: {split: rows}, mme_rows, fgovd: {split:
  {level: rows}}, llava: {align, instruct, instruct_val, text}, retrieval_images}}.
* `stats`: objects_per_image {n: images}, mean_objects_per_image, attribute_balance {attribute: {value: objects}},
  negatives_per_box {n: boxes}, heldout_objects, token_lengths {field: max CLIP tokens}.

Every output is a pure function of (seed, num images, size): the same arguments give byte-identical files.
"""

from __future__ import annotations

import multiprocessing
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from fgclip_lmm.data.synth import benchmarks as bench
from fgclip_lmm.data.synth import records as rec
from fgclip_lmm.data.synth.manifest import FORMAT
from fgclip_lmm.data.synth.render import encode_png, render_scene
from fgclip_lmm.data.synth.world import (
    BACKGROUND_STYLES,
    BACKGROUNDS,
    COLOURS,
    HELDOUT_COMBINATIONS,
    MAX_OBJECTS,
    PATTERNS,
    POSITIONS,
    SHAPES,
    SIZES,
    Scene,
    sample_scene,
)
from fgclip_lmm.data.synth.writing import text_corpus, write_json, write_jsonl, write_parquet

SPLITS = ("train", "val", "test", "heldout")
ARTIFACT_DIRS = ("images", "stage1", "finehard", "llava", "pope", "mme", "fgovd", "boxcls", "retrieval", "tokenizers")


@dataclass(frozen=True)
class SynthConfig:
    out: str
    images: int = 1000
    seed: int = 0
    size: int = 64
    workers: int = 2
    val_fraction: float = 0.05
    test_fraction: float = 0.10
    heldout_fraction: float = 0.05
    num_hard_negatives: int = 10
    hard_fraction: float = 0.9
    pope_images: int = 500
    mme_images: int = 200
    retrieval_images: int = 1000
    clip_vocab_size: int = 1024
    llm_vocab_size: int = 1024
    overwrite: bool = False
    progress: bool = True


def split_counts(config: SynthConfig) -> dict[str, int]:
    if config.images < len(SPLITS) + 1:
        raise ValueError(f"--images must be at least {len(SPLITS) + 1} (one per split and two for training)")
    held = {
        name: max(1, round(config.images * f))
        for name, f in (
            ("val", config.val_fraction),
            ("test", config.test_fraction),
            ("heldout", config.heldout_fraction),
        )
    }
    return {"train": config.images - sum(held.values()), **held}


def make_scenes(config: SynthConfig) -> dict[str, list[Scene]]:
    scenes, start = {}, 0
    for split, count in split_counts(config).items():
        scenes[split] = [sample_scene(i, split, config.seed) for i in range(start, start + count)]
        start += count
    return scenes


def _render_one(job: tuple[Scene, int, int, str]) -> int:
    scene, size, seed, root = job
    png = encode_png(render_scene(scene, size, seed))
    (Path(root) / scene.image_path()).write_bytes(png)
    return len(png)


def render_all(scenes: list[Scene], config: SynthConfig, root: Path) -> None:
    for split in SPLITS:
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
    jobs = [(scene, config.size, config.seed, str(root)) for scene in scenes]
    bar = tqdm(total=len(jobs), desc="synth: drawing images", unit="img", disable=not config.progress)
    if config.workers > 1 and len(jobs) >= 256:
        with multiprocessing.get_context().Pool(config.workers) as pool:
            for _ in pool.imap_unordered(_render_one, jobs, chunksize=128):
                bar.update()
    else:
        for job in jobs:
            _render_one(job)
            bar.update()
    bar.close()


def _prepare_out(config: SynthConfig) -> Path:
    root = Path(config.out)
    if root.exists() and any(root.iterdir()):
        if not config.overwrite:
            raise FileExistsError(f"{root} is not empty; pass --overwrite to replace a previous world there")
        for name in (*ARTIFACT_DIRS, "manifest.json"):
            target = root / name
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    return root


def generate(config: SynthConfig) -> dict:
    """Write the whole world under `config.out`; return the manifest (also written to manifest.json)."""
    from fgclip_lmm.data.tokenizers import train_clip_tokenizer, train_llm_tokenizer

    root = _prepare_out(config)
    by_split = make_scenes(config)
    all_scenes = [s for split in SPLITS for s in by_split[split]]
    render_all(all_scenes, config, root)
    files: dict = {"images": {split: f"images/{split}" for split in SPLITS}, "stage1": {}, "finehard": {}}
    counts: dict = {
        "splits": {
            split: {"images": len(v), "objects": sum(len(s.objects) for s in v)} for split, v in by_split.items()
        }
    }
    finehard_items = {}
    for split, scenes in by_split.items():
        files["stage1"][split] = write_jsonl(root, f"stage1/{split}.jsonl", [rec.stage1_row(s) for s in scenes])
        finehard_items[split] = [
            rec.finehard_item(s, config.seed, config.num_hard_negatives, config.hard_fraction) for s in scenes
        ]
        files["finehard"][split] = write_json(root, f"finehard/{split}.json", finehard_items[split])
    align = [rec.align_record(s, config.seed) for s in by_split["train"]]
    instruct = [r for s in by_split["train"] for r in rec.instruct_records(s, config.seed)] + rec.text_only_records()
    instruct_val = [r for s in by_split["val"] for r in rec.instruct_records(s, config.seed)]
    text = [r for s in by_split["train"] for r in rec.text_records(s, config.seed)]
    files["llava"] = {
        "text": write_json(root, "llava/text.json", text),
        "align": write_json(root, "llava/align.json", align),
        "instruct": write_json(root, "llava/instruct.json", instruct),
        "instruct_val": write_json(root, "llava/instruct_val.json", instruct_val),
    }
    test = by_split["test"]

    def image_bytes(scene) -> bytes:
        return (root / scene.image_path()).read_bytes()

    # POPE uses images with at least 3 objects (3 "yes" + 3 "no" each); tiny worlds fall back to any image.
    pope_scenes = [s for s in test if len(s.objects) >= 3] or test
    pope = bench.pope_rows(pope_scenes[: config.pope_images], by_split["train"], config.seed, image_bytes)
    files["pope"] = {
        name: write_parquet(root, f"pope/{name}.parquet", rows, "pope") for name, rows in pope.items()
    }
    mme = bench.mme_rows(test[: config.mme_images], config.seed, image_bytes)
    files["mme"] = write_parquet(root, "mme/attributes.parquet", mme, "mme")
    fgovd = {
        split: bench.fgovd_rows(by_split[split], config.seed, config.size, config.num_hard_negatives)
        for split in ("test", "heldout")
    }
    files["fgovd"] = {
        split: {level: write_jsonl(root, f"fgovd/{split}/{level}.jsonl", rows) for level, rows in levels.items()}
        for split, levels in fgovd.items()
    }
    files["boxcls"] = {
        split: write_json(root, f"boxcls/instances_{split}.json", bench.boxcls_coco(by_split[split], config.size))
        for split in ("test", "heldout")
    }
    retrieval_scenes = test[: config.retrieval_images]
    long_ret, short_ret = bench.long_retrieval(retrieval_scenes), bench.short_retrieval(retrieval_scenes, config.size)
    files["retrieval"] = {
        "long": write_json(root, "retrieval/long_test.json", long_ret),
        "short": write_json(root, "retrieval/captions_test.json", short_ret),
    }
    corpus = text_corpus(finehard_items, align + instruct + instruct_val + text, pope, mme, fgovd, short_ret)
    clip = train_clip_tokenizer(corpus, root / "tokenizers/clip", vocab_size=config.clip_vocab_size)
    train_llm_tokenizer(corpus, root / "tokenizers/llm", vocab_size=config.llm_vocab_size)
    files["tokenizers"] = {"clip": "tokenizers/clip", "llm": "tokenizers/llm"}
    counts["benchmarks"] = {
        "pope": {name: len(rows) for name, rows in pope.items()},
        "mme_rows": len(mme),
        "fgovd": {split: {level: len(rows) for level, rows in levels.items()} for split, levels in fgovd.items()},
        "llava": {"align": len(align), "instruct": len(instruct), "instruct_val": len(instruct_val), "text": len(text)},
        "retrieval_images": len(retrieval_scenes),
    }
    manifest = {
        "format": FORMAT,
        "seed": config.seed,
        "image_size": config.size,
        "num_images": len(all_scenes),
        "splits": {split: {"count": len(v), "first_index": v[0].index} for split, v in by_split.items()},
        "heldout_combinations": sorted([list(pair) for pair in HELDOUT_COMBINATIONS]),
        "vocabulary": {
            "shapes": list(SHAPES),
            "colours": list(COLOURS),
            "sizes": list(SIZES),
            "patterns": list(PATTERNS),
            "positions": list(POSITIONS),
            "backgrounds": list(BACKGROUNDS),
            "background_styles": list(BACKGROUND_STYLES),
        },
        "settings": {
            "image_root": ".",
            "finehard_strip_prefix": rec.FINEHARD_PREFIX,
            "short_caption_prefix": "a photo of ",
            "num_hard_negatives": config.num_hard_negatives,
            "hard_fraction": config.hard_fraction,
            "max_objects": MAX_OBJECTS,
        },
        "files": files,
        "counts": counts,
        "stats": statistics(all_scenes, finehard_items, clip),
    }
    write_json(root, "manifest.json", manifest, indent=2)
    return manifest


def statistics(scenes: list[Scene], finehard_items: dict[str, list[dict]], clip_tokenizer) -> dict:
    objects = [o for s in scenes for o in s.objects]
    balance = {
        name: dict(sorted(Counter(getattr(o, name) for o in objects).items()))
        for name in ("shape", "colour", "size", "pattern", "position")
    }
    boxes = [b for items in finehard_items.values() for item in items for b in item["bbox_info"]]
    items = [item for items in finehard_items.values() for item in items]

    def max_tokens(texts: list[str]) -> int:
        return max(len(ids) for ids in clip_tokenizer(texts, verbose=False).input_ids)

    return {
        "objects_per_image": {str(k): v for k, v in sorted(Counter(len(s.objects) for s in scenes).items())},
        "mean_objects_per_image": round(len(objects) / len(scenes), 4),
        "attribute_balance": balance,
        "negatives_per_box": {str(k): v for k, v in sorted(Counter(len(b["short_expr_negs"]) for b in boxes).items())},
        "heldout_objects": sum((o.colour, o.shape) in HELDOUT_COMBINATIONS for o in objects),
        "token_lengths": {
            "long_caption_max": max_tokens([i["caption"] for i in items]),
            "short_caption_max": max_tokens(["a photo of " + i["short_caption"] for i in items]),
            "box_text_max": max_tokens([t for b in boxes for t in (b["short_expr"], b["long_expr"])]),
        },
    }
