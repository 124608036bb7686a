"""`fgclip-lmm assemble`: tower + projector + LLM -> a stock HF `LlavaForConditionalGeneration` and `LlavaProcessor`.

    fgclip-lmm assemble --tower fgclip:/ckpt/fgclip --llm /ckpt/vicuna-7b --projector mlp2x_gelu --out DIR

What is written to DIR (all loadable with stock transformers, no remote code):
* `config.json` (`model_type="llava"`: the tower's own vision config, the LLM's text config, `image_token_id`,
  `image_seq_length`, `vision_feature_layer`, `vision_feature_select_strategy`, `projector_hidden_act`),
  `generation_config.json` (eos = the template's stop token), `model.safetensors`;
* the processor: `processor_config.json` (patch_size, select strategy, num_additional_image_tokens, image token,
  and, nested under `image_processor`, the `LlavaImageProcessor` settings: `do_pad` for aspect `pad`, size, crop,
  mean/std), `tokenizer.json` + `tokenizer_config.json`, and `chat_template.jinja` (the training template, which
  `AutoTokenizer` and `AutoProcessor` both load as their chat template);
* `fgclip_lmm.json`: how it was assembled (tower type/path/layer/select, projector, template, aspect mode), which
  the trainer reads to use the same template and image preprocessing.

Tokens: `<image>` is added as a special token and a `<pad>` only when the tokenizer has no pad token. When the
vocabulary grows, embeddings are resized to a multiple of `pad_to_multiple_of`; every added row (and every new
padding row) of the input embeddings and of an untied `lm_head` is drawn from N(mu, 1e-5 Σ) of the existing rows.

Aspect modes (LLaVA's names): `pad` = pad to a square with the mean colour, then resize (LLaVA-1.5 finetune);
`square` = resize the shortest edge and centre-crop (LLaVA's default, used for stage 1); `resize` = squash to
the square input size. Templates: `plain`, `vicuna_v1`, `qwen2`; `auto` = `qwen2` for Qwen2 LLMs, else `vicuna_v1`.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AddedToken,
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaImageProcessor,
    LlavaProcessor,
)
from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

from fgclip_lmm.constants import ASPECT_MODES
from fgclip_lmm.devices import DTYPES, torch_dtype
from fgclip_lmm.errors import InputError, checkpoint_errors
from fgclip_lmm.tower import (
    TowerConfig,
    VisionTower,
    build_tower,
    parse_tower_spec,
    run_all_blocks,
    set_no_grad_forward,
)

from .projector import (
    build_projector,
    check_projector_sizes,
    read_projector_state,
    to_hf_projector,
)
from .templates import IMAGE_TOKEN, default_template_for, get_template, stop_string

META_FILE = "fgclip_lmm.json"
NEW_ROW_COV_SCALE = 1e-5


@dataclass
class AssembleConfig:
    tower: str  # TYPE:PATH
    llm: str
    out: str | None = None
    projector: str = "mlp2x_gelu"
    projector_weights: str | None = None
    feature_layer: int = -2
    select: str = "patch"
    image_size: int | None = None  # fgclip2 towers only: the fixed input side they are exported at
    aspect: str = "pad"
    template: str = "auto"
    dtype: str = "auto"
    image_token: str = IMAGE_TOKEN
    pad_token: str = "<pad>"
    pad_to_multiple_of: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        parse_tower_spec(self.tower)
        if self.aspect not in ASPECT_MODES:
            raise InputError(f"AssembleConfig.aspect={self.aspect!r}; known: {', '.join(ASPECT_MODES)}")
        if self.template != "auto":
            get_template(self.template)
        if self.dtype != "auto" and self.dtype not in DTYPES:
            raise InputError(f"AssembleConfig.dtype={self.dtype!r}; known: auto, {', '.join(DTYPES)}")


def lmm_image_processor(tower: VisionTower, aspect: str) -> LlavaImageProcessor:
    """A `LlavaImageProcessor` with the tower's mean/std and input size, implementing the aspect mode."""
    if aspect not in ASPECT_MODES:
        raise InputError(f"aspect={aspect!r}; known: {', '.join(ASPECT_MODES)}")
    base, size = tower.image_processor, tower.image_size
    square = {"height": size, "width": size}
    return LlavaImageProcessor(
        image_mean=list(base.image_mean),
        image_std=list(base.image_std),
        size=square if aspect == "resize" else {"shortest_edge": size},
        crop_size=square,
        do_center_crop=aspect != "resize",
        do_pad=aspect == "pad",
    )


