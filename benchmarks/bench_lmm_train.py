"""LMM training tokens/s and padding waste, with and without length grouping.

Builds a small HF LLaVA export (`lmm_presets.build_export`: tiny FG-CLIP tower + random Llama, Vicuna-v1) and a
synthetic LLaVA-JSON dataset on disk: `--samples` conversations (a share `--text-only` without an image), each
1-4 turns whose answer lengths are drawn log-uniformly from 2 to `--max-words` words, so sequence lengths spread
over an order of magnitude as in LLaVA-665k. The project's own pipeline reads it: `LlavaJsonDataset` ->
`LmmSupervisedDataset` (template, label masking, image tokens) -> `LmmCollator` (right padding).

Two orders of the same epoch, same batch size: `shuffled` (a seeded random permutation cut into batches: the
default without grouping) and `grouped` (`GroupedBatchSampler` over `dataset.modality_lengths`, LLaVA's
`group_by_modality_length`). Batches are collated once, outside the timing. One timed unit = one epoch of
training steps (`lmm_forward` + backward + AdamW; LLM and projector trained, tower frozen), the two orders
interleaved, medians reported.

* padding efficiency = real tokens / computed tokens (batch x longest row, summed over batches);
* tokens/s = real (non-padding) tokens / epoch time, in this one process, and projected over `--world`
  synchronous ranks (each step costs its slowest micro-batch's measured time; no communication);
* sync efficiency = real tokens / (`--world` x the slowest rank's padded slots, summed over steps);
* a token-arithmetic table at LLaVA's recipe (16 x 8 ranks) on lengths resampled from the dataset, with a
  reference order sorted over 16 steps (not the project's sampler) that shows what longer sorting buys.

    python benchmarks/bench_lmm_train.py                       # small LLM, CPU, ~1 min
    python benchmarks/bench_lmm_train.py --llm 1b --device cuda --samples 512 --batch 16 --max-words 400
"""
from __future__ import annotations

import json
import math
import random
import tempfile
from pathlib import Path

import common
import lmm_presets
import presets
import torch
from PIL import Image

WORDS = ["the", "a", "red", "blue", "green", "yellow", "purple", "orange", "cyan", "circle", "square", "triangle",
         "star", "car", "ball", "box", "cone", "cylinder", "large", "small", "left", "right", "above", "below",
         "next", "to", "is", "there", "in", "image", "on", "of", "and", "it"]


def write_dataset(root: Path, n: int, text_only: float, max_words: int, seed: int) -> Path:
    rng = random.Random(seed)
    image_dir = root / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    for k in range(4):
        Image.new("RGB", (96, 80), (60 * k, 200 - 40 * k, 90)).save(image_dir / f"{k}.png")

    def sentence(lo: int, hi: int) -> str:
        words = round(math.exp(rng.uniform(math.log(lo), math.log(hi))))
        return " ".join(rng.choice(WORDS) for _ in range(words))
    records = []
    for i in range(n):
        has_image = rng.random() >= text_only
        turns = []
        for t in range(rng.randint(1, 4)):
            question = sentence(3, 12) + "?"
            if t == 0 and has_image:
                question = "<image>\n" + question
            turns += [{"from": "human", "value": question}, {"from": "gpt", "value": sentence(2, max_words) + "."}]
        record = {"id": f"s{i}", "conversations": turns}
        if has_image:
            record["image"] = f"images/{i % 4}.png"
        records.append(record)
    path = root / "data.json"
    path.write_text(json.dumps(records))
    return path


def build(workdir: Path, llm: str, device: torch.device, samples: int, text_only: float, max_words: int,
          max_length: int, seed: int):
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from fgclip_lmm.data.llava_json import LlavaJsonConfig, LlavaJsonDataset
    from fgclip_lmm.lmm.dataset import LmmSupervisedDataset

    texts = [" ".join(WORDS)] * 2 + list(lmm_presets.CORPUS)
    export = lmm_presets.build_export("tiny", llm, workdir / "export", device, texts=texts)
    data = write_dataset(workdir / "data", samples, text_only, max_words, seed)
    processor = AutoProcessor.from_pretrained(export)
    model = LlavaForConditionalGeneration.from_pretrained(export, dtype=torch.float32).to(device)
    reader = LlavaJsonDataset(LlavaJsonConfig(data_path=str(data), image_root=str(data.parent),
                                          image_size=presets.vision_config("tiny").image_size))
    dataset = LmmSupervisedDataset(reader, processor, "vicuna_v1", max_length)
    return model, processor, dataset


