"""Batched feature extraction for the encoder benchmarks: checkpoint + tokenizer loading, texts, images, boxes.
(FG-CLIP 2 checkpoints get `encode_fgclip2.FGClip2Encoder`, the official NaFlex protocol, through `make_encoder`.)

- Texts are de-duplicated before encoding (FG-OVD negatives and prompt templates repeat a lot), sorted by length so
  batches pad little, and tokenised by the data layer's `encode_texts` (explicit truncation, counted). Short texts
  take the 77-token path (`walk_short_pos=True`), long texts the 248-token path (docs/model.md, "Tokenisation and
  pooling"). Inside a batch the model encodes each text in a length bucket of its own size
  (`FGCLIPModel.encode_text`), so a batch of mixed lengths costs about its real tokens, not rows x the longest.
- Images are decoded by the data layer (`load_rgb`: EXIF, RGB) and squash-resized to S x S with CLIP mean/std
  (`ImagePreprocessor`; docs/model.md, "Image preprocessing: squash, never crop"), in a DataLoader. Box benchmarks
  run the vision tower once per image batch (`get_image_dense_features`) and pool every box of those images with
  RoIAlign (`boxes.roi_features`).
- Every feature is L2-normalised exactly once, here, in float32.
Unloadable images go through the bad-record policy: `error` names the image and its record, `skip` counts it.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.nn.functional import normalize
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from fgclip_lmm.data.bad_records import BadReason, BadRecordPolicy
from fgclip_lmm.data.images import ImageConfig, ImagePreprocessor, ImageTooLargeError, load_rgb
from fgclip_lmm.data.text import encode_texts
from fgclip_lmm.errors import InputError, checkpoint_errors
from fgclip_lmm.model import FGCLIP2Model, FGCLIPModel
from fgclip_lmm.model.boxes import roi_features

from .formats import BoxTable

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json")


@dataclass
class EncoderConfig:
    """How features are computed; `image_size` None means the checkpoint's own (224 base, 336 large)."""

    batch_size: int = 32
    text_batch_size: int = 256
    image_size: int | None = None
    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    workers: int = 0
    truncation: str = "truncate"
    progress: bool = True
    max_pixels: int | None = None  # pixel budget per image (None: FGCLIP_MAX_IMAGE_PIXELS or 50 MP)
    patch_budgets: tuple[int, ...] | None = None  # FG-CLIP 2 (NaFlex) only; None = the official 128..1024 list


@dataclass
class EncodeStats:
    """What the report states about the texts (skipped records are counted by the bad-record policy)."""

    unique_texts: dict[str, int] = field(default_factory=dict)
    truncated_texts: dict[str, int] = field(default_factory=dict)


def _is_local(name: str) -> bool:
    return Path(name).exists() or name.startswith((".", "/", "~")) or name.count("/") != 1


def has_tokenizer_files(model: str) -> bool:
    """True for a hub id (its tokenizer is fetched with it) or a local directory holding tokenizer files."""
    path = Path(model).expanduser()
    return not _is_local(model) or any((path / f).is_file() for f in TOKENIZER_FILES)


def check_model_path(model: str) -> None:
    """A local checkpoint must be a directory with config.json (checked before any data is read)."""
    path = Path(model).expanduser()
    if _is_local(model):
        if not path.is_dir():
            raise FileNotFoundError(f"--model {model}: no such checkpoint directory")
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"--model {model}: not a checkpoint directory (no config.json)")