def add_lmm_tokens(tokenizer: Any, image_token: str, pad_token: str) -> list[int]:
    """Add `image_token` (special, unnormalised) and, if there is no pad token, `pad_token`; return the new ids."""
    before = len(tokenizer)
    if image_token not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [AddedToken(image_token, special=True,
                                                                               normalized=False)]})
    if tokenizer.pad_token is None:
        tokenizer.add_special_tokens({"pad_token": AddedToken(pad_token, special=True, normalized=False)})
    return list(range(before, len(tokenizer)))


def sample_new_rows(weight: torch.Tensor, n_old: int, rows: list[int], generator: torch.Generator) -> None:
    """Overwrite `weight[rows]` with draws from N(mu, 1e-5 Σ) of `weight[:n_old]` (Σ the biased covariance).

    Sampled as mu + sqrt(1e-5 / n) · Xcᵀ z with z ~ N(0, I_n), whose covariance is exactly 1e-5 Σ and which needs
    no positive-definite Σ (tiny or low-rank embeddings are fine).
    """
    if not rows:
        return
    with torch.no_grad():
        old = weight[:n_old].to(torch.float32)
        mu = old.mean(dim=0)
        centered = old - mu
        z = torch.randn(len(rows), n_old, generator=generator, dtype=torch.float32)
        draws = mu + math.sqrt(NEW_ROW_COV_SCALE / n_old) * (z @ centered)
        weight[rows] = draws.to(weight.dtype)


def _projector(cfg: AssembleConfig, tower: VisionTower, text_hidden: int) -> torch.nn.Module:
    torch.manual_seed(cfg.seed)
    projector = build_projector(cfg.projector, tower.hidden_size, text_hidden)
    if cfg.projector_weights:
        state = read_projector_state(cfg.projector_weights)
        check_projector_sizes(state, tower.hidden_size, text_hidden, cfg.projector_weights)
        projector.load_state_dict(state, strict=True)
    return projector


