"""Reading a synthetic world through its `manifest.json` (keys documented in `synth.generate`).

`SynthManifest.path("finehard", "train")` resolves a `files` entry to an absolute path; the `*_config`
helpers build ready reader configs with the world's image root, prefix and size filled in, so trainers,
evals and the demo never hard-code a file name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from fgclip_lmm.data.finehard import FineHardConfig
from fgclip_lmm.data.llava_json import LlavaJsonConfig
from fgclip_lmm.data.pairs import PairsConfig

FORMAT = "fgclip-lmm-synth/2"  # 2: single-turn instruct QA, llava/text.json, balanced count pairs


@dataclass(frozen=True)
class SynthManifest:
    root: Path
    data: dict

    def __getitem__(self, key: str):
        return self.data[key]

    def path(self, *keys: str) -> Path:
        """Absolute path of `files[keys[0]][keys[1]]...`."""
        node = self.data["files"]
        for depth, key in enumerate(keys):
            if not isinstance(node, dict) or key not in node:
                known = sorted(node) if isinstance(node, dict) else node
                raise KeyError(
                    f"manifest files{''.join(f'[{k!r}]' for k in keys[:depth])} has no {key!r}; known: {known}"
                )
            node = node[key]
        if not isinstance(node, str):
            raise KeyError(f"manifest files{''.join(f'[{k!r}]' for k in keys)} is a group, not a path: {sorted(node)}")
        return self.root / node

    @property
    def image_root(self) -> Path:
        return self.root / self.data["settings"]["image_root"]

    @property
    def image_size(self) -> int:
        return int(self.data["image_size"])

    def finehard_config(self, split: str = "train", **overrides) -> FineHardConfig:
        settings = self.data["settings"]
        config = FineHardConfig(
            data_path=str(self.path("finehard", split)),
            image_root=str(self.image_root),
            strip_prefixes=(settings["finehard_strip_prefix"],),
            short_caption_prefix=settings["short_caption_prefix"],
            num_hard_negatives=settings["num_hard_negatives"],
            image_size=self.image_size,
        )
        return replace(config, **overrides)

    def pairs_config(self, split: str = "train", **overrides) -> PairsConfig:
        config = PairsConfig(
            data_path=str(self.path("stage1", split)),
            image_root=str(self.image_root),
            short_caption_prefix=self.data["settings"]["short_caption_prefix"],
            image_size=self.image_size,
        )
        return replace(config, **overrides)

    def llava_config(self, name: str = "instruct", **overrides) -> LlavaJsonConfig:
        config = LlavaJsonConfig(
            data_path=str(self.path("llava", name)), image_root=str(self.image_root), image_size=self.image_size
        )
        return replace(config, **overrides)


def load_manifest(root: str | Path) -> SynthManifest:
    root = Path(root)
    path = root / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; generate a world with `fgclip-lmm synth --out {root}`")
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("format") != FORMAT:
        raise ValueError(f"{path}: format {data.get('format')!r}, expected {FORMAT!r}")
    return SynthManifest(root.resolve(), data)