def load_checkpoint(model: str, tokenizer: str | None, settings: EncoderConfig):
    """(model, tokenizer); clear errors for a missing checkpoint, a missing tokenizer or mismatched token ids."""
    check_model_path(model)
    path = Path(model).expanduser()
    source_model = str(path) if _is_local(model) else model
    with checkpoint_errors(model):
        net = model_class(source_model).from_pretrained(source_model)
    from transformers import AutoTokenizer

    source = tokenizer
    if source is None:
        if not has_tokenizer_files(model):
            raise FileNotFoundError(f"--model {model} has no tokenizer files ({', '.join(TOKENIZER_FILES)}); "
                                    "pass --tokenizer DIR")
        source = str(path) if _is_local(model) else model
    with checkpoint_errors(source):
        tok = AutoTokenizer.from_pretrained(source)
    text_cfg = net.config.text_config
    # v1 pools at the first eos, so the tokenizer's eos must be the model's; FG-CLIP 2 pools the last position.
    if isinstance(net, FGCLIPModel) and tok.eos_token_id != text_cfg.eos_token_id:
        raise InputError(f"tokenizer {source} has eos id {tok.eos_token_id} but the model pools at "
                         f"text_config.eos_token_id={text_cfg.eos_token_id}: wrong tokenizer for this checkpoint")
    if len(tok) > text_cfg.vocab_size:
        raise InputError(f"tokenizer {source} has {len(tok)} tokens, more than the model's vocabulary "
                         f"{text_cfg.vocab_size}")
    return net.to(device=settings.device, dtype=settings.dtype).eval(), tok


def model_class(model: str) -> type[FGCLIPModel | FGCLIP2Model]:
    """`FGCLIP2Model` for FG-CLIP 2 and SigLIP 2 checkpoints (model_type fgclip2 / siglip2), else `FGCLIPModel`."""
    from fgclip_lmm.model.convert import FGCLIP2_MODEL_TYPES
    from fgclip_lmm.model.loading import read_config, resolve_checkpoint_dir

    model_type = read_config(resolve_checkpoint_dir(model)).get("model_type")
    return FGCLIP2Model if model_type in FGCLIP2_MODEL_TYPES else FGCLIPModel


def make_encoder(model, tokenizer, settings: EncoderConfig, policy: BadRecordPolicy) -> ClipEncoder:
    """The feature extractor of the model's family (FG-CLIP 2: NaFlex images, walks and masks, see encode_fgclip2)."""
    if isinstance(model, FGCLIP2Model):
        from .encode_fgclip2 import FGClip2Encoder

        return FGClip2Encoder(model, tokenizer, settings, policy)
    if settings.patch_budgets is not None:
        raise InputError("--patch-budgets applies to FG-CLIP 2 (NaFlex) checkpoints only")
    return ClipEncoder(model, tokenizer, settings, policy)


def unique(texts: list[str]) -> tuple[list[str], torch.Tensor]:
    """Distinct texts in first-seen order and the (N,) index of each input into them."""
    ids: dict[str, int] = {}
    inverse = [ids.setdefault(t, len(ids)) for t in texts]
    return list(ids), torch.tensor(inverse, dtype=torch.long)


class _ImageFiles(Dataset):
    """Decoded + preprocessed images; a failure is returned (not raised) so the policy can handle it."""

    def __init__(self, paths: list[Path], indices: list[int], prepare, max_pixels: int | None = None):
        self.paths, self.indices, self.prepare, self.max_pixels = paths, indices, prepare, max_pixels

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int):
        index = self.indices[item]
        try:
            image = load_rgb(self.paths[index], self.max_pixels)
            return index, self.prepare(image), image.size, None
        except ImageTooLargeError as error:
            return index, None, (0, 0), (BadReason.IMAGE_TOO_LARGE, str(error))
        except Exception as error:  # noqa: BLE001 - any decoder failure is a bad record, reported with its type
            return index, None, (0, 0), (BadReason.CORRUPT_IMAGE, f"{type(error).__name__}: {error}")


def _collate(items):
    return items


