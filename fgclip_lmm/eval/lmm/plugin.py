"""lmms-eval entry point: registers `fgclip_llava` through 0.7.3's ModelRegistryV2 manifests.

`pyproject.toml` declares, in `[project.entry-points."lmms_eval.models"]`, `fgclip_llava =
"fgclip_lmm.eval.lmm.plugin:MANIFEST"`, so after `pip install -e .` lmms-eval resolves `--model fgclip_llava` (it is
not listed by `lmms-eval models`, which only prints the built-in tables;
`lmms_eval.models.get_model("fgclip_llava")` resolves it). The class path is imported lazily by lmms-eval, so
loading this manifest costs nothing. `register()` does the same at run time for environments without installed
metadata (docs/lmms_eval.md, "Registration").
"""
from __future__ import annotations

from lmms_eval.models.registry_v2 import ModelManifest

MODEL_ID = "fgclip_llava"
CLASS_PATH = "fgclip_lmm.eval.lmm.model.FGClipLlava"

MANIFEST = ModelManifest(model_id=MODEL_ID, simple_class_path=CLASS_PATH)


def register() -> None:
    """Register the manifest in the running process (idempotent)."""
    from lmms_eval.models import MODEL_REGISTRY_V2

    MODEL_REGISTRY_V2.register_manifest(MANIFEST, overwrite=True)
