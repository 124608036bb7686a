"""POPE-style evaluation questions/s: our lmms-eval plugin `fgclip_llava` against lmms-eval's `llava_hf`.

Both wrappers load the same exported HF LLaVA checkpoint (`lmm_presets.build_export`: FG-CLIP tower type,
mlp2x_gelu projector, random Llama) and answer the same POPE-style questions, through lmms-eval's own model API:
each gets `task_dict` set as lmms-eval's evaluator sets it and one `generate_until` call with the simple-model
request tuples `(context, gen_kwargs, doc_to_visual, doc_id, task, split)` its evaluator builds. Context, visual
and generation settings follow lmms-eval's `pope` task (`pope_doc_to_text` with the standard post prompt,
`pope_doc_to_visual`, greedy, `until=["\\n\\n"]` as lmms-eval adds it). Task loading and scoring are left out: they
are the same code for both wrappers.

Data: `--images` synthetic 640x480 JPEG scenes (COCO-sized) with `--questions` questions each ("Is there a
{colour} {shape} in the image?", half yes, half no), stored as JPEG bytes and decoded at every document access,
as a `datasets` split with an Image feature does.

Variants, timed interleaved, each over every question: `llava_hf` (batch 1, its default: its simple path asserts
batch_size == 1), `fgclip_llava` at batch 1 (feature cache only), at `--batch` without prefix sharing
(`share_prefix=false`: cache + batching) and at `--batch` with it (the default: each image's prompt prefix
prefilled once, its questions continued from copies of that KV cache). The plugin runs with
`normalize_yes_no=false` so answers are compared raw: the plugin's answer must equal `llava_hf`'s after the same
`until` cut and strip (llava_hf ignores `until`). Weights are random, so a question would generate
`max_new_tokens` tokens; `--max-new-tokens` (default 3) stands for a trained model's "Yes"/"No" +
end-of-sequence.

    python benchmarks/bench_pope_eval.py                                        # tiny, CPU, ~1 min
    python benchmarks/bench_pope_eval.py --size mid336 --llm mid --clock thread # mid-size LMM, CPU, ~4 min
    python benchmarks/bench_pope_eval.py --size l14_336 --llm 1b --device cuda --images 32 --batch 32

Needs lmms-eval's `llava_hf`, which imports `decord`: `pip install -e '.[bench]'` (or `make bench`).
"""
from __future__ import annotations

import io
import random
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import common
import lmm_presets
import presets
import torch
from PIL import Image, ImageDraw

try:
    from lmms_eval.models.simple.llava_hf import LlavaHf
except ImportError as error:  # llava_hf imports decord (video decoding) at module level
    raise ImportError(f"lmms-eval's llava_hf does not import ({error}); install the benchmark extra: "
                      "pip install -e '.[bench]' (or run make bench)") from error

TASK, SPLIT = "pope_bench", "test"
POST_PROMPT = "\nAnswer the question using a single word or phrase."
COLOURS = {"red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 180, 60), "yellow": (240, 220, 40),
           "purple": (140, 40, 180), "orange": (250, 140, 20), "cyan": (40, 200, 220)}
SHAPES = ("circle", "square", "triangle")


# ------------------------------------------------------------------------------------------------ data
class DecodingDocs(Sequence):
    """Rows whose `image` is decoded from JPEG bytes at every access (like a `datasets` Image column)."""

    def __init__(self, rows: list[dict]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index):
        row = dict(self.rows[index])
        row["image"] = Image.open(io.BytesIO(row["image"]))
        return row