class ClipEncoder:
    """Normalised text, image and box features from one FG-CLIP checkpoint.

    Model-family hooks (`encode_fgclip2.FGClip2Encoder` overrides them): `prepare` (one decoded image -> model
    input), `stack` (inputs -> a batch), `global_features` / `dense_features` (batch -> features), `feature_dim`,
    `text_features`, and the protocol lines the report states (`resize`, `text_protocol`).
    """

    resize = "squash to SxS, bicubic, CLIP mean/std"
    text_protocol = "short texts on the 77-token path, long on the 248-token path, padded to the batch's longest"

    def __init__(self, model: FGCLIPModel, tokenizer, settings: EncoderConfig, policy: BadRecordPolicy):
        self.model, self.tokenizer, self.settings, self.policy = model, tokenizer, settings, policy
        native = model.config.vision_config.image_size
        size = settings.image_size or native
        if size != native:
            raise InputError(f"--image-size {size} differs from the checkpoint's vision image_size {native}: its "
                             f"position table is for {native}x{native} (FG-CLIP large evaluates at 336)")
        self.image_size = size
        self.preprocessor = ImagePreprocessor(ImageConfig(size=size))
        self.stats = EncodeStats()

    @property
    def feature_dim(self) -> int:
        return self.model.config.projection_dim

    def prepare(self, image):
        return self.preprocessor(image)

    def stack(self, items: list):
        return torch.stack(items)

    def _to_device(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.to(self.settings.device, self.settings.dtype)

    def global_features(self, batch) -> torch.Tensor:
        return self.model.get_image_features(self._to_device(batch))

    def box_pool(self, batch, rois: torch.Tensor) -> torch.Tensor:
        """(K, D) RoIAlign features of (K, 5) normalised rois [row in batch, x1, y1, x2, y2] of a batch."""
        return roi_features(self.model.get_image_dense_features(self._to_device(batch)), rois)

    def _bar(self, total: int, desc: str):
        return tqdm(total=total, desc=desc, unit="it", file=sys.stderr, disable=not self.settings.progress,
                    dynamic_ncols=True, leave=False)

    @torch.inference_mode()
    def text_features(self, texts: list[str], long: bool, field_name: str, region: bool = False) -> torch.Tensor:
        """(N, P) normalised features of distinct `texts` on the long (248) or short (77) path; `region` (phrases
        matched against box features) changes nothing for v1, which has one short path."""
        cfg = self.model.config
        max_length = cfg.long_max_len if long else cfg.short_max_len
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        out = torch.empty(len(texts), cfg.projection_dim)
        truncated, step = 0, self.settings.text_batch_size
        with self._bar(len(texts), f"texts ({field_name})") as bar:
            for start in range(0, len(order), step):
                rows = order[start:start + step]
                ids, cut = encode_texts(self.tokenizer, [texts[i] for i in rows], max_length, field_name,
                                        self.settings.truncation, [f"{field_name} {texts[i][:60]!r}" for i in rows])
                truncated += cut
                feats = self.model.get_text_features(ids.to(self.settings.device), walk_short_pos=not long)
                out[torch.tensor(rows)] = normalize(feats.float(), dim=-1).cpu()
                bar.update(len(rows))
        self.stats.unique_texts[field_name] = self.stats.unique_texts.get(field_name, 0) + len(texts)
        self.stats.truncated_texts[field_name] = self.stats.truncated_texts.get(field_name, 0) + truncated
        return out

    def _image_batches(self, paths: list[Path], records: list[str], desc: str, keep: torch.Tensor | None):
        """Yield (image positions (b,), the `stack`ed batch, decoded sizes (b, 2)) for the loadable images.

        `keep` (N,) bool leaves out images already rejected (missing files), without touching them again.
        """
        indices = list(range(len(paths))) if keep is None else keep.nonzero().flatten().tolist()
        loader = DataLoader(_ImageFiles(paths, indices, self.prepare, self.settings.max_pixels),
                            batch_size=self.settings.batch_size,
                            num_workers=self.settings.workers, collate_fn=_collate)
        with self._bar(len(indices), desc) as bar:
            for items in loader:
                good = []
                for index, pixels, size, error in items:
                    if error is None:
                        good.append((index, pixels, size))
                        continue
                    reason, message = error
                    self.policy.reject(reason, str(paths[index]), None, None,
                                       f"cannot load image ({message}); used by {records[index]}")
                bar.update(len(items))
                if good:
                    yield (torch.tensor([g[0] for g in good]), self.stack([g[1] for g in good]),
                           torch.tensor([g[2] for g in good], dtype=torch.float32))

    @torch.inference_mode()
    def image_features(self, paths: list[Path], records: list[str],
                       keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, P) normalised global features and an (N,) mask of the images that loaded."""
        feats = torch.zeros(len(paths), self.feature_dim)
        ok = torch.zeros(len(paths), dtype=torch.bool)
        for pos, pixels, _ in self._image_batches(paths, records, "images", keep):
            out = self.global_features(pixels)
            feats[pos] = normalize(out.float(), dim=-1).cpu()
            ok[pos] = True
        return feats, ok

    @torch.inference_mode()
    def box_features(self, table: BoxTable, keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(K, P) normalised RoIAlign features of every box and a (K,) mask of those computed.

        The vision tower runs once per image batch; all boxes of those images are pooled from its dense grid.
        """
        k = len(table)
        box_image = torch.tensor(table.box_image, dtype=torch.long)
        xywh = torch.tensor(table.boxes_xywh, dtype=torch.float64).reshape(k, 4)
        frames = torch.tensor(table.frames, dtype=torch.float64).reshape(k, 2)
        order = torch.argsort(box_image, stable=True)
        offsets = torch.cat([torch.zeros(1, dtype=torch.long),
                             torch.bincount(box_image, minlength=len(table.images)).cumsum(0)])
        feats = torch.zeros(k, self.feature_dim)
        ok = torch.zeros(k, dtype=torch.bool)
        image_records = [table.records[i] for i in self._first_box(box_image, len(table.images))]
        for pos, pixels, sizes in self._image_batches(table.images, image_records, "images (boxes)", keep):
            row_of = torch.full((len(table.images),), -1, dtype=torch.long)
            row_of[pos] = torch.arange(len(pos))
            lo, hi = int(offsets[int(pos.min())]), int(offsets[int(pos.max()) + 1])
            boxes = order[lo:hi]
            boxes = boxes[row_of[box_image[boxes]] >= 0]
            rows = row_of[box_image[boxes]]
            frame = frames[boxes]
            frame = torch.where(torch.isnan(frame), sizes.double()[rows], frame)
            x, y, w, h = xywh[boxes].unbind(-1)
            xyxy = torch.stack([x / frame[:, 0], y / frame[:, 1], (x + w) / frame[:, 0], (y + h) / frame[:, 1]], -1)
            xyxy = xyxy.clamp(0.0, 1.0)
            area_ok = (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
            for bad in boxes[~area_ok].tolist():  # only boxes whose frame came from the decoded image can fail here
                self.policy.reject(BadReason.BOX_OUT_OF_RANGE, table.records[bad], None, "bbox",
                                   f"{table.boxes_xywh[bad]} lies outside its decoded image")
            boxes, rows, xyxy = boxes[area_ok], rows[area_ok], xyxy[area_ok]
            if not len(boxes):
                continue
            rois = torch.cat([rows[:, None].double(), xyxy], 1).float()
            feats[boxes] = normalize(self.box_pool(pixels, rois).float(), dim=-1).cpu()
            ok[boxes] = True
        return feats, ok

    @staticmethod
    def _first_box(box_image: torch.Tensor, n_images: int) -> list[int]:
        """Index of the first box of each image (names the record in image errors)."""
        first = torch.full((n_images,), len(box_image), dtype=torch.long)
        first.scatter_reduce_(0, box_image, torch.arange(len(box_image)), reduce="amin")
        return first.tolist()


def check_images_exist(paths: list[Path], records: list[str], policy: BadRecordPolicy) -> torch.Tensor:
    """(N,) mask of existing image files; each missing one goes through the policy before evaluation starts."""
    ok = torch.tensor([p.is_file() for p in paths], dtype=torch.bool)
    for i in (~ok).nonzero().flatten().tolist():
        policy.reject(BadReason.MISSING_IMAGE, str(paths[i]), None, None, f"image file not found; used by {records[i]}")
    return ok