def orders(dataset, batch: int, world: int, seed: int) -> dict[str, list[list[int]]]:
    """Micro-batches in global order (a step = `world` consecutive ones, rank r taking the r-th)."""
    from fgclip_lmm.lmm.grouping import grouped_batches

    perm = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
    return {"shuffled": [perm[i:i + batch] for i in range(0, len(perm), batch)],
            "grouped": grouped_batches(dataset.modality_lengths, batch, world_size=world, seed=seed)}


def efficiencies(lengths: list[int], batches: list[list[int]], world: int) -> tuple[float, float]:
    """(padding efficiency, synchronous efficiency): real tokens over padded slots, and over `world` x the
    slowest rank's padded slots per step (what a synchronous data-parallel step pays for)."""
    real = sum(lengths[i] for b in batches for i in b)
    slots = [len(b) * max(lengths[i] for i in b) for b in batches]
    steps = [slots[i:i + world] for i in range(0, len(slots), world)]
    return real / sum(slots), real / sum(world * max(s) for s in steps)


def recipe_analysis(lengths: list[int], batch: int = 16, world: int = 8, n: int = 8192, seed: int = 0) -> list[dict]:
    """Token arithmetic at LLaVA's recipe (16 per GPU x 8 GPUs) on `n` lengths resampled from this dataset.

    `sorted over 16 steps` is a reference order, not the project's sampler: megabatches of 16 steps sorted by
    length and cut into consecutive micro-batches, steps shuffled; it shows what sorting beyond one step buys.
    """
    from fgclip_lmm.lmm.grouping import grouped_batches

    rng = random.Random(seed)
    sample = [rng.choice(lengths) for _ in range(n)]
    perm = list(range(n))
    rng.shuffle(perm)
    size = batch * world * 16
    reference = []
    for start in range(0, n, size):
        mega = sorted(perm[start:start + size], key=lambda i: -sample[i])
        reference.append([mega[j:j + batch] for j in range(0, len(mega), batch)])
    steps = [m[k:k + world] for m in reference for k in range(0, len(m), world)]
    rng.shuffle(steps)
    rows = []
    for name, order in (("shuffled", [perm[i:i + batch] for i in range(0, n, batch)]),
                        ("grouped", grouped_batches(sample, batch, world_size=world, seed=seed)),
                        ("sorted over 16 steps (reference)", [b for s in steps for b in s])):
        pad, sync = efficiencies(sample, order, world)
        rows.append({"order": name, "padding_efficiency": pad, "sync_efficiency": sync})
    return rows


