"""Resumable evaluation for the `fgclip_llava` plugin: answered requests are cached on disk as they finish.

lmms-eval 0.7.3 has a response cache (`--use_cache`), but it stores a request type's answers only after the
model's `generate_until(all requests)` returns, so a job killed at 50% keeps nothing; it also keeps only the
text, which would lose this plugin's P(yes)/P(no) scores. This layer sits around the plugin's request methods
(`cached_requests`): the requests are answered in chunks (ordered by image, so the feature cache still sees each
image's questions together), and each chunk's answers are appended with flush + fsync to
`DIR/responses-<fingerprint>.rank<r>.jsonl` before the next chunk starts. A rerun finds them and computes only
the rest; a line torn by the kill is ignored.

A request's key is the SHA-256 of its type, task, split, document id, option index, prompt, generation settings
(or continuation) and the content hashes of its images, so a changed task file or image is recomputed. The
fingerprint in the file name covers the checkpoint (config, weight file sizes and times) and every plugin
setting that changes answers; another model or setting starts a new file. Every rank reads all rank files, so a
rerun with another number of processes also resumes. `FGCLIP_FAULT_KILL_AFTER_REQUESTS=N` SIGKILLs the process
once N requests were computed and saved (resume tests).
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import signal
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

FAULT_ENV = "FGCLIP_FAULT_KILL_AFTER_REQUESTS"
CACHE_FORMAT = 1
WEIGHT_PATTERNS = ("*.safetensors", "*.bin")
CONFIG_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                "processor_config.json", "preprocessor_config.json", "chat_template.jinja")


@dataclass
class ResponseCacheStats:
    """`hits`: requests answered from disk; `computed`: requests the model answered in this run."""

    hits: int = 0
    computed: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def checkpoint_fingerprint(pretrained: str, settings: dict[str, Any]) -> str:
    """Hash of the checkpoint directory's configs, its weight files' sizes and times, and `settings`."""
    from fgclip_lmm import __version__

    digest = hashlib.sha256(json.dumps([CACHE_FORMAT, __version__, str(pretrained), settings], sort_keys=True,
                                       default=str).encode())
    path = Path(pretrained).expanduser()
    if path.is_dir():
        for name in CONFIG_FILES:
            if (path / name).is_file():
                digest.update(name.encode() + b"\0" + (path / name).read_bytes())
        for weights in sorted(f for pattern in WEIGHT_PATTERNS for f in path.glob(pattern)):
            stat = weights.stat()
            digest.update(f"{weights.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def request_key(kind: str, request: Any, image_keys: list[str]) -> str:
    """The cache key of one lmms-eval `Instance` (see the module docstring)."""
    context, second, _, doc_id, task, split = request.args
    payload = [kind, task, split, str(doc_id), request.idx, context,
               json.dumps(second, sort_keys=True, default=str) if isinstance(second, dict) else second, image_keys]
    return hashlib.sha256(json.dumps(payload, default=str).encode()).hexdigest()


class ResponseCache:
    """Answered requests of one model + settings, read from every rank's file and appended to this rank's."""

    def __init__(self, directory: str | os.PathLike, fingerprint: str, rank: int = 0, chunk: int = 64,
                 fresh: bool = False):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.prefix = f"responses-{fingerprint[:16]}"
        self.path = self.directory / f"{self.prefix}.rank{rank}.jsonl"
        self.chunk = max(1, int(chunk))
        self.stats = ResponseCacheStats()
        self.entries: dict[str, dict] = {}
        if fresh:  # recompute everything; this rank's earlier answers are dropped
            self.path.unlink(missing_ok=True)
            return
        for part in sorted(self.directory.glob(f"{self.prefix}.rank*.jsonl")):
            self._read(part)

    def _read(self, part: Path) -> None:
        with open(part, "rb") as handle:
            for raw in handle:
                try:
                    entry = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    continue  # a line cut short by a kill: that request is simply not done
                if isinstance(entry, dict) and isinstance(entry.get("key"), str) and "result" in entry:
                    self.entries[entry["key"]] = entry

    def append(self, entries: list[dict]) -> None:
        """Add answered requests durably (flush + fsync) before more work starts."""
        if not entries:
            return
        if self.path.is_file():  # a previous kill may have left a last line without its newline
            data = self.path.read_bytes()
            if data and not data.endswith(b"\n"):
                with open(self.path, "r+b") as handle:
                    handle.truncate(data.rfind(b"\n") + 1)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries))
            handle.flush()
            os.fsync(handle.fileno())
        for entry in entries:
            self.entries[entry["key"]] = entry

    def serve(self, kind: str, requests: list, keys: list[str], order: list[Any],
              compute: Callable[[list], list], encode: Callable[[Any, Any], dict],
              decode: Callable[[Any, dict], Any]) -> list:
        """Answers for `requests`: cached ones decoded, the rest computed chunk by chunk (in `order`) and saved."""
        results: list = [None] * len(requests)
        missing = []
        for i, key in enumerate(keys):
            entry = self.entries.get(key)
            if entry is not None and entry.get("kind") == kind:
                results[i] = decode(requests[i], entry["result"])
                self.stats.hits += 1
            else:
                missing.append(i)
        missing.sort(key=lambda i: (order[i], i))
        kill_after = int(os.environ.get(FAULT_ENV, "0"))
        for start in range(0, len(missing), self.chunk):
            chunk = missing[start:start + self.chunk]
            answers = compute([requests[i] for i in chunk])
            if len(answers) != len(chunk):
                raise RuntimeError(f"{kind} returned {len(answers)} answers for {len(chunk)} requests")
            self.append([{"key": keys[i], "kind": kind, "task": requests[i].args[4], "doc_id": requests[i].args[3],
                          "result": encode(requests[i], answer)} for i, answer in zip(chunk, answers, strict=True)])
            for i, answer in zip(chunk, answers, strict=True):
                results[i] = answer
            self.stats.computed += len(chunk)
            if kill_after and self.stats.computed >= kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
        return results


def cached_requests(kind: str):
    """Decorator for the plugin's `generate_until` / `loglikelihood`: serve through `self.response_cache` when
    it is set (the plugin supplies `_cache_image_keys`, `_cache_encode` and `_cache_decode`)."""

    def wrap(method):
        @functools.wraps(method)
        def inner(self, requests):
            cache = getattr(self, "response_cache", None)
            if cache is None or not requests:
                return method(self, requests)
            images = [self._cache_image_keys(request) for request in requests]
            keys = [request_key(kind, request, image) for request, image in zip(requests, images, strict=True)]
            return cache.serve(kind, list(requests), keys, [image[:1] for image in images],
                               lambda chunk: method(self, chunk),
                               functools.partial(self._cache_encode, kind),
                               functools.partial(self._cache_decode, kind))

        return inner

    return wrap


class ResponseCacheMixin:
    """What `FGClipLlava` needs to serve requests through a `ResponseCache` (kept out of the model module)."""

    response_cache: ResponseCache | None = None

    def open_response_cache(self, cache_dir: str | None, fresh: bool = False) -> ResponseCache | None:
        if not cache_dir:
            return None
        settings = {"dtype": str(self._model.dtype), "max_new_tokens": self.max_new_tokens,
                    "normalize_yes_no": self.normalize_yes_no, "strict_yes_no": self.strict_yes_no,
                    "yes_no_tasks": list(self.yes_no_tasks), "score_yes_no": self.score_yes_no,
                    "chat_template": self.chat_template, "loglikelihood_returns": self.loglikelihood_returns}
        return ResponseCache(cache_dir, checkpoint_fingerprint(self.pretrained, settings), self._rank,
                             chunk=max(4, 4 * self.batch_size_per_gpu), fresh=fresh)

    def _cache_image_keys(self, request: Any) -> list[str]:
        from fgclip_lmm.eval.lmm.features import image_key
        from fgclip_lmm.eval.lmm.requests import flatten_visuals

        _, _, doc_to_visual, doc_id, task, split = request.args
        if doc_to_visual is None:
            return []
        images = flatten_visuals(doc_to_visual(self._doc(task, split, doc_id)), f"{task}/{split}/{doc_id}")
        return [image_key(image) for image in images]

    def _cache_encode(self, kind: str, request: Any, answer: Any) -> Any:
        if kind != "generate_until":
            return list(answer)
        _, _, _, doc_id, task, split = request.args
        score = self.yes_no_scores.get((task, split, int(doc_id)))
        counts = answer.token_counts
        return {"text": answer.text, "input_tokens": counts.input_tokens if counts else None,
                "output_tokens": counts.output_tokens if counts else None,
                "score": asdict(score) if score is not None else None}

    def _cache_decode(self, kind: str, request: Any, result: Any) -> Any:
        if kind != "generate_until":
            return tuple(result)
        from lmms_eval.api.instance import GenerationResult, TokenCounts

        from fgclip_lmm.eval.lmm.model import YesNoScore

        if result.get("score") is not None:
            score = YesNoScore(**result["score"])
            self.yes_no_scores[(score.task, score.split, score.doc_id)] = score
        return GenerationResult(result["text"], TokenCounts(input_tokens=result["input_tokens"],
                                                            output_tokens=result["output_tokens"]))
