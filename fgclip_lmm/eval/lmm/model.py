"""`FGClipLlava`: the lmms-eval 0.7.3 model (`--model fgclip_llava`) for any stock HF `LlavaForConditionalGeneration`.

Loads the export with `LlavaForConditionalGeneration` + `AutoProcessor` and serves lmms-eval's simple request
API. What it adds over lmms-eval's own `llava`/`llava_hf` wrappers (docs/lmms_eval.md, "What the
plugin adds over llava and llava_hf"):

* batched generation with left padding whose answers equal batch size 1 (requests grouped by `gen_kwargs`);
* `max_new_tokens`, `temperature` (>0 samples) and `until` honoured;
* vision features computed once per distinct image per run (`FeatureCache`, requests ordered by image) and
  spliced into the token embeddings, so POPE's ~18 questions per image cost one tower pass;
* a shared image prefix (`prefix.py`): the prompt up to the end of the image block is prefilled once per image
  in a batch and its questions continue from copies of that KV cache (`generate_until`, `score_yes_no` and
  `loglikelihood`; `share_prefix=false` turns it off; beam search always runs the plain path);
* yes/no answers normalised with LLaVA's rule for yes/no documents (`normalize_yes_no=auto|true|false`;
  `yes_no_rule=strict` keeps answers with neither yes nor no/not as they are instead of LLaVA's "yes");
* `score_yes_no=true`: P(yes)/P(no) from the first generated step's logits, kept per request in
  `self.yes_no_scores` and, with `scores_path=FILE`, appended as JSON lines (one file per rank);
* `loglikelihood` usable directly (returns lmms-eval's convention: the continuation's summed NLL, and whether it
  is the greedy continuation; `loglikelihood_returns=logprob` flips the sign);
* accelerate data parallelism like the built-ins: `self._rank`/`self._world_size` from `Accelerator()`.

Model arguments: pretrained, device, dtype, batch_size, max_new_tokens, normalize_yes_no, yes_no_rule, yes_no_tasks
("+"-separated task-name prefixes that are always yes/no), score_yes_no, scores_path, feature_cache_size,
chat_template (a file or a literal template), attn_implementation, loglikelihood_returns, cache_dir (answered
requests saved there as they finish, so a rerun after a crash resumes: `cache.py`), cache_fresh (recompute),
share_prefix (prefill each image's prompt prefix once; default true), image_control (gray|shuffled: answer with a
substituted image, `controls.py`), image_control_seed.

`batch_size` and `device` can come from `--model_args` or from lmms-eval's `--batch_size` / `--device` flags;
when both are given, `--model_args` wins (lmms-eval always passes its flag, `--batch_size` defaulting to 1, so
an explicit `batch_size=8` in the model arguments would otherwise be overridden or, in lmms-eval's own
`create_from_arg_string`, raise "multiple values for keyword argument"). `batch_size` is a positive integer
(lmms-eval's `auto` is not supported).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from lmms_eval.api.instance import GenerationResult, Instance, TokenCounts
from lmms_eval.api.model import lmms
from tqdm import tqdm
from transformers import AutoProcessor, LlavaForConditionalGeneration

from fgclip_lmm.devices import pick_device, torch_dtype
from fgclip_lmm.errors import checkpoint_errors
from fgclip_lmm.eval.lmm.answers import (
    is_yes_no_doc,
    is_yes_no_task,
    normalize_answer,
    yes_no_token_ids,
)
from fgclip_lmm.eval.lmm.cache import ResponseCacheMixin, cached_requests
from fgclip_lmm.eval.lmm.checkpoint import check_checkpoint
from fgclip_lmm.eval.lmm.controls import image_control_arg, image_controlled
from fgclip_lmm.eval.lmm.features import FeatureCache, image_key
from fgclip_lmm.eval.lmm.prefix import Part, pad_after_prefix, shared_inputs, split_parts, whole_image_batches
from fgclip_lmm.eval.lmm.requests import (
    PreparedRequest,
    RequestGenerationConfig,
    build_prompt,
    expand_image_tokens,
    flatten_visuals,
    rgb_doc,
)
from fgclip_lmm.eval.lmm.scoring import ContinuationScoring
from fgclip_lmm.lmm.templates import get_template
from fgclip_lmm.tower.blocks import llava_image_features, prepare_llava_tower

DEFAULT_YES_NO_TASKS = ("pope", "fgclip_pope", "fgclip_attr", "mme", "hallusion_bench", "fgclip_hallusion")


@dataclass(frozen=True)
class YesNoScore:
    """First-step answer probabilities for one request (P over the whole vocabulary) and its answer."""

    task: str
    split: str
    doc_id: int
    p_yes: float
    p_no: float
    raw: str
    answer: str

    @property
    def yes_prob(self) -> float:
        """P(yes) renormalised over {yes, no}: the calibration score."""
        total = self.p_yes + self.p_no
        return self.p_yes / total if total > 0 else 0.5


def parse_batch_size(value: int | str) -> int:
    """A positive integer from `--model_args batch_size=N` or lmms-eval's `--batch_size N`."""
    try:
        size = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"fgclip_llava: batch_size must be a positive integer, got {value!r} "
                         "(lmms-eval's 'auto' is not supported)") from None
    if size < 1:
        raise ValueError(f"fgclip_llava: batch_size must be >= 1, got {size}")
    return size