def run(llm: str, device: torch.device, samples: int, batch: int, world: int, text_only: float, max_words: int,
        max_length: int, repeats: int, seed: int, workdir: str | None = None) -> dict:
    from fgclip_lmm.lmm.dataset import LmmCollator
    from fgclip_lmm.lmm.forward import lmm_forward
    from fgclip_lmm.lmm.tuning import LmmTuning, apply_tuning

    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        model, processor, dataset = build(Path(tmp), llm, device, samples, text_only, max_words, max_length, seed)
        collate = LmmCollator(pad_token_id=processor.tokenizer.pad_token_id)
        epochs = {name: [{k: v.to(device) for k, v in collate([dataset[i] for i in idx]).items()} for idx in order]
                  for name, order in orders(dataset, batch, world, seed).items()}
        lengths = [len(dataset[i]["input_ids"]) for i in range(len(dataset))]
        skipped = dataset.skipped
    model = apply_tuning(model, LmmTuning(llm="full", tower="frozen", projector="full")).train()
    model.config.text_config.use_cache = False
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5,
                                  fused=device.type == "cuda")

    def step(b):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = lmm_forward(model, **b).loss
        loss.backward()
        optimizer.step()
    for batches in epochs.values():  # warm-up: the shortest and the longest micro-batch of each order
        for b in sorted(batches, key=lambda b: b["input_ids"].shape[1])[:: max(1, len(batches) - 1)]:
            step(b)
    names = list(epochs)
    per_batch = {name: [[] for _ in epochs[name]] for name in names}
    for r in range(repeats):  # epochs interleaved ABBA; every micro-batch timed on its own
        for name in names if r % 2 == 0 else reversed(names):
            for i, b in enumerate(epochs[name]):
                per_batch[name][i].append(common.time_call(lambda b=b: step(b), device))
    rows = []
    for name in names:
        batches, t = epochs[name], [common.median(ts) for ts in per_batch[name]]
        real = sum(int(b["attention_mask"].sum()) for b in batches)
        computed = sum(b["input_ids"].numel() for b in batches)
        steps = [range(i, min(i + world, len(batches))) for i in range(0, len(batches), world)]
        slots = sum(world * max(batches[j]["input_ids"].numel() for j in s) for s in steps)
        sync_time = sum(max(t[j] for j in s) for s in steps)
        rows.append({"order": name, "micro_batches": len(batches), "real_tokens": real, "computed_tokens": computed,
                     "padding_efficiency": real / computed, "sync_efficiency": real / slots,
                     "epoch_s_1proc": sum(t), "tokens_per_s_1proc": real / sum(t),
                     f"tokens_per_s_{world}rank_proj": real / sync_time})
    by = {r["order"]: r for r in rows}
    key = f"tokens_per_s_{world}rank_proj"
    return {"rows": rows, "per_batch_times_s": per_batch,
            "speedup_1proc": common.ratio(by["grouped"]["tokens_per_s_1proc"], by["shuffled"]["tokens_per_s_1proc"]),
            "speedup_projected": common.ratio(by["grouped"][key], by["shuffled"][key]),
            "computed_token_ratio": common.ratio(by["shuffled"]["computed_tokens"], by["grouped"]["computed_tokens"]),
            "length_stats": {"min": min(lengths), "median": sorted(lengths)[len(lengths) // 2], "max": max(lengths)},
            "recipe_analysis": recipe_analysis(lengths), "skipped": skipped}


def main(argv: list[str] | None = None) -> int:
    p = common.base_parser("bench_lmm_train", __doc__, ["tiny"])
    p.add_argument("--llm", choices=list(lmm_presets.LLM_SHAPES), default="small")
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--batch", type=int, default=4, help="micro-batch per rank")
    p.add_argument("--world", type=int, default=4, help="simulated data-parallel ranks (LLaVA: 8 GPUs)")
    p.add_argument("--text-only", type=float, default=0.2, help="share of text-only conversations")
    p.add_argument("--max-words", type=int, default=100, help="longest answer, in words")
    p.add_argument("--max-length", type=int, default=1024, help="model_max_length")
    args = p.parse_args(argv)
    device = common.setup(args)
    args.repeats = args.repeats or 3
    result = run(args.llm, device, args.samples, args.batch, args.world, args.text_only, args.max_words,
                 args.max_length, args.repeats, args.seed)
    ls = result["length_stats"]
    text = "\n".join([
        common.table(result["rows"], title=f"LMM training, tower tiny + LLM {args.llm}, {args.samples} samples, "
                                           f"micro-batch {args.batch} x {args.world} simulated ranks (lengths "
                                           f"{ls['min']}/{ls['median']}/{ls['max']} min/median/max)"),
        (f"length grouping: {result['computed_token_ratio']:.2f}x fewer computed tokens; real tokens/s "
         f"{result['speedup_1proc']:.2f}x in one process, {result['speedup_projected']:.2f}x projected over "
         f"{args.world} synchronous ranks (step = slowest rank's measured micro-batch; no communication)"),
        "",
        common.table(result["recipe_analysis"], title="Token arithmetic at LLaVA's recipe (micro-batch 16 x 8 ranks, "
                                                       "8192 lengths resampled from this dataset)"),
    ])
    common.finish("bench_lmm_train", args, device, result, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