def assemble(cfg: AssembleConfig) -> tuple[LlavaForConditionalGeneration, LlavaProcessor, dict]:
    """Build the LLaVA model, its processor and the assembly record in memory (nothing is written)."""
    tower_type, tower_path = parse_tower_spec(cfg.tower)
    with checkpoint_errors(tower_path):
        tower = build_tower(TowerConfig(type=tower_type, path=tower_path, feature_layer=cfg.feature_layer,
                                        select=cfg.select, image_size=cfg.image_size))
    # Load the LLM directly in the output dtype ("auto" = as stored) so a 7B model is never held in float32.
    with checkpoint_errors(cfg.llm):
        llm = AutoModelForCausalLM.from_pretrained(cfg.llm, dtype=torch_dtype(cfg.dtype, allow_auto=True))
        tokenizer = AutoTokenizer.from_pretrained(cfg.llm)
    text_config = llm.config
    template = cfg.template if cfg.template != "auto" else default_template_for(text_config.model_type)
    tpl = get_template(template)
    projector = _projector(cfg, tower, text_config.hidden_size)
    hf_proj = to_hf_projector(projector, tower.hidden_size, text_config.hidden_size)

    n_old = len(tokenizer)
    new_ids = add_lmm_tokens(tokenizer, cfg.image_token, cfg.pad_token)
    config = LlavaConfig(
        vision_config=tower.config.to_dict(),
        text_config=text_config.to_dict(),
        image_token_id=tokenizer.convert_tokens_to_ids(cfg.image_token),
        image_seq_length=tower.num_image_tokens,
        projector_hidden_act=hf_proj.hidden_act,
        vision_feature_select_strategy=tower.hf_select_strategy,
        vision_feature_layer=cfg.feature_layer,
        multimodal_projector_bias=True,
        tie_word_embeddings=bool(getattr(text_config, "tie_word_embeddings", False)),
    )
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    # Real modules replace the meta skeleton: no random init of the big parts, no second copy in memory.
    model.model.vision_tower = tower.vision_tower
    model.model.language_model = getattr(llm, llm.base_model_prefix)
    model.lm_head = llm.get_output_embeddings()
    model.model.multi_modal_projector = LlavaMultiModalProjector(config)
    model.model.multi_modal_projector.load_state_dict(hf_proj.state_dict, strict=True)
    tower.vision_tower.requires_grad_(True)
    set_no_grad_forward(tower.vision_tower, False)  # an assembled checkpoint carries no tuning state
    run_all_blocks(tower.vision_tower)  # stock LLaVA reads hidden_states[vision_feature_layer] of all blocks
    if config.tie_word_embeddings:
        model.tie_weights()

    rows = model.get_input_embeddings().weight.shape[0]
    generator = torch.Generator().manual_seed(cfg.seed)
    if len(tokenizer) > rows:
        model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=cfg.pad_to_multiple_of, mean_resizing=False)
    new_rows = sorted(set(new_ids) | set(range(rows, model.get_input_embeddings().weight.shape[0])))
    sample_new_rows(model.get_input_embeddings().weight, n_old, new_rows, generator)
    if not config.tie_word_embeddings:
        sample_new_rows(model.get_output_embeddings().weight, n_old, new_rows, generator)
    meta_params = [n for n, p in model.named_parameters() if p.is_meta]
    if meta_params:
        raise RuntimeError(f"assembly left parameters uninitialised: {meta_params[:5]}")

    model = model.to(llm.dtype)
    model.config.text_config.use_cache = True

    stop_id = tokenizer.convert_tokens_to_ids(stop_string(tpl, tokenizer.eos_token or ""))
    eos_id = stop_id if stop_id is not None and stop_id != tokenizer.unk_token_id else tokenizer.eos_token_id
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=eos_id, pad_token_id=tokenizer.pad_token_id
    )
    chat_template = tpl.chat_template()
    tokenizer.chat_template = chat_template
    processor = LlavaProcessor(
        image_processor=lmm_image_processor(tower, cfg.aspect),
        tokenizer=tokenizer,
        patch_size=tower.patch_size,
        vision_feature_select_strategy=tower.hf_select_strategy,
        num_additional_image_tokens=tower.num_additional_image_tokens,
        chat_template=chat_template,
        image_token=cfg.image_token,
    )
    meta = {
        "format": 1,
        "tower": {"type": tower_type, "path": tower_path, "feature_layer": cfg.feature_layer, "select": cfg.select,
                  "has_cls": tower.has_cls, "hidden_size": tower.hidden_size, "image_size": tower.image_size},
        "projector": cfg.projector,
        "llm": cfg.llm,
        "template": template,
        "aspect": cfg.aspect,
        "image_token": cfg.image_token,
        "image_seq_length": tower.num_image_tokens,
        "added_token_ids": new_ids,
        "assemble_config": asdict(cfg),
    }
    return model, processor, meta


def write_meta(out: str | Path, meta: dict) -> None:
    Path(out, META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def read_meta(path: str | Path) -> dict:
    """The assembly record of an assembled or exported LMM directory."""
    file = Path(path, META_FILE)
    if not file.is_file():
        raise FileNotFoundError(f"{str(path)!r} has no {META_FILE}: not a directory written by fgclip-lmm "
                                "assemble/export")
    return json.loads(file.read_text())


def save_assembly(model: LlavaForConditionalGeneration, processor: LlavaProcessor, meta: dict, out: str | Path) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    write_meta(out, meta)
    return out
