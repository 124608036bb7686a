"""Blind controls for eval-lmm: ask every question again without its image, and measure what the image bought.

`--controls gray,shuffled` (or the plugin's model argument `image_control=gray|shuffled`) re-answers each request
with a substituted image:

* `gray`: a constant mid-gray image of the original's size (no visual information at all);
* `shuffled`: the image of another document of the same task and split, chosen by a fixed-seed derangement of
  the split's documents (a random order, each document takes the next one's image; a donor showing the very same
  picture, e.g. another POPE question about that image, is skipped along the same order), so the image is real
  but unrelated.

The substitution rewrites each lmms-eval `Instance`'s `doc_to_visual` before the plugin's response cache and
generation code see it (`image_controlled`, the outermost decorator of the plugin's request methods), so cache
keys hash the substituted pixels and the generation internals are untouched.

`control_report` puts the runs side by side per task and category: accuracy with the image, with each control,
and the **visual gain** (image minus the best control); a category whose gain is below 5 points is labelled
"answered from text priors".
"""
from __future__ import annotations

import dataclasses
import functools
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

from fgclip_lmm.eval.lmm.paired import Outcomes

# `features` / `requests` (torch, image decoding) are imported where images are handled, so that eval-lmm's
# argument parsing (`parse_controls`) stays free of heavy imports.

GRAY = (128, 128, 128)
TEXT_PRIOR_GAIN = 0.05  # a visual gain below 5 points: the answers come from the text
TEXT_PRIOR_LABEL = "answered from text priors"
CONTROLS = {"gray": "a constant gray image of the same size", "shuffled": "another image of the same task split"}


def _gray_visual(original: Callable, doc: Any) -> list[Image.Image]:
    from fgclip_lmm.eval.lmm.requests import flatten_visuals

    images = flatten_visuals(original(doc), "gray control")
    return [Image.new("RGB", image.size, GRAY) for image in images]


def _donor_visual(original: Callable, docs: Sequence[Any], donor: int, doc: Any) -> Any:
    from fgclip_lmm.eval.lmm.requests import rgb_doc

    return original(rgb_doc(docs[donor]))  # decoded on demand, like the plugin's own documents (no image kept)


class ImageControl:
    """Substitutes the images of lmm-eval requests (`kind` in CONTROLS); `seed` fixes the shuffled derangement."""

    def __init__(self, kind: str, seed: int = 0):
        if kind not in CONTROLS:
            raise ValueError(f"unknown image control {kind!r}; known: {', '.join(sorted(CONTROLS))}")
        self.kind, self.seed = kind, int(seed)
        self._orders: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
        self._keys: dict[tuple[str, str, int], list[str]] = {}  # image hashes per document (donor search)

    def _order(self, task: str, split: str, size: int) -> tuple[np.ndarray, np.ndarray]:
        """The split's fixed random order and each document's position in it (seeded by seed and task name)."""
        if (task, split) not in self._orders:
            rng = np.random.default_rng([self.seed, zlib.crc32(f"{task}/{split}".encode())])
            order = rng.permutation(size)
            position = np.empty(size, dtype=np.int64)
            position[order] = np.arange(size)
            self._orders[(task, split)] = (order, position)
        return self._orders[(task, split)]

    def donor(self, docs: Sequence[Any], original: Callable, task: str, split: str, doc_id: int) -> int:
        """The document whose image replaces `doc_id`'s: the next one in the split's order with other pixels."""
        from fgclip_lmm.eval.lmm.features import image_key
        from fgclip_lmm.eval.lmm.requests import flatten_visuals, rgb_doc

        size = len(docs)
        order, position = self._order(task, split, size)

        def keys(index: int) -> list[str]:
            if (task, split, index) not in self._keys:
                images = flatten_visuals(original(rgb_doc(docs[index])), f"{task}/{split}/{index}")
                self._keys[(task, split, index)] = [image_key(image) for image in images]
            return self._keys[(task, split, index)]

        own = keys(doc_id)
        for step in range(1, size):
            candidate = int(order[(position[doc_id] + step) % size])
            if keys(candidate) != own:
                return candidate
        raise ValueError(f"shuffled control: every document of {task}/{split} shows the same image; "
                         "there is no other image to swap in")

    def apply(self, requests: Sequence[Any], docs_of: Callable[[str, str], Sequence[Any]]) -> list[Any]:
        """Copies of `requests` (lmms-eval Instances) whose `doc_to_visual` gives the control image."""
        out = []
        for request in requests:
            args = request.arguments
            original, doc_id, task, split = args[2], args[3], args[4], args[5]
            if original is None:  # a text-only request: nothing to substitute
                out.append(request)
                continue
            if self.kind == "gray":
                visual = functools.partial(_gray_visual, original)
            else:
                docs = docs_of(task, split)
                donor = self.donor(docs, original, task, split, int(doc_id))
                visual = functools.partial(_donor_visual, original, docs, donor)
            out.append(dataclasses.replace(request, arguments=(*args[:2], visual, *args[3:])))
        return out


