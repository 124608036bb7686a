"""`FGCLIPModel`: HF CLIP's text and vision transformers composed into the FG-CLIP v1 model.

What FG-CLIP adds to `CLIPModel` (and nothing else is copied from transformers):
- text positions: the 77-row `position_embedding` serves the short path; `position_embedding_ori` (rows below
  `keep_len`) and `position_embedding_res` (the rest) serve the long path, at any length up to `long_max_len`;
- `text_filip_projection` for long texts, `text_projection` for short / box / hard-negative texts;
- dense patch features (last block re-run on its value path) and RoIAlign box features;
- three temperatures and a training `forward` returning named loss terms.
Parameter names equal the official state-dict names so `qihoo360/fg-clip-*` weights load strictly.
Beyond the official code (speed only, same results): texts are encoded in length buckets (`encode_text`) and
QuickGELU runs as one fused autograd function (`activations.py`).
"""
from __future__ import annotations

import torch
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel, CLIPVisionModel
from transformers import initialization as init
from transformers.masking_utils import create_causal_mask
from transformers.models.clip.modeling_clip import CLIPPreTrainedModel, CLIPTextEmbeddings

from ..losses import FGCLIPLoss
from .activations import fuse_quick_gelu
from .boxes import boxes_to_rois, packed_rois, roi_features
from .configuration_fgclip import FGCLIPConfig
from .loading import load_any_checkpoint
from .positions import stretch_positions


def _merge_widths(widths: list[int], counts: list[int], max_buckets: int, overhead: int = 0) -> list[int]:
    """The widths to encode at (a subset of `widths`, ascending, the widest always kept): each row takes the
    narrowest chosen width >= its own, and the choice minimises padded tokens + `overhead` tokens per bucket with at
    most `max_buckets` buckets (dynamic programming over contiguous runs; n <= 31 here)."""
    n = len(widths)
    if n <= 1 or (overhead == 0 and n <= max_buckets):
        return widths
    prefix = [0]
    for c in counts:
        prefix.append(prefix[-1] + c)
    inf = float("inf")
    limit = min(n, max_buckets)
    # best[k][j]: least token cost of covering widths[:j] with k buckets, the last ending at widths[j - 1]
    best = [[inf] * (n + 1) for _ in range(limit + 1)]
    cut = [[0] * (n + 1) for _ in range(limit + 1)]
    best[0][0] = 0
    for k in range(1, limit + 1):
        for j in range(1, n + 1):
            for i in range(j):
                cost = best[k - 1][i] + widths[j - 1] * (prefix[j] - prefix[i])
                if cost < best[k][j]:
                    best[k][j], cut[k][j] = cost, i
    k = min(range(1, limit + 1), key=lambda m: (best[m][n] + overhead * m, m))
    chosen, j = [], n
    while j > 0:
        chosen.append(widths[j - 1])
        j, k = cut[k][j], k - 1
    return chosen[::-1]


