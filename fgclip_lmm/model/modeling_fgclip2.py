"""`FGCLIP2Model`: transformers' SigLIP 2 (NaFlex) text and vision towers composed into FG-CLIP 2.

What FG-CLIP 2 adds to `Siglip2Model` (nothing of transformers is copied; the towers are `Siglip2TextModel` and
`Siglip2VisionModel`, the extra heads `nn.Linear` and `Siglip2MultiheadAttentionPoolingHead`):
- three text walks over the bidirectional text encoder, pooled at the last position: `short` (64 positions,
  `text_model.head`), `box` (64 positions, `boxtext_head`), `long` (exactly `longtext_len` = 196 tokens, positions
  below `keep_len` from `position_embedding_ori`, the rest from `position_embedding_res`, `longtext_head`);
- dense patch features: `dense_feature_head` (a second MAP head) run as self-attention over all tokens, then
  x + MLP(LN(x)); RoIAlign box features on each image's own (h, w) grid;
- `logit_scale_finegraind`, `logit_scale_hardneg` (0-dim, official spellings) and a training `forward` that returns
  the named FG-CLIP 2 loss terms (`fgclip_lmm.losses_fgclip2`), whose CMR margin is the buffer
  `criterion.hard_loss.cmr_threshold`.
Parameter names equal the official state-dict names, so `qihoo360/fg-clip2-*` weights load strictly.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from transformers import Siglip2TextConfig, Siglip2TextModel, Siglip2VisionModel
from transformers import initialization as init
from transformers.masking_utils import create_bidirectional_mask
from transformers.models.siglip2.modeling_siglip2 import (
    Siglip2MultiheadAttentionPoolingHead,
    Siglip2PreTrainedModel,
    Siglip2TextEmbeddings,
)

from ..losses_fgclip2 import FGCLIP2Loss
from .boxes import boxes_to_rois, packed_rois
from .configuration_fgclip2 import FGCLIP2Config
from .loading_fgclip2 import load_fgclip2_checkpoint
from .naflex import check_spatial_shapes, naflex_roi_features
from .positions import stretch_positions

WALK_TYPES = ("short", "box", "long")


class FGCLIP2TextEmbeddings(Siglip2TextEmbeddings):
    """SigLIP 2 text embeddings plus the two long position tables; the walk is chosen per call."""

    def __init__(self, config: Siglip2TextConfig, longtext_len: int, keep_len: int):
        super().__init__(config)
        self.keep_len, self.longtext_len = keep_len, longtext_len
        self.position_embedding_ori = nn.Embedding(longtext_len, config.hidden_size)
        self.position_embedding_res = nn.Embedding(longtext_len, config.hidden_size)

    def forward(self, input_ids: torch.Tensor, walk_type: str = "short") -> torch.Tensor:
        if walk_type not in WALK_TYPES:
            raise ValueError(f"walk_type={walk_type!r}; known: {', '.join(WALK_TYPES)}")
        if walk_type != "long":
            return super().forward(input_ids=input_ids)
        if input_ids.shape[-1] != self.longtext_len:
            raise ValueError(f"the long walk takes exactly {self.longtext_len} tokens (pooling is at the last "
                             f"position), got {input_ids.shape[-1]}: tokenise with padding='max_length', "
                             f"max_length={self.longtext_len}")
        # Built per call, not a buffer: the nested Siglip2TextModel re-initialises its children after a load with
        # its own `_init_weights`, which knows nothing of a second position-id buffer.
        positions = torch.arange(self.longtext_len, device=input_ids.device)[None]
        long_pos = torch.cat([self.position_embedding_ori(positions[:, :self.keep_len]),
                              self.position_embedding_res(positions[:, self.keep_len:])], dim=1)
        return self.token_embedding(input_ids) + long_pos


class FGCLIP2Model(Siglip2PreTrainedModel):
    config: FGCLIP2Config
    config_class = FGCLIP2Config
    base_model_prefix = "fgclip2"
    main_input_name = "pixel_values"
    input_modalities = ("image", "text")

    def __init__(self, config: FGCLIP2Config):
        super().__init__(config)
        text_cfg, vision_cfg = config.text_config, config.vision_config
        self.text_model = Siglip2TextModel._from_config(text_cfg)
        self.text_model.embeddings = FGCLIP2TextEmbeddings(text_cfg, config.longtext_len, config.keep_len)
        self.vision_model = Siglip2VisionModel._from_config(vision_cfg)
        width, out = text_cfg.hidden_size, text_cfg.projection_size
        self.longtext_head = nn.Linear(width, out)
        self.boxtext_head = nn.Linear(width, out)
        self.dense_feature_head = Siglip2MultiheadAttentionPoolingHead(vision_cfg)
        self.logit_scale = nn.Parameter(torch.zeros(1))
        self.logit_bias = nn.Parameter(torch.zeros(1))
        self.logit_scale_finegraind = nn.Parameter(torch.tensor(config.fine_grained_logit_scale_init))
        self.logit_scale_hardneg = nn.Parameter(torch.tensor(config.fine_grained_logit_scale_init))
        self.criterion = FGCLIP2Loss.from_config(config)
        self.post_init()

    def _init_weights(self, module):
        super()._init_weights(module)
        if module is self:  # children first: the 64-row table and the heads already hold their values
            self.init_fgclip2_from_siglip2()
            init.constant_(self.logit_scale, math.log(10.0))  # SigLIP's initialisation (t' = log 10, b = -10)
            init.constant_(self.logit_bias, -10.0)

    def init_fgclip2_from_siglip2(self) -> None:
        """What the official trainer does to a SigLIP 2 checkpoint (`from_siglip2`): stretch the 64-row table into
        both long tables, copy `text_model.head` into `longtext_head` / `boxtext_head`, `vision_model.head` into
        `dense_feature_head`, start both fine-grained temperatures at `fine_grained_logit_scale_init`."""
        cfg, emb = self.config, self.text_model.embeddings
        table = stretch_positions(emb.position_embedding.weight, cfg.longtext_len, cfg.keep_len, cfg.position_stretch)
        init.copy_(emb.position_embedding_ori.weight, table)
        init.copy_(emb.position_embedding_res.weight, table)
        for head in (self.longtext_head, self.boxtext_head):
            init.copy_(head.weight, self.text_model.head.weight)
            init.copy_(head.bias, self.text_model.head.bias)
        source = dict(self.vision_model.head.named_parameters())
        for name, param in self.dense_feature_head.named_parameters():
            init.copy_(param, source[name])
        for scale in (self.logit_scale_finegraind, self.logit_scale_hardneg):
            init.constant_(scale, cfg.fine_grained_logit_scale_init)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """Load ours, an official `qihoo360/fg-clip2-*` directory or a SigLIP 2 (NaFlex) checkpoint.

        Foreign formats are converted on the fly and their code is never executed; see `loading_fgclip2.py`.
        """
        return load_fgclip2_checkpoint(cls, pretrained_model_name_or_path, *args, **kwargs)

    @classmethod
    def _from_pretrained_native(cls, path, *args, **kwargs):
        return super().from_pretrained(path, *args, **kwargs)

    # ---------------------------------------------------------------- text
    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                    walk_type: str = "short") -> torch.Tensor:
        """Last-position hidden state of the bidirectional text encoder, before any head: (B, D).

        `attention_mask` masks keys only (padded queries, the pooled last one included, still attend to the real
        tokens), as the official model does; training passes none.
        """
        text = self.text_model
        hidden = text.embeddings(input_ids, walk_type=walk_type)
        mask = create_bidirectional_mask(config=text.config, inputs_embeds=hidden, attention_mask=attention_mask)
        hidden = text.encoder(inputs_embeds=hidden, attention_mask=mask).last_hidden_state
        return text.final_layer_norm(hidden)[:, -1]

    def text_head(self, pooled: torch.Tensor, walk_type: str) -> torch.Tensor:
        head = {"short": self.text_model.head, "box": self.boxtext_head, "long": self.longtext_head}[walk_type]
        return head(pooled)

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                          walk_type: str = "short", **_unused) -> torch.Tensor:
        """Unnormalised (B, D) text embeddings of the `short`, `box` or `long` walk (official meaning)."""
        return self.text_head(self.encode_text(input_ids, attention_mask, walk_type), walk_type)

    # ---------------------------------------------------------------- vision
    def _vision(self, pixel_values, pixel_attention_mask, spatial_shapes, **kwargs):
        check_spatial_shapes(spatial_shapes, pixel_values.shape[1])
        return self.vision_model(pixel_values=pixel_values, pixel_attention_mask=pixel_attention_mask,
                                 spatial_shapes=spatial_shapes, **kwargs)

    def dense_features(self, last_hidden_state: torch.Tensor,
                       pixel_attention_mask: torch.Tensor | None) -> torch.Tensor:
        """`dense_feature_head` as self-attention of every token (padded keys masked), then x + MLP(LN(x))."""
        head = self.dense_feature_head
        padding = None if pixel_attention_mask is None else pixel_attention_mask.to(last_hidden_state.device) == 0
        x = head.attention(last_hidden_state, last_hidden_state, last_hidden_state, key_padding_mask=padding,
                           need_weights=False)[0]
        return x + head.mlp(head.layernorm(x))

    def get_image_features(self, pixel_values: torch.Tensor, pixel_attention_mask: torch.Tensor,
                           spatial_shapes: torch.Tensor, **_unused) -> torch.Tensor:
        """Unnormalised (B, D) global embedding: the MAP head at its probe (no projection, as SigLIP 2)."""
        return self._vision(pixel_values, pixel_attention_mask, spatial_shapes).pooler_output

    def get_image_dense_features(self, pixel_values: torch.Tensor, pixel_attention_mask: torch.Tensor,
                                 spatial_shapes: torch.Tensor) -> torch.Tensor:
        """Unnormalised (B, N, D) patch embeddings; image b's first h*w rows are its row-major (h, w) grid."""
        out = self._vision(pixel_values, pixel_attention_mask, spatial_shapes)
        return self.dense_features(out.last_hidden_state, pixel_attention_mask)

    def get_image_box_roi_features(self, pixel_values: torch.Tensor, pixel_attention_mask: torch.Tensor,
                                   spatial_shapes: torch.Tensor, box_info) -> torch.Tensor:
        """(K, D) L2-normalised RoIAlign box embeddings, as the official method returns them.

        `box_info`: a list of per-image (n_i, 4) tensors or a (K, 5) tensor [batch_idx, x1, y1, x2, y2], boxes in
        normalised xyxy [0, 1]. Unlike the official method (patch-grid units), values outside [0, 1] raise.
        """
        dense = self.get_image_dense_features(pixel_values, pixel_attention_mask, spatial_shapes)
        feats = naflex_roi_features(dense, spatial_shapes, boxes_to_rois(box_info))
        return nn.functional.normalize(feats, dim=-1).to(dense.dtype)

    # ---------------------------------------------------------------- training
    def _box_walk_once(self, groups: list[torch.Tensor]) -> list[torch.Tensor]:
        """Pooled (pre-head) features of every distinct short/box-walk text, encoded once, split per input group."""
        width = self.config.short_max_len
        for g in groups:
            if g.shape[1] != width:
                raise ValueError(f"short/box/hard texts must be padded to {width} tokens (text_config."
                                 f"max_position_embeddings, padding='max_length'); got width {g.shape[1]}")
        unique, inverse = torch.unique(torch.cat(groups), dim=0, return_inverse=True)
        pooled = self.encode_text(unique, walk_type="short")[inverse]
        return list(pooled.split([g.shape[0] for g in groups]))

    def forward(self, pixel_values: torch.Tensor, pixel_attention_mask: torch.Tensor, spatial_shapes: torch.Tensor,
                long_input_ids: torch.Tensor, short_input_ids: torch.Tensor, box_counts: torch.Tensor | None = None,
                boxes: torch.Tensor | None = None, box_input_ids: torch.Tensor | None = None,
                hard_box_index: torch.Tensor | None = None, hard_input_ids: torch.Tensor | None = None,
                add_box_loss: bool | None = None, use_hard_neg: bool | None = None,
                hard_counts: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Training forward on a collated NaFlex batch; returns the named loss terms, `loss` and the temperatures.

        Texts carry no attention mask (official training); the CMR margin is updated in training mode only.
        `hard_counts` (per-image hard boxes) is accepted from the collator for logging and not needed here.
        """
        region_on = (boxes is not None) if add_box_loss is None else add_box_loss
        hard_on = (hard_input_ids is not None) if use_hard_neg is None else use_hard_neg
        if (region_on or hard_on) and boxes is None:
            raise ValueError("add_box_loss / use_hard_neg need boxes, box_counts and box_input_ids in the batch")
        vision = self._vision(pixel_values, pixel_attention_mask, spatial_shapes)
        long_text = self.get_text_features(long_input_ids, walk_type="long")
        groups = [short_input_ids] + ([box_input_ids] if region_on else []) + ([hard_input_ids] if hard_on else [])
        pooled = self._box_walk_once(groups)
        extra = {}
        if region_on or hard_on:
            dense = self.dense_features(vision.last_hidden_state, pixel_attention_mask)
            region = naflex_roi_features(dense, spatial_shapes, packed_rois(boxes, box_counts))
            if region_on:
                extra.update(region=region, region_text=self.boxtext_head(pooled[1]),
                             region_scale=self.logit_scale_finegraind)
            if hard_on:
                group = 1 + self.config.hard_negatives_per_box
                hard_text = self.boxtext_head(pooled[-1])
                if hard_text.shape[0] != hard_box_index.shape[0] * group:
                    raise ValueError(f"hard_input_ids has {hard_text.shape[0]} rows; expected {group} per hard box "
                                     f"x {hard_box_index.shape[0]} boxes (config.hard_negatives_per_box)")
                extra.update(hard_region=region[hard_box_index.to(region.device)], hard_scale=self.logit_scale_hardneg,
                             hard_text=hard_text.reshape(-1, group, hard_text.shape[-1]))
        terms = self.criterion(vision.pooler_output, long_text, self.text_model.head(pooled[0]), self.logit_scale,
                               self.logit_bias, update_threshold=self.training, **extra)
        for name, p in (("logit_scale", self.logit_scale), ("logit_scale_region", self.logit_scale_finegraind),
                        ("logit_scale_hard", self.logit_scale_hardneg)):
            terms[f"temperature/{name}"] = p.detach().float().exp().reshape(())
        terms["temperature/logit_bias"] = self.logit_bias.detach().float().reshape(())
        terms["cmr_threshold"] = self.criterion.cmr_threshold.detach().clone()  # the margin the next step uses
        return terms