def parse_controls(text: str | None) -> list[str]:
    """`"gray,shuffled"` -> ["gray", "shuffled"]; unknown names raise with the known ones."""
    names = [t.strip() for t in (text or "").split(",") if t.strip()]
    unknown = [n for n in names if n not in CONTROLS]
    if unknown:
        raise ValueError(f"unknown control(s) {', '.join(unknown)}; known: {', '.join(sorted(CONTROLS))}")
    return list(dict.fromkeys(names))


def image_control_arg(value: str | None, seed: int = 0) -> ImageControl | None:
    """The plugin's `image_control` model argument: none/empty -> None, else an `ImageControl`."""
    if value is None or str(value).lower() in ("", "none"):
        return None
    return ImageControl(str(value), seed)


def image_controlled(method: Callable) -> Callable:
    """Decorator for the plugin's request methods: apply `self.image_control` (when set) to the requests first."""

    @functools.wraps(method)
    def inner(self: Any, requests: list) -> list:
        control = getattr(self, "image_control", None)
        if control is not None and requests:
            requests = control.apply(requests, lambda task, split: self.task_dict[task][split])
        return method(self, requests)

    return inner


def control_report(image: Outcomes, controls: Mapping[str, Outcomes]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per task and category: n, accuracy with the image and with each control, visual gain, text-prior label."""
    report: dict[str, dict[str, dict[str, Any]]] = {}
    for task in sorted(image):
        for category in sorted(image[task]):
            answered = image[task][category]
            entry: dict[str, Any] = {"n": len(answered), "accuracy_image": sum(answered.values()) / len(answered)}
            for kind, outcomes in controls.items():
                blind = outcomes.get(task, {}).get(category, {})
                shared = [d for d in answered if d in blind]
                if len(shared) != len(answered):
                    raise ValueError(f"control {kind!r} answered {len(shared)} of the {len(answered)} questions "
                                     f"of {task}/{category}")
                entry[f"accuracy_{kind}"] = sum(blind[d] for d in shared) / len(shared)
            if controls:
                best = max(entry[f"accuracy_{kind}"] for kind in controls)
                entry["visual_gain"] = entry["accuracy_image"] - best
                entry["label"] = TEXT_PRIOR_LABEL if entry["visual_gain"] < TEXT_PRIOR_GAIN else "uses the image"
            report.setdefault(task, {})[category] = entry
    return report


def controls_markdown(report: Mapping[str, Mapping[str, Mapping[str, Any]]], kinds: Sequence[str]) -> list[str]:
    """The markdown table of `control_report` (lines)."""
    lines = ["## Blind controls: accuracy with the image vs without it", "",
             f"Visual gain = accuracy with the image minus the best control; below {100 * TEXT_PRIOR_GAIN:.0f} "
             f"points the category is labelled \"{TEXT_PRIOR_LABEL}\". Controls: "
             + "; ".join(f"{k} = {CONTROLS[k]}" for k in kinds) + ".", "",
             "| task | category | n | with image | " + " | ".join(kinds) + " | visual gain (pts) | verdict |",
             "|---|---|---|---|" + "---|" * len(kinds) + "---|---|"]
    for task, cats in report.items():
        for category, e in cats.items():
            blind = " | ".join(f"{e[f'accuracy_{k}']:.4f}" for k in kinds)
            lines.append(f"| {task} | {category} | {e['n']} | {e['accuracy_image']:.4f} | {blind} "
                         f"| {100 * e['visual_gain']:+.1f} | {e['label']} |")
    return lines + [""]
