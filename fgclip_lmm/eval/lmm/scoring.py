"""How `FGClipLlava.loglikelihood` scores a continuation: token ids of prompt + continuation, and the summed NLL
with the greedy flag, either per request (the plain path) or for a part of a batch from one prefill per shared
image prefix (`prefix.py`: `[prefix][rest][pad..]`, the rests batched in one forward).

A mixin of the plugin class: it uses the plugin's tokenizer, `_tokenize`, `_embed`, model and device.
"""
from __future__ import annotations

import torch

from fgclip_lmm.eval.lmm.prefix import pad_after_prefix, shared_inputs
from fgclip_lmm.eval.lmm.requests import PreparedRequest


class ContinuationScoring:
    """Scoring helpers of `FGClipLlava` (see the module docstring)."""

    def _scoring_ids(self, req: PreparedRequest, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        """(prompt + continuation token ids (L,), number of prompt tokens)."""
        ids, _ = self._tokenize([req], [req.prompt + req.continuation], features)
        context_ids, _ = self._tokenize([req], [req.prompt], features)
        n_context = context_ids.shape[1]
        if not torch.equal(ids[:, :n_context], context_ids):  # a merge across the boundary: encode apart
            cont = self.tokenizer(req.continuation, add_special_tokens=False, return_tensors="pt")["input_ids"]
            ids = torch.cat([context_ids, cont.to(self._device)], dim=1)
        if n_context >= ids.shape[1]:
            raise ValueError(f"{req.task}/{req.doc_id}: empty continuation {req.continuation!r}")
        return ids[0].cpu(), n_context

    def _continuation_score(self, logits: torch.Tensor, targets: torch.Tensor) -> tuple[float, bool]:
        logits = logits.float()
        nll = -torch.log_softmax(logits, dim=-1).gather(-1, targets[:, None]).sum().item()
        return nll, bool((logits.argmax(-1) == targets).all())

    def _score_one(self, req: PreparedRequest, ids: torch.Tensor, n_context: int,
                   features: dict[str, torch.Tensor]) -> tuple[float, bool]:
        ids = ids[None].to(self._device)
        logits = self._model(inputs_embeds=self._embed([req], ids, features)).logits[0, n_context - 1 : -1]
        return self._continuation_score(logits, ids[0, n_context:])

    def _score_shared(self, reqs: list[PreparedRequest], scored: list[tuple[torch.Tensor, int]], length: int,
                      features: dict[str, torch.Tensor]) -> list[tuple[float, bool]]:
        """Score a part's rows from one prefill per distinct prefix: `[prefix][rest][pad..]`, rest batched."""
        rows = [full for full, _ in scored]
        padded, _ = pad_after_prefix(rows, length, self.tokenizer.pad_token_id, right=True)
        padded = padded.to(self._device)
        embeds = self._embed(reqs, padded, features)
        cache = shared_inputs(self._model, embeds, rows, [tuple(r.image_keys) for r in reqs], length)
        logits = self._model(inputs_embeds=embeds[:, length:], **cache).logits  # positions length.. of each row
        return [self._continuation_score(logits[i, n_context - 1 - length : full.numel() - 1 - length],
                                         padded[i, n_context : full.numel()])
                for i, (full, n_context) in enumerate(scored)]