def length_buckets(first_eos: torch.Tensor, width: int, multiple: int, max_buckets: int = 8,
                   overhead: int = 0) -> list[tuple[int, torch.Tensor]]:
    """Rows grouped by true length (first eos + 1) rounded up to `multiple` (at most `width`): [(width, rows)].

    Neighbouring widths are merged where a separate encoder call would cost more than its padding saves: the
    buckets minimise padded tokens + `overhead` tokens per bucket, at most `max_buckets` of them. Buckets come
    narrowest first and rows keep their order inside a bucket. One host sync (the bucket sizes).
    """
    needed = ((first_eos + multiple) // multiple * multiple).clamp(max=width)
    values, counts = torch.unique(needed, return_counts=True)
    widths = _merge_widths(values.tolist(), counts.tolist(), max_buckets, overhead)
    chosen = torch.tensor(widths, device=needed.device)
    index = torch.searchsorted(chosen, needed)  # the narrowest chosen width >= each row's own
    order = torch.argsort(index, stable=True)
    sizes = torch.bincount(index, minlength=len(widths)).tolist()
    return [(w, rows) for w, rows in zip(widths, order.split(sizes), strict=True) if rows.numel()]


class FGCLIPTextEmbeddings(CLIPTextEmbeddings):
    """CLIP text embeddings plus the two long position tables; the path is chosen per call."""

    def __init__(self, config: CLIPTextConfig, long_max_len: int, keep_len: int):
        super().__init__(config)
        self.keep_len, self.long_max_len = keep_len, long_max_len
        self.position_embedding_ori = nn.Embedding(long_max_len, config.hidden_size)
        self.position_embedding_res = nn.Embedding(long_max_len, config.hidden_size)
        self.position_ids = nn.Buffer(torch.arange(long_max_len).expand((1, -1)), persistent=False)

    def forward(self, input_ids: torch.Tensor, walk_short_pos: bool = True) -> torch.Tensor:
        length = input_ids.shape[-1]
        limit = self.position_embedding.num_embeddings if walk_short_pos else self.long_max_len
        if length > limit:
            path = "short (walk_short_pos=True)" if walk_short_pos else "long"
            raise ValueError(f"input_ids has length {length}, longer than the {path} text length {limit}")
        positions = self.position_ids[:, :length]
        tokens = self.token_embedding(input_ids)
        if walk_short_pos:
            return tokens + self.position_embedding(positions)
        # Same as the official ori*mask1 + res*mask2, but valid at any length, not only at exactly 248.
        keep = min(self.keep_len, length)
        pos = torch.cat([self.position_embedding_ori(positions[:, :keep]),
                         self.position_embedding_res(positions[:, keep:])], dim=1)
        return tokens + pos


class FGCLIPModel(CLIPPreTrainedModel):
    config: FGCLIPConfig
    config_class = FGCLIPConfig
    base_model_prefix = "fgclip"
    main_input_name = "pixel_values"
    # Text rows are encoded in length buckets of this granularity (see `encode_text`); `bucket_texts = False` on
    # an instance turns it off (the benchmarks' unbucketed baseline).
    TEXT_BUCKET_MULTIPLE = 8
    TEXT_MAX_BUCKETS = 8
    # What one more encoder call costs, in padded tokens it must save to be worth it. CPU: small (measured: 2 to 8
    # buckets on the long path cost the same there). CUDA: estimated, not measured: a call launches ~30 kernels per
    # layer forward and backward (~3-4 ms for 12 layers), what a B/16 text tower spends on ~6k tokens on an H200.
    TEXT_BUCKET_OVERHEAD_TOKENS = {"cpu": 64, "cuda": 4096}
    bucket_texts = True

    def __init__(self, config: FGCLIPConfig):
        super().__init__(config)
        text_cfg, vision_cfg = config.text_config, config.vision_config
        self.text_model = CLIPTextModel._from_config(text_cfg)
        self.text_model.embeddings = FGCLIPTextEmbeddings(text_cfg, config.long_max_len, config.keep_len)
        self.vision_model = CLIPVisionModel._from_config(vision_cfg)
        proj = config.projection_dim
        self.visual_projection = nn.Linear(vision_cfg.hidden_size, proj, bias=False)
        self.text_projection = nn.Linear(text_cfg.hidden_size, proj, bias=False)
        self.text_filip_projection = nn.Linear(text_cfg.hidden_size, proj, bias=False)
        value = float(config.logit_scale_init_value)
        self.logit_scale = nn.Parameter(torch.tensor(value))
        self.logit_scale_finegraind = nn.Parameter(torch.tensor(value))  # official spelling, kept for loading
        self.logit_scale_hardneg = nn.Parameter(torch.tensor(value))
        self.criterion = FGCLIPLoss(config.region_loss_weight, config.hard_loss_weight,
                                    logit_scale_max=config.logit_scale_max)
        fuse_quick_gelu(self)  # CLIP's QuickGELU as one autograd function (same values, see activations.py)
        self.post_init()

    def _init_weights(self, module):
        super()._init_weights(module)
        if module is self:  # children are initialised first, so the 77-row table and text_projection exist
            emb = self.text_model.embeddings
            table = stretch_positions(emb.position_embedding.weight, self.config.long_max_len,
                                      self.config.keep_len, self.config.position_stretch)
            init.copy_(emb.position_embedding_ori.weight, table)
            init.copy_(emb.position_embedding_res.weight, table)
            init.normal_(self.visual_projection.weight, std=self.config.vision_config.hidden_size ** -0.5)
            init.normal_(self.text_projection.weight, std=self.config.text_config.hidden_size ** -0.5)
            init.copy_(self.text_filip_projection.weight, self.text_projection.weight)
            for scale in (self.logit_scale, self.logit_scale_finegraind, self.logit_scale_hardneg):
                init.constant_(scale, float(self.config.logit_scale_init_value))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """Load ours, an official `qihoo360/fg-clip-*` checkpoint or an OpenAI CLIP checkpoint (HF format).

        Foreign formats are converted on the fly (no remote code is ever executed); see `loading.py`.
        """
        return load_any_checkpoint(cls, pretrained_model_name_or_path, *args, **kwargs)

    @classmethod
    def _from_pretrained_native(cls, path, *args, **kwargs):
        return super().from_pretrained(path, *args, **kwargs)

    # ---------------------------------------------------------------- text
    def encode_text(self, input_ids: torch.Tensor, walk_short_pos: bool = True,
                    bucket: bool | None = None) -> torch.Tensor:
        """Pooled (first-eos) hidden state of the text transformer, before projection: (B, Dt).

        Rows are grouped by their true length (up to the first eos) into buckets whose widths are multiples of
        `TEXT_BUCKET_MULTIPLE` (at most `TEXT_MAX_BUCKETS` of them); each bucket is encoded at its own width and
        the rows are put back in order. Attention is causal and pooling is at the first eos, so the tokens cut off
        never reach the pooled state: the result is the padded batch's up to the attention kernel's reduction
        order. It is bit-identical where that order does not depend on the padded width (SDPA's math backend for
        texts longer than 8 tokens: tested) and within float32 rounding with the CPU flash kernel, whose tiling
        follows the sequence length (tested). `bucket=False` (or `self.bucket_texts = False`) encodes every row
        at the batch width.
        """
        eos = self.config.text_config.eos_token_id
        is_eos = input_ids == eos
        if input_ids.numel() and not bool(is_eos.any(-1).all()):
            row = int((~is_eos.any(-1)).nonzero()[0, 0])
            raise ValueError(f"input_ids[{row}] has no eos token (id {eos} from text_config.eos_token_id); "
                             "tokenise with the model's tokenizer, which appends it")
        first_eos = is_eos.int().argmax(-1)
        bucket = self.bucket_texts if bucket is None else bucket
        embeddings = self.text_model.embeddings
        if not bucket or input_ids.shape[0] < 2:
            return self._encode_embedded(embeddings(input_ids, walk_short_pos=walk_short_pos), first_eos)
        overhead = self.TEXT_BUCKET_OVERHEAD_TOKENS.get(input_ids.device.type, 0)
        buckets = length_buckets(first_eos, input_ids.shape[1], self.TEXT_BUCKET_MULTIPLE, self.TEXT_MAX_BUCKETS,
                                 overhead)
        if len(buckets) == 1:
            width = buckets[0][0]
            return self._encode_embedded(embeddings(input_ids[:, :width], walk_short_pos=walk_short_pos), first_eos)
        # One embedding lookup for every row (rows sorted by bucket): an embedding's backward writes a dense
        # vocab x width gradient, so one lookup per bucket would cost that much per bucket.
        order = torch.cat([rows for _, rows in buckets])
        embedded = embeddings(input_ids[order], walk_short_pos=walk_short_pos)
        pieces = embedded.split([rows.numel() for _, rows in buckets])
        parts = [self._encode_embedded(piece[:, :width], first_eos[rows])
                 for (width, rows), piece in zip(buckets, pieces, strict=True)]
        return torch.cat(parts)[torch.argsort(order)]

    def _encode_embedded(self, hidden: torch.Tensor, first_eos: torch.Tensor) -> torch.Tensor:
        """Causal text transformer + final layer norm over embedded tokens, pooled at each row's first eos."""
        text = self.text_model
        mask = create_causal_mask(config=text.config, inputs_embeds=hidden, attention_mask=None, cache=None)
        hidden = text.encoder(inputs_embeds=hidden, attention_mask=mask, is_causal=True).last_hidden_state
        hidden = text.final_layer_norm(hidden)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), first_eos]

    def get_text_features(self, input_ids: torch.Tensor, walk_short_pos: bool = True, bucket: bool | None = None,
                          **_unused) -> torch.Tensor:
        """Unnormalised text embeddings: the short path + `text_projection` if `walk_short_pos`, else the long
        path + `text_filip_projection` (official meaning). `bucket`: see `encode_text`."""
        pooled = self.encode_text(input_ids, walk_short_pos, bucket)
        return self.text_projection(pooled) if walk_short_pos else self.text_filip_projection(pooled)

    # ---------------------------------------------------------------- vision
    def _vision(self, pixel_values: torch.Tensor, dense: bool):
        return self.vision_model(pixel_values=pixel_values, output_hidden_states=dense, return_dict=True)

    def dense_from_penultimate(self, hidden: torch.Tensor) -> torch.Tensor:
        """Re-run the last block with attention replaced by its value path, drop CLS, post-LN, project."""
        layer = self.vision_model.encoder.layers[-1]
        attn = layer.self_attn
        hidden = hidden + attn.out_proj(attn.v_proj(layer.layer_norm1(hidden)))
        hidden = hidden + layer.mlp(layer.layer_norm2(hidden))
        return self.visual_projection(self.vision_model.post_layernorm(hidden[:, 1:]))

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Unnormalised global embedding: visual_projection(post_layernorm(CLS))."""
        return self.visual_projection(self._vision(pixel_values, dense=False).pooler_output)

    def get_image_dense_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Unnormalised (B, N, proj) patch embeddings (row-major sqrt(N) x sqrt(N) grid)."""
        return self.dense_from_penultimate(self._vision(pixel_values, dense=True).hidden_states[-2])

    def get_image_box_roi_features(self, pixel_values: torch.Tensor, box_info, normalize: bool = False) -> torch.Tensor:
        """(K, proj) RoIAlign box embeddings.

        `box_info`: a list of per-image (n_i, 4) tensors or a (K, 5) tensor [batch_idx, x1, y1, x2, y2], boxes in
        normalised xyxy [0, 1]. Unlike the official method (feature-grid units), values outside [0, 1] raise.
        Unnormalised by default like official v1.0; `normalize=True` L2-normalises.
        """
        feats = roi_features(self.get_image_dense_features(pixel_values), boxes_to_rois(box_info))
        return nn.functional.normalize(feats, dim=-1) if normalize else feats

    # ---------------------------------------------------------------- training
    def _short_texts_once(self, groups: list[torch.Tensor]) -> list[torch.Tensor]:
        """Encode every distinct short-path text once; return projected features per input group."""
        pad = self.config.text_config.pad_token_id
        width = max(g.shape[1] for g in groups)
        # Padding after eos changes nothing: attention is causal and pooling is at the first eos.
        padded = torch.cat([nn.functional.pad(g, (0, width - g.shape[1]), value=pad) for g in groups])
        unique, inverse = torch.unique(padded, dim=0, return_inverse=True)
        feats = self.text_projection(self.encode_text(unique, walk_short_pos=True))[inverse]
        return list(feats.split([g.shape[0] for g in groups]))

    def forward(self, pixel_values: torch.Tensor, long_input_ids: torch.Tensor, short_input_ids: torch.Tensor,
                box_counts: torch.Tensor | None = None, boxes: torch.Tensor | None = None,
                box_input_ids: torch.Tensor | None = None, hard_box_index: torch.Tensor | None = None,
                hard_input_ids: torch.Tensor | None = None, add_box_loss: bool | None = None,
                use_hard_neg: bool | None = None, hard_counts: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Training forward on a collated batch; returns named loss terms, `loss` and the three temperatures.

        Stage switches default to "on when the batch carries the inputs" (stage 1 batches carry no boxes).
        `hard_counts` (per-image hard boxes) is accepted from the collator for logging and not needed here.
        """
        region_on = (boxes is not None) if add_box_loss is None else add_box_loss
        hard_on = (hard_input_ids is not None) if use_hard_neg is None else use_hard_neg
        if (region_on or hard_on) and boxes is None:
            raise ValueError("add_box_loss / use_hard_neg need boxes, box_counts and box_input_ids in the batch")
        vision = self._vision(pixel_values, dense=region_on or hard_on)
        image = self.visual_projection(vision.pooler_output)
        long_text = self.get_text_features(long_input_ids, walk_short_pos=False)
        groups = [short_input_ids] + ([box_input_ids] if region_on else []) + ([hard_input_ids] if hard_on else [])
        short_feats = self._short_texts_once(groups)
        extra = {}
        if region_on or hard_on:
            region = roi_features(self.dense_from_penultimate(vision.hidden_states[-2]), packed_rois(boxes, box_counts))
            if region_on:
                extra.update(region=region, region_text=short_feats[1], region_scale=self.logit_scale_finegraind)
            if hard_on:
                group = 1 + self.config.hard_negatives_per_box
                hard_text = short_feats[-1]
                if hard_text.shape[0] != hard_box_index.shape[0] * group:
                    raise ValueError(f"hard_input_ids has {hard_text.shape[0]} rows; expected {group} per hard box "
                                     f"x {hard_box_index.shape[0]} boxes (config.hard_negatives_per_box)")
                extra.update(hard_region=region[hard_box_index], hard_scale=self.logit_scale_hardneg,
                             hard_text=hard_text.reshape(-1, group, hard_text.shape[-1]))
        terms = self.criterion(image, long_text, short_feats[0], self.logit_scale, **extra)
        for name, p in (("logit_scale", self.logit_scale), ("logit_scale_region", self.logit_scale_finegraind),
                        ("logit_scale_hard", self.logit_scale_hardneg)):
            terms[f"temperature/{name}"] = p.detach().exp()
        return terms
