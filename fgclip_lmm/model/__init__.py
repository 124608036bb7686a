"""The FG-CLIP model core: config, model, conversion and loading. Importing registers the Auto classes."""
from transformers import AutoConfig, AutoModel

from .configuration_fgclip import FGCLIPConfig
from .convert import convert_checkpoint
from .loading import load_clip_vision_model
from .modeling_fgclip import FGCLIPModel
from .positions import stretch_positions

AutoConfig.register("fgclip", FGCLIPConfig, exist_ok=True)
AutoModel.register(FGCLIPConfig, FGCLIPModel, exist_ok=True)

__all__ = ["FGCLIPConfig", "FGCLIPModel", "convert_checkpoint", "load_clip_vision_model", "stretch_positions"]
