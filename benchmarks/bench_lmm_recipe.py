"""Which LMM recipe makes the demo's LMM look at the image? One lever at a time, measured against blind controls.

Each arm trains a small LMM on a finished demo run's world and FG-CLIP tower with the demo's recipe
(`fgclip_lmm.demo.config.PRESETS["default"]`) and one lever changed, then asks the world's POPE and MME-style
questions with the image, a gray image and another image. The visual gain (accuracy with the image minus the best
control) says whether the category is answered from the picture or from the wording; `former demo` is the recipe
before issue 15 (random 64x2 LLM, stock projector init, align at lr 1e-2, no warm-up questions, 400 steps).
Training runs on cached tower features (`lmm_recipe_lib`: exact for a frozen tower, ~20x cheaper per arm).

    make demo && python benchmarks/bench_lmm_recipe.py --run runs/demo            # ~30 min on 2 CPU cores
    python benchmarks/bench_lmm_recipe.py --run runs/demo --arms demo,random_llm --seeds 0,1

Writes RUN/bench_lmm_recipe/results.json and prints a markdown table (benchmarks/README.md keeps one).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import lmm_recipe_lib as lib
import numpy as np
import torch
from PIL import Image
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as hf_logging

from fgclip_lmm.data.synth import records
from fgclip_lmm.data.synth.manifest import load_manifest
from fgclip_lmm.data.synth.world import sample_scene
from fgclip_lmm.demo.config import PRESETS
from fgclip_lmm.demo.pipeline import write_demo_llm
from fgclip_lmm.lmm.text_pretrain import TextPretrainConfig, pretrain_text


@dataclass(frozen=True)
class Recipe:
    llm_hidden: int
    llm_layers: int
    text_steps: int       # text pretraining of the LLM on WORLD/llava/text.json (0: random LLM)
    text_batch: int
    projector_init: str   # match_text | keep
    align_steps: int
    align_lr: float
    finetune_steps: int
    finetune_lr: float
    batch: int
    simple_share: float   # share of warm-up questions in the instruct conversations
    per_image: int        # instruct questions per training image (single-turn conversations)
    init_std: float | None  # the random LLM's initializer_range (None: Llama's 0.02)
    template: str         # chat template of text pretraining and finetuning


def demo_recipe() -> Recipe:
    c = PRESETS["default"]
    return Recipe(c.llm_hidden, c.llm_layers, c.llm_text_steps, c.llm_text_batch, c.projector_init, c.align_steps,
                  c.align_lr, c.finetune_steps, c.finetune_lr, c.lmm_batch, records.SIMPLE_SHARE,
                  records.INSTRUCT_PER_IMAGE, c.llm_init_std, c.template)


def arms(base: Recipe) -> dict[str, Recipe]:
    other = (128, 4) if (base.llm_hidden, base.llm_layers) != (128, 4) else (64, 2)
    return {
        "demo": base,
        "random_llm": replace(base, text_steps=0),
        "stock_init": replace(base, projector_init="keep"),
        "stock_init_lr1e-2": replace(base, projector_init="keep", align_lr=1e-2),
        "no_align": replace(base, align_steps=0),
        "no_warmup_questions": replace(base, simple_share=0.0),
        "llm_init_0.02": replace(base, init_std=None),
        f"llm_{other[0]}x{other[1]}": replace(base, llm_hidden=other[0], llm_layers=other[1]),
        "batch_half": replace(base, batch=base.batch // 2),
        "questions_per_image_2": replace(base, per_image=2),
        # before issue 15: random LLM, stock init, align lr 1e-2, 40 + 400 steps at batch 16, no warm-up questions
        # (its data was one 2-4-turn conversation per image; 3 single-turn questions per image here)
        "vicuna_v1_system_prompt": replace(base, template="vicuna_v1"),
        "former_demo": Recipe(64, 2, 0, 32, "keep", 40, 1e-2, 400, 1e-3, 16, 0.0, 3, None, "vicuna_v1"),
    }


class Bench:
    def __init__(self, run: Path, limit: int, max_len: int):
        self.run, self.out = run, run / "bench_lmm_recipe"
        if not (run / "world" / "manifest.json").is_file() or not (run / "encoders" / "fgclip" / "hf").is_dir():
            raise SystemExit(f"{run}: not a finished `fgclip-lmm demo` run (make demo, or pass --run DIR)")
        self.out.mkdir(parents=True, exist_ok=True)
        self.world = load_manifest(run / "world")
        self.max_len = max_len
        tower = run / "encoders" / "fgclip" / "hf"
        self.questions, eval_images = lib.world_questions(self.world, limit)
        self.align_rows = json.loads(self.world.path("llava", "align").read_text())
        self.instruct_rows = json.loads(self.world.path("llava", "instruct").read_text())
        paths = sorted({r["image"] for r in self.align_rows + self.instruct_rows if r.get("image")})
        cache = self.out / "features.pt"
        if cache.is_file():
            self.feats = torch.load(cache, weights_only=True)
        else:
            images = [Image.open(self.world.image_root / p).convert("RGB") for p in paths]
            size = images[0].size
            self.feats = lib.tower_features(str(tower), images + eval_images + [Image.new("RGB", size, (128,) * 3)])
            torch.save(self.feats, cache)
        self.image_rows = {p: i for i, p in enumerate(paths)}
        offset = len(paths)
        for q in self.questions:
            q.image += offset
        self.gray_row = self.feats.shape[0] - 1
        self.n_img = self.feats.shape[1]

    def instruct(self, simple_share: float, per_image: int) -> list[dict]:
        if simple_share == records.SIMPLE_SHARE and per_image == records.INSTRUCT_PER_IMAGE:
            return self.instruct_rows
        split = self.world["splits"]["train"]
        seed = self.world["seed"]
        scenes = [sample_scene(i, "train", seed) for i in range(split["first_index"],
                                                                split["first_index"] + split["count"])]
        return [r for s in scenes for r in records.instruct_records(s, seed, per_image, simple_share)]

    def llm(self, recipe: Recipe, seed: int) -> Path:
        """The (cached) LLM of an arm: random, or text-pretrained for `recipe.text_steps`."""
        init = f"_init{recipe.init_std:g}" if recipe.init_std is not None else ""
        base = self.out / f"llm_{recipe.llm_hidden}x{recipe.llm_layers}{init}_s{seed}"
        if not (base / "config.json").is_file():
            write_demo_llm(base, self.world.path("tokenizers", "llm"), recipe.llm_hidden, recipe.llm_layers, seed,
                           recipe.init_std)
        if not recipe.text_steps:
            return base
        tuned = base.with_name(base.name + f"_text{recipe.text_steps}x{recipe.text_batch}_{recipe.template}")
        if not (tuned / "config.json").is_file():
            pretrain_text(base, tuned, TextPretrainConfig(str(self.world.path("llava", "text")), recipe.text_steps,
                                                          recipe.text_batch, template=recipe.template,
                                                          seed=seed), progress=False)
        return tuned

    def run_arm(self, recipe: Recipe, seed: int) -> dict:
        start = time.perf_counter()
        llm_dir = self.llm(recipe, seed)
        tokenizer = AutoTokenizer.from_pretrained(str(llm_dir))
        tokenizer.add_special_tokens({"additional_special_tokens": [lib.IMAGE_TOKEN]})
        image_id = tokenizer.convert_tokens_to_ids(lib.IMAGE_TOKEN)
        pad = tokenizer.pad_token_id
        llm = AutoModelForCausalLM.from_pretrained(str(llm_dir), dtype=torch.float32)
        llm.resize_token_embeddings(len(tokenizer))
        projector = lib.projector_for(self.feats.shape[-1], llm.config.hidden_size, seed)
        align, _ = lib.encode_rows(self.align_rows, self.image_rows, tokenizer, "plain", self.n_img, self.max_len)
        instruct, truncated = lib.encode_rows(self.instruct(recipe.simple_share, recipe.per_image), self.image_rows,
                                              tokenizer, recipe.template, self.n_img, self.max_len)
        text_ids = torch.tensor([t for e in align[:64] for t in e.ids if t not in (image_id, pad)])
        init = lib.init_match_text(llm, projector, self.feats, text_ids) if recipe.projector_init == "match_text" \
            else {}
        t_align = lib.train_stage(llm, projector, self.feats, align, recipe.align_steps, recipe.align_lr,
                                  recipe.batch, image_id, pad, train_llm=False, seed=seed)
        after_align = lib.health(llm, projector, self.feats, text_ids)
        t_ft = lib.train_stage(llm, projector, self.feats, instruct, recipe.finetune_steps, recipe.finetune_lr,
                               recipe.batch, image_id, pad, train_llm=True, seed=seed)
        scores = lib.evaluate(llm, projector, self.feats, self.questions, self.gray_row, tokenizer, self.n_img,
                              image_id, pad, recipe.template, seed)
        return {"recipe": asdict(recipe), "seed": seed, "init": init, "health_after_align": after_align,
                "truncated_instruct": truncated, "seconds": {"align": t_align, "finetune": t_ft,
                                                             "total": time.perf_counter() - start},
                "scores": scores}


COLUMNS = ("pope", "existence", "color", "shape", "position", "count", "size")


def summary_row(name: str, results: list[dict]) -> str:
    def mean(f):
        return float(np.mean([f(r) for r in results]))
    gains = []
    for c in COLUMNS:
        if c == "pope":
            gains.append(mean(lambda r: np.mean([v["gain"] for k, v in r["scores"].items() if k.startswith("pope_")])))
        else:
            gains.append(mean(lambda r, c=c: r["scores"][c]["gain"]))
    f1 = mean(lambda r: np.mean([v["f1"] for k, v in r["scores"].items() if k.startswith("pope_")]))
    yes = mean(lambda r: np.mean([v["yes_rate"] for k, v in r["scores"].items() if k.startswith("pope_")]))
    ratio = mean(lambda r: r["health_after_align"]["image_norm_ratio"])
    cosine = mean(lambda r: r["health_after_align"]["image_cosine"])
    wall = mean(lambda r: r["seconds"]["total"])
    return (f"| {name} | {len(results)} | {ratio:.1f} / {cosine:.2f} | " + " | ".join(f"{g:+.1f}" for g in gains)
            + f" | {f1:.1f} | {yes:.0f} | {wall:.0f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, default=Path("runs/demo"), help="a finished `fgclip-lmm demo` output dir")
    p.add_argument("--arms", default="all", help="comma-separated arm names (default: all)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds; rows average over them")
    p.add_argument("--limit", type=int, default=200, help="questions per POPE split / MME category")
    p.add_argument("--max-len", type=int, default=PRESETS["default"].model_max_length)
    p.add_argument("--scale", type=float, default=1.0, help="multiply every step count (0.01: a smoke run)")
    a = p.parse_args()
    hf_logging.disable_progress_bar()
    bench = Bench(a.run, a.limit, a.max_len)
    base = demo_recipe()
    if a.scale != 1.0:
        base = replace(base, **{k: max(1, round(getattr(base, k) * a.scale))
                                for k in ("text_steps", "align_steps", "finetune_steps")})
    table = arms(base)
    names = list(table) if a.arms == "all" else a.arms.split(",")
    unknown = [n for n in names if n not in table]
    if unknown:
        raise SystemExit(f"unknown arm(s) {unknown}; known: {', '.join(table)}")
    results_file = bench.out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    for name in names:
        for seed in map(int, a.seeds.split(",")):
            key = f"{name}/seed{seed}"
            if key in results and results[key]["recipe"] == asdict(table[name]):
                continue
            results[key] = bench.run_arm(table[name], seed)
            # merge with what other processes wrote meanwhile (arms may run in parallel, one per core)
            on_disk = json.loads(results_file.read_text()) if results_file.is_file() else {}
            results = {**on_disk, **{k: v for k, v in results.items() if k == key or k not in on_disk}}
            tmp = results_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(results, indent=1))
            os.replace(tmp, results_file)
            print(summary_row(key, [results[key]]), flush=True)
    results = json.loads(results_file.read_text()) if results_file.is_file() else results
    print("\n| arm | seeds | align: norm ratio / cosine | " + " | ".join(f"gain {c}" for c in COLUMNS)
          + " | POPE F1 | POPE yes% | wall s |")
    print("|---|---|---|" + "---|" * len(COLUMNS) + "---|---|---|")
    for name in names:
        rows = [results[k] for k in results if k.split("/")[0] == name]
        print(summary_row(name, rows))


if __name__ == "__main__":
    main()