class FGClipLlava(ResponseCacheMixin, ContinuationScoring, lmms):
    """lmms-eval simple model for HF LLaVA exports (FG-CLIP or CLIP tower); see the module docstring."""

    is_simple = True

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict[str, Any] | None = None) -> FGClipLlava:
        """lmms-eval's constructor path: `--model_args` first, then the flags it adds that the arguments lack."""
        from lmms_eval.utils import simple_parse_args_string

        args = simple_parse_args_string(arg_string)
        flags = {k: v for k, v in (additional_config or {}).items() if v is not None and k not in args}
        return cls(**args, **flags)

    def __init__(self, pretrained: str, device: str | None = None, dtype: str = "auto", batch_size: int | str = 1,
                 max_new_tokens: int = 128, normalize_yes_no: bool | str = "auto", yes_no_rule: str = "llava",
                 yes_no_tasks: str | None = None, score_yes_no: bool = False, scores_path: str | None = None,
                 feature_cache_size: int = 256,
                 chat_template: str | None = None, attn_implementation: str | None = None,
                 loglikelihood_returns: str = "nll", max_batch_size: int | None = None, cache_dir: str | None = None,
                 cache_fresh: bool = False, share_prefix: bool | str = True, image_control: str | None = None,
                 image_control_seed: int = 0, **kwargs: Any) -> None:
        super().__init__()
        if kwargs:
            raise TypeError(f"fgclip_llava: unknown model_args {sorted(kwargs)}")
        if str(normalize_yes_no).lower() not in {"auto", "true", "false"}:
            raise ValueError(f"normalize_yes_no must be auto, true or false, got {normalize_yes_no!r}")
        if yes_no_rule not in {"llava", "strict"}:
            raise ValueError(f"yes_no_rule must be llava or strict, got {yes_no_rule!r}")
        if loglikelihood_returns not in {"nll", "logprob"}:
            raise ValueError(f"loglikelihood_returns must be nll or logprob, got {loglikelihood_returns!r}")
        batch_size = parse_batch_size(batch_size)
        if str(share_prefix).lower() not in {"true", "false"}:
            raise ValueError(f"share_prefix must be true or false, got {share_prefix!r}")
        check_checkpoint(str(pretrained))
        accelerator = Accelerator()
        self.accelerator = accelerator
        if accelerator.num_processes > 1:
            self._device = accelerator.device
            self._rank, self._world_size = accelerator.process_index, accelerator.num_processes
        else:
            self._device = pick_device(device)
        load_kwargs = {"dtype": torch_dtype(str(dtype), allow_auto=True)}
        if attn_implementation:
            load_kwargs["attn_implementation"] = attn_implementation
        with checkpoint_errors(pretrained):  # one-line errors for truncated / unsafe / offline checkpoints
            self._model = LlavaForConditionalGeneration.from_pretrained(pretrained,
                                                                        **load_kwargs).to(self._device).eval()
            self.processor = AutoProcessor.from_pretrained(pretrained)
        # the tower's blocks after vision_feature_layer are never run (bit-identical features; activations stay
        # transformers' own so answers equal the stock path's exactly; the stock forward keeps working)
        prepare_llava_tower(self._model, fuse_activation=False, index_in_config=True)
        self.tokenizer = self.processor.tokenizer
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.image_token = getattr(self.processor, "image_token", None) or "<image>"
        self.image_token_id = int(self._model.config.image_token_id)
        template = chat_template or self.tokenizer.chat_template or getattr(self.processor, "chat_template", None)
        if template and os.path.isfile(template):
            template = Path(template).read_text()
        self.chat_template = template or get_template("vicuna_v1").chat_template()
        self.pretrained = str(pretrained)
        self.batch_size_per_gpu = batch_size
        self.max_new_tokens = int(max_new_tokens)
        self.normalize_yes_no = str(normalize_yes_no).lower()
        self.strict_yes_no = yes_no_rule == "strict"
        self.yes_no_tasks = tuple(yes_no_tasks.split("+")) if yes_no_tasks else DEFAULT_YES_NO_TASKS
        self.score_yes_no = bool(score_yes_no)
        self.yes_ids, self.no_ids = yes_no_token_ids(self.tokenizer) if self.score_yes_no else ([], [])
        self.scores_path = self._rank_path(scores_path) if scores_path else None
        self.loglikelihood_returns = loglikelihood_returns
        self.share_prefix = str(share_prefix).lower() == "true"
        self.feature_cache = FeatureCache(max_items=int(feature_cache_size))
        # Stop on the export's own stop token (assemble writes the template's, e.g. <|im_end|>) and the tokenizer's eos.
        configured = self._model.generation_config.eos_token_id
        configured = configured if isinstance(configured, list) else [configured]
        self.eos_token_ids = sorted({int(t) for t in [*configured, self.tokenizer.eos_token_id] if t is not None})
        self.yes_no_scores: dict[tuple[str, str, int], YesNoScore] = {}
        self.response_cache = self.open_response_cache(cache_dir, fresh=str(cache_fresh).lower() == "true")
        self.image_control = image_control_arg(image_control, int(image_control_seed))  # blind controls

    # -- lmms-eval plumbing --------------------------------------------------------------------------------------
    @property
    def model(self) -> LlavaForConditionalGeneration:
        return self._model

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    def _rank_path(self, path: str) -> Path:
        out = Path(path)
        if self._world_size > 1:
            out = out.with_name(f"{out.stem}.rank{self._rank}{out.suffix}")
        out.parent.mkdir(parents=True, exist_ok=True)
        return out

    def clean(self) -> None:
        """End of a run: free cached features (stats kept); unlike the base class, keep the model for reuse."""
        self.feature_cache.clear(reset_stats=False)

    def reset_run_state(self) -> None:
        """Forget cached features, cache counters and stored yes/no scores (before a fresh run)."""
        self.feature_cache.clear()
        self.yes_no_scores.clear()

    # -- preparation ----------------------------------------------------------------------------------------------
    def _doc(self, task: str, split: str, doc_id: int) -> dict[str, Any]:
        return rgb_doc(self.task_dict[task][split][doc_id])  # images decoded as in training (EXIF, alpha)

    def _prepare(self, index: int, request: Instance, generation: bool) -> PreparedRequest:
        if generation:
            context, gen_kwargs, doc_to_visual, doc_id, task, split = request.args
            continuation = ""
        else:
            context, continuation, doc_to_visual, doc_id, task, split = request.args
            gen_kwargs = None
        doc = self._doc(task, split, doc_id)
        where = f"{task}/{split}/{doc_id}"
        images = flatten_visuals(doc_to_visual(doc), where) if doc_to_visual is not None else []
        if not isinstance(continuation, str):
            continuation = continuation(doc)

        def load_images() -> list:
            return flatten_visuals(doc_to_visual(self._doc(task, split, doc_id)), where)

        mode = self.normalize_yes_no
        yes_no = mode == "true" or (mode == "auto" and (is_yes_no_doc(doc) or is_yes_no_task(task, self.yes_no_tasks)))
        return PreparedRequest(
            index=index, task=task, split=split, doc_id=int(doc_id),
            prompt=build_prompt(context, len(images), self.tokenizer, self.image_token, self.chat_template),
            image_keys=[image_key(image) for image in images], load_images=load_images,
            settings=RequestGenerationConfig.from_gen_kwargs(gen_kwargs, self.max_new_tokens),
            yes_no=yes_no, continuation=continuation,
        )

    @torch.no_grad()
    def _features(self, batch: list[PreparedRequest]) -> dict[str, torch.Tensor]:
        """Projected features for every image of `batch`: cached ones reused, the rest computed once."""
        found: dict[str, torch.Tensor] = {}
        missing: dict[str, tuple[PreparedRequest, int]] = {}
        for req in batch:
            for position, key in enumerate(req.image_keys):
                if key in found or key in missing:
                    self.feature_cache.stats.hits += 1
                    continue
                cached = self.feature_cache.get(key)
                if cached is not None:
                    found[key] = cached
                else:
                    missing[key] = (req, position)
        if missing:
            loaded: dict[int, list] = {}
            images = []
            for req, position in missing.values():
                if req.index not in loaded:
                    loaded[req.index] = req.load_images()
                images.append(loaded[req.index][position])
            pixels = self.processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
            out = llava_image_features(self._model, pixels.to(self._device, self._model.dtype))
            features = out.pooler_output if hasattr(out, "pooler_output") else out
            for key, feature in zip(missing, features, strict=True):
                self.feature_cache.put(key, feature)
                found[key] = feature
        return found

    def _tokenize(self, batch: list[PreparedRequest], texts: list[str],
                  features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded token ids and attention mask, each image placeholder expanded to its feature rows."""
        expanded = [
            expand_image_tokens(text, self.image_token, [features[k].shape[0] for k in req.image_keys])
            for req, text in zip(batch, texts, strict=True)
        ]
        enc = self.tokenizer(expanded, padding=True, return_tensors="pt")
        return enc["input_ids"].to(self._device), enc["attention_mask"].to(self._device)

    def _token_rows(self, batch: list[PreparedRequest], texts: list[str],
                    features: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """Unpadded token ids per request (the rows `_tokenize` pads), image placeholders expanded."""
        expanded = [
            expand_image_tokens(text, self.image_token, [features[k].shape[0] for k in req.image_keys])
            for req, text in zip(batch, texts, strict=True)
        ]
        return [torch.tensor(row, dtype=torch.long) for row in self.tokenizer(expanded)["input_ids"]]

    def _generation_inputs(self, batch: list[PreparedRequest], features: dict[str, torch.Tensor],
                           settings: RequestGenerationConfig):
        """Yield (requests, `generate` inputs) for the parts of a batch: shared-prefix parts carry a KV cache."""
        parts = [Part(list(range(len(batch))))]
        if self.share_prefix and settings.num_beams == 1:
            ids = self._token_rows(batch, [r.prompt for r in batch], features)
            parts = split_parts(ids, [tuple(r.image_keys) for r in batch], self.image_token_id)
        for part in parts:
            reqs = [batch[row] for row in part.rows]
            if not part.prefix_len:
                input_ids, mask = self._tokenize(reqs, [r.prompt for r in reqs], features)
                yield reqs, {"inputs_embeds": self._embed(reqs, input_ids, features), "attention_mask": mask}
                continue
            rows = [ids[row] for row in part.rows]
            padded, mask = pad_after_prefix(rows, part.prefix_len, self.tokenizer.pad_token_id, right=False)
            embeds = self._embed(reqs, padded.to(self._device), features)
            cache = shared_inputs(self._model, embeds, rows, [tuple(r.image_keys) for r in reqs], part.prefix_len)
            yield reqs, {"inputs_embeds": embeds, "attention_mask": mask.to(self._device), **cache}

    def _embed(self, batch: list[PreparedRequest], input_ids: torch.Tensor,
               features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Input embeddings with the image features spliced in at the image-token positions."""
        embeds = self._model.get_input_embeddings()(input_ids)
        ordered = [features[k] for req in batch for k in req.image_keys]
        if ordered:
            image_mask = (input_ids == self.image_token_id).unsqueeze(-1).expand_as(embeds)
            embeds = embeds.masked_scatter(image_mask, torch.cat(ordered).to(embeds.dtype))
        return embeds

    @staticmethod
    def _batches(prepared: list[PreparedRequest], size: int, whole_images: bool = False) -> list[list[PreparedRequest]]:
        """Group by generation settings, order by image then prompt length, cut into batches of at most `size`
        (with `whole_images`, an image's requests are not split between batches unless they exceed `size`)."""
        groups: dict[str, list[PreparedRequest]] = {}
        for req in prepared:
            groups.setdefault(req.settings.group_key(), []).append(req)
        batches = []
        for group in groups.values():
            group.sort(key=lambda r: (r.image_keys[:1], -len(r.prompt), r.index))
            if whole_images:
                batches += whole_image_batches(group, [tuple(r.image_keys) for r in group], size)
            else:
                batches += [group[i : i + size] for i in range(0, len(group), size)]
        return batches

    # -- lmms-eval API --------------------------------------------------------------------------------------------
    @image_controlled
    @cached_requests("generate_until")
    @torch.no_grad()
    def generate_until(self, requests: list[Instance]) -> list[GenerationResult]:
        prepared = [self._prepare(i, req, generation=True) for i, req in enumerate(requests)]
        results: list[GenerationResult | None] = [None] * len(requests)
        new_scores: list[YesNoScore] = []
        pbar = tqdm(total=len(requests), disable=self._rank != 0, desc="fgclip_llava generate")
        for batch in self._batches(prepared, self.batch_size_per_gpu, whole_images=self.share_prefix):
            settings = batch[0].settings
            features = self._features(batch)
            for part, inputs in self._generation_inputs(batch, features, settings):
                out = self._model.generate(
                    **inputs, pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.eos_token_ids,
                    return_dict_in_generate=True, output_logits=self.score_yes_no, **settings.generate_kwargs(),
                )
                sequences = out.sequences  # only the new tokens: generation started from embeddings
                texts = self.tokenizer.batch_decode(sequences, skip_special_tokens=True)
                probs = self._first_step_probs(out.logits[0], settings.num_beams) if self.score_yes_no else None
                mask = inputs["attention_mask"]
                for row, req in enumerate(part):
                    raw = settings.truncate(texts[row]).strip()
                    answer = normalize_answer(raw, strict=self.strict_yes_no) if req.yes_no else raw
                    n_out = int((sequences[row] != self.tokenizer.pad_token_id).sum())
                    results[req.index] = GenerationResult(
                        answer, TokenCounts(input_tokens=int(mask[row].sum()), output_tokens=n_out)
                    )
                    if probs is not None:
                        score = YesNoScore(req.task, req.split, req.doc_id, probs[row][0], probs[row][1], raw, answer)
                        self.yes_no_scores[(req.task, req.split, req.doc_id)] = score
                        new_scores.append(score)
            pbar.update(len(batch))
        pbar.close()
        self._write_scores(new_scores)
        return results  # type: ignore[return-value]

    def _first_step_probs(self, logits: torch.Tensor, num_beams: int) -> list[tuple[float, float]]:
        logp = torch.log_softmax(logits[::num_beams].float(), dim=-1)
        p_yes = torch.logsumexp(logp[:, self.yes_ids], dim=-1).exp()
        p_no = torch.logsumexp(logp[:, self.no_ids], dim=-1).exp()
        return list(zip(p_yes.tolist(), p_no.tolist(), strict=True))

    def _write_scores(self, scores: list[YesNoScore]) -> None:
        if not self.scores_path or not scores:
            return
        with self.scores_path.open("a") as f:
            for score in scores:
                f.write(json.dumps({**asdict(score), "yes_prob": score.yes_prob}) + "\n")

    @image_controlled
    @cached_requests("loglikelihood")
    @torch.no_grad()
    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        """Per request: (summed NLL of the continuation after the chat prompt, is it the greedy continuation)."""
        prepared = [self._prepare(index, request, generation=False) for index, request in enumerate(requests)]
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        pbar = tqdm(total=len(requests), disable=self._rank != 0, desc="fgclip_llava loglikelihood")
        for batch in self._batches(prepared, self.batch_size_per_gpu, whole_images=self.share_prefix):
            features = self._features(batch)
            scored = [self._scoring_ids(req, features) for req in batch]
            ids = [full for full, _ in scored]
            parts = [Part(list(range(len(batch))))]
            if self.share_prefix:  # the prefix stops before the last context token (its logits score the first target)
                keep = [full.numel() - n_context + 1 for full, n_context in scored]
                parts = split_parts(ids, [tuple(r.image_keys) for r in batch], self.image_token_id, keep)
            for part in parts:
                if part.prefix_len:
                    rows = self._score_shared([batch[r] for r in part.rows], [scored[r] for r in part.rows],
                                              part.prefix_len, features)
                else:
                    rows = [self._score_one(batch[r], *scored[r], features) for r in part.rows]
                for row, (nll, greedy) in zip(part.rows, rows, strict=True):
                    results[batch[row].index] = (nll if self.loglikelihood_returns == "nll" else -nll, greedy)
            pbar.update(len(batch))
        pbar.close()
        return results  # type: ignore[return-value]

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        """lmms-eval declares this abstract; no task this plugin targets is multi-round, so such a task fails
        loudly instead of being answered turn-by-turn without its history."""
        tasks = sorted({req.task_name for req in requests})
        raise NotImplementedError(f"fgclip_llava answers single-turn generate_until tasks only; multi-round "
                                  f"task(s) {tasks} need a chat model (e.g. lmms-eval's llava_hf)")