def _draw(draw: ImageDraw.ImageDraw, shape: str, colour: tuple, box: tuple) -> None:
    x1, y1, x2, y2 = box
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([((x1 + x2) // 2, y1), (x1, y2), (x2, y2)], fill=colour)


def pope_docs(n_images: int, per_image: int, seed: int = 0) -> DecodingDocs:
    rng = random.Random(seed)
    objects = [(c, s) for c in COLOURS for s in SHAPES]
    rows = []
    for i in range(n_images):
        image = Image.new("RGB", (640, 480), tuple(rng.randrange(256) for _ in range(3)))
        draw = ImageDraw.Draw(image)
        present = rng.sample(objects, 3)
        for colour, shape in present:
            x, y = rng.randrange(0, 520), rng.randrange(0, 360)
            _draw(draw, shape, COLOURS[colour], (x, y, x + rng.randrange(40, 120), y + rng.randrange(40, 120)))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        absent = [o for o in objects if o not in present]
        for q in range(per_image):
            yes = q % 2 == 0
            colour, shape = rng.choice(present) if yes else rng.choice(absent)
            rows.append({"question_id": f"{i}-{q}", "image_source": f"synthetic_{i}", "category": "random",
                         "question": f"Is there a {colour} {shape} in the image?", "answer": "yes" if yes else "no",
                         "image": buffer.getvalue()})
    return DecodingDocs(rows)


def pope_doc_to_visual(doc):
    return [doc["image"].convert("RGB")]


def pope_doc_to_text(doc):
    return f"{doc['question'].strip()}{POST_PROMPT}"


def make_requests(docs: DecodingDocs, gen_kwargs: dict) -> list:
    from lmms_eval.api.instance import Instance

    return [Instance("generate_until",
                     (pope_doc_to_text(docs[i]), dict(gen_kwargs), pope_doc_to_visual, i, TASK, SPLIT),
                     idx=0, metadata={"task": TASK, "doc_id": i, "repeats": 1}) for i in range(len(docs))]


# ------------------------------------------------------------------------------------------------ models
def _quiet_progress(*modules) -> None:
    """Both wrappers draw a tqdm bar per call; silence them (display only) so the table stays readable."""
    for module in modules:
        bar = module.tqdm
        module.tqdm = lambda *a, _bar=bar, **k: _bar(*a, **{**k, "disable": True})


def load_models(path: Path, device: torch.device, dtype: str, max_new_tokens: int):
    import lmms_eval.models.simple.llava_hf as hf_module

    import fgclip_lmm.eval.lmm.model as our_module
    from fgclip_lmm.eval.lmm.model import FGClipLlava

    _quiet_progress(hf_module, our_module)

    hf = LlavaHf(pretrained=str(path), device=str(device), device_map=str(device), dtype=dtype, batch_size=1,
                 attn_implementation="sdpa")
    ours = FGClipLlava(pretrained=str(path), device=str(device), dtype=dtype, batch_size=1,
                       max_new_tokens=max_new_tokens, normalize_yes_no="false", attn_implementation="sdpa")
    return hf, ours


def answer_all(model, docs: DecodingDocs, gen_kwargs: dict, batch: int | None = None,
               share_prefix: bool = True) -> list[str]:
    """One lmms-eval `generate_until` call over every document (fresh requests and, for ours, a cold cache)."""
    model.task_dict = {TASK: {SPLIT: docs}}
    if batch is not None:
        model.batch_size_per_gpu = batch
        model.share_prefix = share_prefix
        model.reset_run_state()
    out = model.generate_until(make_requests(docs, gen_kwargs))
    return [getattr(o, "text", o) for o in out]


def cut(text: str, until: list[str]) -> str:
    for stop in until:
        text = text.split(stop, 1)[0]
    return text.strip()


def run(size: str, llm: str, device: torch.device, n_images: int, per_image: int, batch: int, dtype: str,
        max_new_tokens: int, repeats: int, warmup: int, workdir: str | None = None) -> dict:
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    docs = pope_docs(n_images, per_image)
    gen_kwargs = {"max_new_tokens": max_new_tokens, "temperature": 0, "top_p": 1.0, "num_beams": 1,
                  "do_sample": False, "until": ["\n\n"]}
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        export = lmm_presets.build_export(size, llm, Path(tmp) / "export", device, dtype)
        hf, ours = load_models(export, device, dtype, max_new_tokens)
    answers: dict[str, list[str]] = {}
    cache: dict[str, dict] = {}

    def variant(name, model, bs=None, share=True):
        def call():
            answers[name] = answer_all(model, docs, gen_kwargs, bs, share)
            if bs is not None:
                cache[name] = model.feature_cache.stats.as_dict()
        return call
    unshared, shared = f"fgclip_llava bs{batch} no prefix sharing", f"fgclip_llava bs{batch}"
    fns = {"llava_hf bs1": variant("llava_hf bs1", hf), "fgclip_llava bs1": variant("fgclip_llava bs1", ours, 1),
           unshared: variant(unshared, ours, batch, share=False), shared: variant(shared, ours, batch)}
    fns["floor: decode every question's image"] = lambda: [pope_doc_to_visual(docs[i]) for i in range(len(docs))]
    ours.task_dict = {TASK: {SPLIT: docs}}
    fns["fgclip_llava _prepare (decode + key + prompt)"] = lambda: [
        ours._prepare(i, r, generation=True) for i, r in enumerate(make_requests(docs, gen_kwargs))]
    times = common.interleaved(fns, device, warmup=warmup, repeats=repeats)
    floors = {k: common.median(times.pop(k)) for k in list(times) if k not in answers}
    base = [cut(a, gen_kwargs["until"]) for a in answers["llava_hf bs1"]]
    n = len(docs)
    rows, mismatches = [], {}
    for name, ts in times.items():
        t = common.median(ts)
        mine = [cut(a, gen_kwargs["until"]) for a in answers[name]]
        same = sum(a == b for a, b in zip(mine, base, strict=True))
        mismatches[name] = [{"doc_id": i, "answer": a, "llava_hf": b} for i,
                            (a, b) in enumerate(zip(mine, base, strict=True)) if a != b][:5]
        rows.append({"variant": name, "questions": n, "median_s": t, "questions_per_s": n / t,
                     "speedup_vs_llava_hf": common.ratio(common.median(times["llava_hf bs1"]), t),
                     "identical_answers": f"{same}/{n}",
                     "pope_exact_acc": sum(a.lower() == docs.rows[i]["answer"] for i, a in enumerate(mine)) / n,
                     "tower_images": cache.get(name, {}).get("misses", n)})
    return {"rows": rows, "times_s": times, "mismatches": mismatches, "cache_stats": cache,
            "per_question_ms": {k: 1e3 * v / n for k,
                                v in {**floors, **{r["variant"]: r["median_s"] for r in rows}}.items()},
            "speedup": rows[-1]["speedup_vs_llava_hf"],
            "prefix_sharing_speedup": common.ratio(common.median(times[unshared]), common.median(times[shared])),
            "all_identical": all(not m for m in mismatches.values()),
            "sample_answers": base[:5]}


def main(argv: list[str] | None = None) -> int:
    p = common.base_parser("bench_pope_eval", __doc__, presets.SIZES)
    p.add_argument("--llm", choices=list(lmm_presets.LLM_SHAPES), default=None,
                   help="default tiny for --size tiny, else 1b")
    p.add_argument("--images", type=int, default=None, help="distinct images (default 8 CPU, 32 GPU)")
    p.add_argument("--questions", type=int, default=6, help="questions per image (POPE: 6 per split)")
    p.add_argument("--batch", type=int, default=None, help="fgclip_llava batch size (default 16 CPU, 32 GPU)")
    p.add_argument("--max-new-tokens", type=int, default=3)
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default=None, help="default bfloat16 on cuda")
    args = p.parse_args(argv)
    device = common.setup(args)
    gpu = device.type == "cuda"
    args.llm = args.llm or ("tiny" if args.size == "tiny" else "1b")
    args.images = args.images or (32 if gpu else 8)
    args.batch = args.batch or (32 if gpu else 16)
    args.dtype = args.dtype or ("bfloat16" if gpu else "float32")
    args.repeats = args.repeats or 3
    result = run(args.size, args.llm, device, args.images, args.questions, args.batch, args.dtype,
                 args.max_new_tokens, args.repeats, args.warmup)
    verdict = "identical" if result["all_identical"] else "NOT all identical (see mismatches in the JSON)"
    text = "\n".join([
        common.table(result["rows"], title=f"POPE-style eval, tower {args.size} + LLM {args.llm}, {args.dtype}, "
                                           f"{args.images} images x {args.questions} questions"),
        f"fgclip_llava bs{args.batch} vs llava_hf: {result['speedup']:.2f}x questions/s (goal >= 5x); "
        f"answers {verdict}",
        f"prefix sharing: {result['prefix_sharing_speedup']:.2f}x questions/s over the same batch without it",
        "",
        common.table([{"per question": k, "ms": v} for k, v in result["per_question_ms"].items()],
                     title="Where the time goes (median ms per question; the floors are parts of the runs above)"),
    ])
    common.finish("bench_pope_eval", args, device, result, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
