"""The FG-CLIP model core (v1 and FG-CLIP 2): configs, models, conversion and loading. Importing registers the
Auto classes."""
from transformers import AutoConfig, AutoModel

from .configuration_fgclip import FGCLIPConfig
from .configuration_fgclip2 import FGCLIP2Config
from .convert import convert_checkpoint, convert_fgclip2_checkpoint
from .loading import load_clip_vision_model
from .modeling_fgclip import FGCLIPModel
from .modeling_fgclip2 import FGCLIP2Model
from .positions import stretch_positions

AutoConfig.register("fgclip", FGCLIPConfig, exist_ok=True)
AutoModel.register(FGCLIPConfig, FGCLIPModel, exist_ok=True)
AutoConfig.register("fgclip2", FGCLIP2Config, exist_ok=True)
AutoModel.register(FGCLIP2Config, FGCLIP2Model, exist_ok=True)

__all__ = ["FGCLIP2Config", "FGCLIP2Model", "FGCLIPConfig", "FGCLIPModel", "convert_checkpoint",
           "convert_fgclip2_checkpoint", "load_clip_vision_model", "stretch_positions"]
