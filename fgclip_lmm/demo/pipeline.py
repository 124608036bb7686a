"""The demo pipeline: synthetic world -> CLIP baseline vs FG-CLIP (DeepSpeed) -> encoder benchmarks -> two LMMs
(same tiny LLM, data, steps and seed; one per tower) -> align + finetune -> lmms-eval tasks with blind controls
-> paired FG-CLIP vs CLIP comparison -> report. The two LMMs train and evaluate in parallel lanes (one per
tower, the cores shared between them; `stages.StageRunner.run_stages`).
`--encoder fgclip2` runs the same comparison with tiny SigLIP 2 NaFlex / FG-CLIP 2 encoders (`fgclip2` towers).

Fairness: both encoders share stage 1 (S1 steps); FG-CLIP then runs stage 2 for S2 steps while the CLIP baseline
continues stage 1 for the same S2 steps on the same FineHARD images and captions, so both see the same samples
and steps and differ only in the regional and hard-negative losses.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..data.synth.generate import FORMAT as WORLD_FORMAT
from ..data.synth.manifest import load_manifest
from .config import DemoConfig
from .stages import Stage, StageRunner, verify_hf_dir, verify_json

ENCODERS = ("clip", "fgclip")
BENCH_ENCODERS = ("stage1", *ENCODERS)  # the shared stage-1 checkpoint is benchmarked too ("before stage 2")
BENCHES = {"fgovd_test": ("fgovd", "test"), "fgovd_heldout": ("fgovd", "heldout"), "boxcls": ("boxcls", "test"),
           "retrieval_long": ("retrieval", "long"), "retrieval_short": ("retrieval", "short")}
LMM_TASKS = "fgclip_pope,fgclip_attr"


class DemoPaths:
    def __init__(self, out: Path):
        self.out = out
        self.world = out / "world"
        self.encoder = {name: out / "encoders" / name for name in BENCH_ENCODERS}
        self.bench = {name: out / "bench" / name for name in BENCH_ENCODERS}
        self.llm = out / "lmm" / "llm"
        self.assembled = {name: out / "lmm" / f"{name}_assembled" for name in ENCODERS}
        self.align = {name: out / "lmm" / f"{name}_align" for name in ENCODERS}
        self.finetune = {name: out / "lmm" / f"{name}_finetune" for name in ENCODERS}
        self.lmm_eval = {name: out / "lmm_eval" / name for name in ENCODERS}
        self.lmm_compare = out / "lmm_eval" / "compare"  # eval-lmm --compare fgclip clip


def write_demo_llm(out: Path, tokenizer_dir: Path, hidden: int, layers: int, seed: int,
                   init_std: float | None = None) -> Path:
    """A tiny random Llama over the world's LLM tokenizer (the same one for both LMMs); `init_std` overrides
    Llama's initializer_range (0.02)."""
    from ..testing import write_tiny_llm

    return write_tiny_llm(out, "llama", hidden=hidden, layers=layers, heads=max(1, hidden // 16),
                          kv_heads=max(1, hidden // 32), intermediate=4 * hidden, tokenizer=tokenizer_dir,
                          max_positions=1024, seed=seed, init_std=init_std)


def llm_args(cfg: DemoConfig, paths: DemoPaths, world) -> list[str]:
    """`tiny-llm`: the random Llama both LMMs share, text-pretrained on the world's text-only conversations."""
    args = ["tiny-llm", "--tokenizer", str(world.path("tokenizers", "llm")), "--out", str(paths.llm), "--hidden",
            str(cfg.llm_hidden), "--layers", str(cfg.llm_layers), "--seed", str(cfg.seed), "--init-std",
            str(cfg.llm_init_std)]
    if cfg.llm_text_steps:
        args += ["--pretrain-text", str(world.path("llava", "text")), "--pretrain-steps", str(cfg.llm_text_steps),
                 "--pretrain-lr", str(cfg.llm_text_lr), "--pretrain-batch", str(cfg.llm_text_batch),
                 "--pretrain-template", cfg.template]
    return args


def clip_args(cfg: DemoConfig, world, stage: str, init: str, out: Path, steps: int, data_format: str) -> list[str]:
    return ["train-clip", "--config", f"tiny_{stage}", "--init_from", init, "--output_dir", str(out),
            "--tokenizer", str(world.path("tokenizers", "clip")),
            "--data_path", str(world.path("finehard", "train") if data_format == "finehard"
                               else world.path("stage1", "train")),
            "--data_format", data_format, "--image_root", str(world.image_root), "--image_size", str(cfg.image_size),
            "--eval_data", str(world.path("finehard", "val")), "--eval_image_root", str(world.image_root),
            "--tiny_width", str(cfg.clip_width), "--tiny_layers", str(cfg.clip_layers),
            "--tiny_patch", str(cfg.clip_patch), "--micro_batch_size", str(cfg.clip_batch),
            "--lr", str(cfg.clip_lr), "--max_steps", str(steps), "--save_every", str(steps),
            "--eval_every", str(cfg.eval_every), "--warmup_steps", str(max(1, steps // 10)), "--seed", str(cfg.seed),
            "--num_workers", "1", "--log_every", "2", *family_args(cfg)]


def family_args(cfg: DemoConfig) -> list[str]:
    """train-clip keys of the encoder family (FG-CLIP 2: the NaFlex model and the world's patch budgets)."""
    if cfg.encoder == "fgclip2":
        return ["--model", "fgclip2", "--patch_budgets", ",".join(map(str, cfg.patch_budgets))]
    return []


def build_stages(cfg: DemoConfig, paths: DemoPaths, runner: StageRunner) -> list[Stage]:
    world_keys = ("images", "image_size", "seed")
    # the FG-CLIP 2 keys enter only its fingerprints, so existing v1 demo runs stay valid
    family_keys = ("encoder", "patch_budgets") if cfg.encoder == "fgclip2" else ()
    clip_keys = world_keys + family_keys + ("clip_width", "clip_layers", "clip_patch", "clip_batch", "clip_lr",
                                            "stage1_steps", "eval_every")
    stages = [Stage("world", lambda: runner.cli("world", [
        "synth", "--out", str(paths.world), "--images", str(cfg.images), "--seed", str(cfg.seed), "--size",
        str(cfg.image_size), "--overwrite"]), [(paths.world / "manifest.json", verify_json)],
        {**cfg.fingerprint(*world_keys), "format": WORLD_FORMAT})]  # a new world format rebuilds the world

    def world():
        return load_manifest(paths.world)

    stages.append(Stage("encoder_stage1", lambda: runner.cli("encoder_stage1", clip_args(
        cfg, world(), "stage1", "tiny", paths.encoder["stage1"], cfg.stage1_steps, "pairs")),
        [(paths.encoder["stage1"] / "hf", verify_hf_dir)], cfg.fingerprint(*clip_keys)))
    for name, stage in (("clip", "stage1"), ("fgclip", "stage2")):
        # the baseline continues stage 1 on FineHARD data so both see the same images and captions
        stages.append(Stage(f"encoder_{name}", lambda name=name, stage=stage: runner.cli(f"encoder_{name}", clip_args(
            cfg, world(), stage, str(paths.encoder["stage1"] / "hf"), paths.encoder[name], cfg.stage2_steps,
            "finehard")),
            [(paths.encoder[name] / "hf", verify_hf_dir)], cfg.fingerprint(*clip_keys, "stage2_steps")))
    for name in BENCH_ENCODERS:
        outputs = [(paths.bench[name] / key / f"{bench}.json", verify_json) for key, (bench, _) in BENCHES.items()]
        stages.append(Stage(f"bench_{name}", lambda name=name: run_benches(paths, name, cfg), outputs,
                            cfg.fingerprint(*clip_keys, "stage2_steps")))

    llm_keys = ("llm_hidden", "llm_layers", "llm_init_std", "llm_text_steps", "llm_text_lr", "llm_text_batch",
                "template")
    lmm_keys = clip_keys + ("stage2_steps", *llm_keys, "lmm_batch", "align_steps", "finetune_steps", "align_lr",
                            "finetune_lr", "model_max_length", "projector_init")
    stages.append(Stage("llm", lambda: runner.cli("llm", llm_args(cfg, paths, world())),
                        [(paths.llm, verify_hf_dir)], cfg.fingerprint(*world_keys, *llm_keys)))
    for name in ENCODERS:
        stages += lmm_stages(cfg, paths, runner, name, world, cfg.fingerprint(*lmm_keys))
    stages.append(Stage("lmm_compare", lambda: runner.cli("lmm_compare", [
        "eval-lmm", "--compare", str(paths.lmm_eval["fgclip"]), str(paths.lmm_eval["clip"]), "--out",
        str(paths.lmm_compare), "--seed", str(cfg.seed)]), [(paths.lmm_compare / "compare.json", verify_json)],
        {**cfg.fingerprint(*lmm_keys), "pope_limit": cfg.pope_limit, "attr_limit": cfg.attr_limit}))
    return stages


def lmm_stages(cfg: DemoConfig, paths: DemoPaths, runner: StageRunner, name: str, world, fingerprint) -> list[Stage]:
    common = ["--image_root", "{root}", "--micro_batch_size", str(cfg.lmm_batch), "--num_workers", "1",
              "--model_max_length", str(cfg.model_max_length), "--zero_stage", "2", "--precision", "fp32",
              "--gradient_checkpointing", "false", "--log_every", "2", "--seed", str(cfg.seed), "--deepspeed_config",
              "none", "--warmup_ratio", "0.05"]

    def train(stage: str, model: Path, data_key: str, steps: int, lr: float, out: Path) -> None:
        w = world()
        args = ["train-lmm", "--stage", stage, "--model", str(model), "--data_path",
                str(w.path("llava", data_key)), "--max_steps", str(steps), "--save_every", str(steps),
                "--lr", str(lr), "--output_dir", str(out)]
        if stage == "align":
            args += ["--projector_init", cfg.projector_init]
        runner.cli(f"lmm_{name}_{stage}", args + [a.replace("{root}", str(w.image_root)) for a in common])

    def evaluate() -> None:
        runner.cli(f"lmm_eval_{name}", [
            "eval-lmm", "--model", str(paths.finetune[name] / "hf"), "--tasks", LMM_TASKS, "--out",
            str(paths.lmm_eval[name]), "--world", str(paths.world), "--batch-size", str(cfg.eval_batch),
            "--device", "cpu", "--dtype", "float32", "--limit", str(max(cfg.pope_limit, cfg.attr_limit)),
            "--controls", "gray,shuffled"])

    return [
        Stage(f"lmm_{name}_assemble", lambda: runner.cli(f"lmm_{name}_assemble", [
            "assemble", "--tower", f"{cfg.encoder}:{paths.encoder[name] / 'hf'}", "--llm", str(paths.llm),
            "--projector", "mlp2x_gelu", "--template", cfg.template, "--out", str(paths.assembled[name]),
            *(["--image-size", str(cfg.image_size)] if cfg.encoder == "fgclip2" else [])]),
              [(paths.assembled[name], verify_hf_dir)], fingerprint, lane=name),
        Stage(f"lmm_{name}_align", lambda: train("align", paths.assembled[name], "align", cfg.align_steps,
                                                 cfg.align_lr, paths.align[name]),
              [(paths.align[name] / "hf", verify_hf_dir)], fingerprint, lane=name),
        Stage(f"lmm_{name}_finetune", lambda: train("finetune", paths.align[name] / "hf", "instruct",
                                                    cfg.finetune_steps, cfg.finetune_lr, paths.finetune[name]),
              [(paths.finetune[name] / "hf", verify_hf_dir)], fingerprint, lane=name),
        Stage(f"lmm_{name}_eval", evaluate, [(paths.lmm_eval[name] / "eval_lmm.json", verify_json)],
              {**fingerprint, "pope_limit": cfg.pope_limit, "attr_limit": cfg.attr_limit}, lane=name),
    ]


def run_benches(paths: DemoPaths, name: str, cfg: DemoConfig) -> None:
    """All encoder benchmarks of one encoder in this process (no DeepSpeed involved, so no subprocess needed)."""
    from ..eval.clip.cli import main as eval_clip

    naflex = ["--patch-budgets", *map(str, cfg.patch_budgets)] if cfg.encoder == "fgclip2" else []
    for key, (bench, subset) in BENCHES.items():
        code = eval_clip(["--model", str(paths.encoder[name] / "hf"), "--bench", bench, "--data", str(paths.world),
                          "--synth-set", subset, "--out", str(paths.bench[name] / key), "--templates", "single",
                          "--no-progress", *naflex])
        if code != 0:
            raise RuntimeError(f"eval-clip {bench} ({subset}) failed for {name} with exit code {code}")


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())
