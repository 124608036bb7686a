"""Prompt templates for zero-shot and box classification.

`openai80` is the 80-prompt ImageNet ensemble published with CLIP (the protocol FG-CLIP's box classification and
IN-1K evals use, docs/model.md, "Box classification"): each class is embedded with every template, each prompt
embedding is L2-normalised, the class mean is taken and normalised again. `openai7` is the 7-prompt subset OpenAI's
notebook recommends as a cheaper near-equivalent; `single` is the bare "a photo of a {}." prompt. A path to a UTF-8
text file with one template per line (each containing `{}` exactly once) is accepted as well.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fgclip_lmm.errors import InputError

OPENAI_IMAGENET_80: tuple[str, ...] = (
    "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.", "a photo of the hard to see {}.",
    "a low resolution photo of the {}.", "a rendering of a {}.", "graffiti of a {}.", "a bad photo of the {}.",
    "a cropped photo of the {}.", "a tattoo of a {}.", "the embroidered {}.", "a photo of a hard to see {}.",
    "a bright photo of a {}.", "a photo of a clean {}.", "a photo of a dirty {}.", "a dark photo of the {}.",
    "a drawing of a {}.", "a photo of my {}.", "the plastic {}.", "a photo of the cool {}.",
    "a close-up photo of a {}.", "a black and white photo of the {}.", "a painting of the {}.",
    "a painting of a {}.", "a pixelated photo of the {}.", "a sculpture of the {}.", "a bright photo of the {}.",
    "a cropped photo of a {}.", "a plastic {}.", "a photo of the dirty {}.", "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.", "a photo of the {}.", "a good photo of the {}.", "a rendering of the {}.",
    "a {} in a video game.", "a photo of one {}.", "a doodle of a {}.", "a close-up photo of the {}.",
    "a photo of a {}.", "the origami {}.", "the {} in a video game.", "a sketch of a {}.", "a doodle of the {}.",
    "a origami {}.", "a low resolution photo of a {}.", "the toy {}.", "a rendition of the {}.",
    "a photo of the clean {}.", "a photo of a large {}.", "a rendition of a {}.", "a photo of a nice {}.",
    "a photo of a weird {}.", "a blurry photo of a {}.", "a cartoon {}.", "art of a {}.", "a sketch of the {}.",
    "a embroidered {}.", "a pixelated photo of a {}.", "itap of the {}.", "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.", "a plushie {}.", "a photo of the nice {}.", "a photo of the small {}.",
    "a photo of the weird {}.", "the cartoon {}.", "art of the {}.", "a drawing of the {}.",
    "a photo of the large {}.", "a black and white photo of a {}.", "the plushie {}.", "a dark photo of a {}.",
    "itap of a {}.", "graffiti of the {}.", "a toy {}.", "itap of my {}.", "a photo of a cool {}.",
    "a photo of a small {}.", "a tattoo of the {}.",
)

OPENAI_IMAGENET_7: tuple[str, ...] = (
    "itap of a {}.", "a bad photo of the {}.", "a origami {}.", "a photo of the large {}.",
    "a {} in a video game.", "art of the {}.", "a photo of the small {}.",
)

SINGLE: tuple[str, ...] = ("a photo of a {}.",)

BUILTIN: dict[str, tuple[str, ...]] = {"openai80": OPENAI_IMAGENET_80, "openai7": OPENAI_IMAGENET_7, "single": SINGLE}


@dataclass(frozen=True)
class TemplateSet:
    """A named list of prompt templates, each with exactly one `{}` slot for the class name."""

    name: str
    templates: tuple[str, ...]

    def prompts(self, classnames: list[str]) -> list[str]:
        """All prompts class-major: prompt (c, t) sits at index c * len(templates) + t."""
        return [template.format(name) for name in classnames for template in self.templates]


def load_templates(spec: str) -> TemplateSet:
    """A built-in name (`openai80`, `openai7`, `single`) or a text file with one template per line."""
    if spec in BUILTIN:
        return TemplateSet(spec, BUILTIN[spec])
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"--templates {spec!r}: neither a built-in set ({', '.join(BUILTIN)}) nor a file")
    templates = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        if line.count("{}") != 1 or line.replace("{}", "").count("{") or line.replace("{}", "").count("}"):
            raise InputError(f"{path} line {line_no}: template {line!r} must contain the class slot '{{}}' "
                             "exactly once "
                             "and no other braces")
        templates.append(line)
    if not templates:
        raise InputError(f"{path}: no templates (one per line, each containing '{{}}')")
    return TemplateSet(path.name, tuple(templates))
