"""Transforms on item dicts ``{"image": float (3, H, W), "label": int64 (H, W), ...}``.

Every transform returns a new dict with new tensors (the input is never modified). Labels are only
ever resampled with nearest neighbour on half-pixel centres (the bilinear image resize's geometry,
computed exactly in integers), so image and label stay aligned. Random transforms draw from ``generator`` when given,
else from torch's global RNG (which DataLoader seeds per worker).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

Item = dict


def _check_item(item: Item) -> tuple[torch.Tensor, torch.Tensor]:
    image, label = item["image"], item["label"]
    if image.dim() != 3 or image.shape[0] != 3 or not image.is_floating_point():
        raise ValueError(f"image must be float (3, H, W), got {image.dtype} {tuple(image.shape)}")
    if label.dim() != 2 or label.dtype != torch.int64:
        raise ValueError(f"label must be int64 (H, W), got {label.dtype} {tuple(label.shape)}")
    if image.shape[1:] != label.shape:
        raise ValueError(f"image {tuple(image.shape[1:])} and label {tuple(label.shape)} sizes differ")
    return image, label


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def nearest_indices(in_size: int, out_size: int) -> torch.Tensor:
    """(out_size,) int64 source index of each output pixel: floor((i + 0.5) * in / out), exact in integers."""
    return (torch.arange(out_size) * 2 + 1) * in_size // (2 * out_size)


def resize_label(label: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(H, W) int64 -> (h, w) nearest neighbour with half-pixel centres (the bilinear resize's geometry)."""
    return label[nearest_indices(label.shape[0], size[0])][:, nearest_indices(label.shape[1], size[1])]


def resize_image(image: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """(3, H, W) float -> (3, h, w); ``mode`` "bilinear" / "bicubic" (align_corners=False) or "nearest"
    (the exact index map of :func:`resize_label`)."""
    if mode == "nearest":
        return image[:, nearest_indices(image.shape[1], size[0])][:, :, nearest_indices(image.shape[2], size[1])]
    if mode not in ("bilinear", "bicubic"):
        raise ValueError(f"image mode must be 'bilinear', 'bicubic' or 'nearest', got {mode!r}")
    out = F.interpolate(image[None], size=size, mode=mode, align_corners=False)[0]
    return out.clamp_(0.0, 1.0) if mode == "bicubic" else out


class Compose:
    """Apply ``transforms`` in order."""

    def __init__(self, transforms: Sequence[Callable[[Item], Item]]):
        self.transforms = list(transforms)

    def __call__(self, item: Item) -> Item:
        for t in self.transforms:
            item = t(item)
        return item

    def __repr__(self) -> str:
        return "Compose(" + ", ".join(map(repr, self.transforms)) + ")"


class Resize:
    """Resize to ``size`` (h, w), or by ``scale``; ``keep_ratio`` fits the image inside ``size``.

    ``resize_label=False`` keeps the label at full resolution (evaluate the upsampled prediction
    against the original label).
    """

    def __init__(self, size: tuple[int, int] | None = None, scale: float | None = None, keep_ratio: bool = False,
                 resize_label: bool = True, image_mode: str = "bilinear"):
        if (size is None) == (scale is None):
            raise ValueError("give exactly one of size or scale")
        if scale is not None and scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        self.size, self.scale, self.keep_ratio = size, scale, keep_ratio
        self.resize_label, self.image_mode = resize_label, image_mode

    def target_size(self, height: int, width: int) -> tuple[int, int]:
        if self.scale is not None:
            return max(1, round(height * self.scale)), max(1, round(width * self.scale))
        h, w = self.size
        if not self.keep_ratio:
            return int(h), int(w)
        s = min(h / height, w / width)
        return max(1, round(height * s)), max(1, round(width * s))

    def __call__(self, item: Item) -> Item:
        image, label = _check_item(item)
        size = self.target_size(*label.shape)
        out = dict(item, image=resize_image(image, size, self.image_mode))
        out["label"] = resize_label(label, size) if self.resize_label else label.clone()
        return out


class RandomScale:
    """Resize by a factor drawn uniformly from [min_scale, max_scale] (relative to the input size)."""

    def __init__(self, min_scale: float = 0.5, max_scale: float = 2.0, image_mode: str = "bilinear",
                 generator: torch.Generator | None = None):
        if not 0 < min_scale <= max_scale:
            raise ValueError(f"need 0 < min_scale <= max_scale, got {min_scale}, {max_scale}")
        self.min_scale, self.max_scale, self.image_mode, self.generator = min_scale, max_scale, image_mode, generator

    def __call__(self, item: Item) -> Item:
        scale = _uniform(self.min_scale, self.max_scale, self.generator)
        return Resize(scale=scale, image_mode=self.image_mode)(item)


def _pad(image: torch.Tensor, label: torch.Tensor, height: int, width: int, ignore_index: int):
    """Pad bottom / right to at least (height, width): image with 0, label with ignore_index."""
    ph, pw = max(height - label.shape[0], 0), max(width - label.shape[1], 0)
    if ph == 0 and pw == 0:
        return image, label
    return F.pad(image, (0, pw, 0, ph), value=0.0), F.pad(label, (0, pw, 0, ph), value=ignore_index)


class PadTo:
    """Pad bottom / right (image 0, label ignore_index) to ``size`` (h, w) and / or to multiples of
    ``size_divisor``; never crops."""

    def __init__(self, size: tuple[int, int] | None = None, size_divisor: int | None = None, ignore_index: int = 255):
        if size is None and size_divisor is None:
            raise ValueError("give size and / or size_divisor")
        self.size, self.size_divisor, self.ignore_index = size, size_divisor, ignore_index

    def __call__(self, item: Item) -> Item:
        image, label = _check_item(item)
        h, w = label.shape
        if self.size is not None:
            h, w = max(h, self.size[0]), max(w, self.size[1])
        if self.size_divisor:
            d = self.size_divisor
            h, w = math.ceil(h / d) * d, math.ceil(w / d) * d
        image, label = _pad(image, label, h, w, self.ignore_index)
        return dict(item, image=image.clone(), label=label.clone())


class RandomCrop:
    """Random (height, width) crop; smaller inputs are padded first (image 0, label ignore_index).

    ``cat_max_ratio`` < 1 retries a crop (up to 10 times) while one class covers more than that
    fraction of its non-ignored pixels (mmseg's trick for Cityscapes).
    """

    def __init__(self, height: int, width: int, ignore_index: int = 255, cat_max_ratio: float = 1.0,
                 generator: torch.Generator | None = None):
        if height <= 0 or width <= 0:
            raise ValueError(f"crop size must be positive, got {height}x{width}")
        self.height, self.width, self.ignore_index = height, width, ignore_index
        self.cat_max_ratio, self.generator = cat_max_ratio, generator

    def _offsets(self, label: torch.Tensor) -> tuple[int, int]:
        top = int(torch.randint(0, label.shape[0] - self.height + 1, (), generator=self.generator))
        left = int(torch.randint(0, label.shape[1] - self.width + 1, (), generator=self.generator))
        return top, left

    def __call__(self, item: Item) -> Item:
        image, label = _check_item(item)
        image, label = _pad(image, label, self.height, self.width, self.ignore_index)
        top, left = self._offsets(label)
        if self.cat_max_ratio < 1.0:
            for _ in range(10):
                crop = label[top:top + self.height, left:left + self.width]
                counts = torch.unique(crop[crop != self.ignore_index], return_counts=True)[1]
                if len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio:
                    break
                top, left = self._offsets(label)
        rows, cols = slice(top, top + self.height), slice(left, left + self.width)
        return dict(item, image=image[:, rows, cols].clone(), label=label[rows, cols].clone())


class RandomHorizontalFlip:
    """Mirror left-right with probability ``p``; label ids in ``flip_pairs`` (a, b) are swapped."""

    def __init__(self, p: float = 0.5, flip_pairs: Sequence[Sequence[int]] = (),
                 generator: torch.Generator | None = None):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.p, self.generator = p, generator
        self.flip_pairs = [(int(a), int(b)) for a, b in flip_pairs]

    def __call__(self, item: Item) -> Item:
        image, label = _check_item(item)
        if float(torch.rand((), generator=self.generator)) >= self.p:
            return dict(item, image=image.clone(), label=label.clone())
        return dict(item, image=image.flip(-1), label=swap_labels(label.flip(-1), self.flip_pairs))


def swap_labels(label: torch.Tensor, flip_pairs: Sequence[Sequence[int]]) -> torch.Tensor:
    """Copy of ``label`` with each pair (a, b) of ids exchanged."""
    out = label.clone()
    for a, b in flip_pairs:
        out[label == a] = b
        out[label == b] = a
    return out


_GREY = torch.tensor([0.299, 0.587, 0.114])


class PhotometricJitter:
    """Random brightness, contrast, saturation and hue changes of the image (label untouched).

    Each is applied with probability ``p``: brightness adds a shift in [-brightness, brightness];
    contrast and saturation multiply by a factor in their range (saturation blends with the grey
    image); hue rotates the chroma plane (YIQ) by an angle in [-hue, hue] turns. Output clamped to [0, 1].
    Defaults follow mmseg's PhotoMetricDistortion (32/255, 0.5-1.5, 0.5-1.5, hue 0.1 turn = 36 degrees).
    """

    def __init__(self, brightness: float = 32 / 255, contrast: tuple[float, float] = (0.5, 1.5),
                 saturation: tuple[float, float] = (0.5, 1.5), hue: float = 0.1, p: float = 0.5,
                 generator: torch.Generator | None = None):
        self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue
        self.p, self.generator = p, generator

    def _apply(self) -> bool:
        return float(torch.rand((), generator=self.generator)) < self.p

    def __call__(self, item: Item) -> Item:
        image, _ = _check_item(item)
        image = image.clone()
        if self._apply():
            image += _uniform(-self.brightness, self.brightness, self.generator)
        if self._apply():
            image *= _uniform(*self.contrast, self.generator)
        if self._apply():
            grey = torch.einsum("c,chw->hw", _GREY.to(image), image)[None]
            image = grey + (image - grey) * _uniform(*self.saturation, self.generator)
        if self._apply():
            image = _rotate_hue(image, _uniform(-self.hue, self.hue, self.generator) * 2 * math.pi)
        return dict(item, image=image.clamp_(0.0, 1.0), label=item["label"].clone())


_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def _rotate_hue(image: torch.Tensor, angle: float) -> torch.Tensor:
    """Rotate the I/Q chroma of a (3, H, W) RGB image by ``angle`` radians (luma kept)."""
    c, s = math.cos(angle), math.sin(angle)
    rot = torch.tensor([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    m = torch.linalg.inv(_RGB_TO_YIQ) @ rot @ _RGB_TO_YIQ
    return torch.einsum("ij,jhw->ihw", m.to(image), image)


def build_train_transforms(crop_size: tuple[int, int], scale_range: tuple[float, float] = (0.5, 2.0),
                           flip_pairs: Sequence[Sequence[int]] = (), ignore_index: int = 255,
                           photometric: bool = True, cat_max_ratio: float = 1.0,
                           generator: torch.Generator | None = None) -> Compose:
    """RandomScale -> RandomCrop(crop_size) -> RandomHorizontalFlip(0.5, flip_pairs) [-> PhotometricJitter]."""
    steps: list[Callable[[Item], Item]] = [
        RandomScale(*scale_range, generator=generator),
        RandomCrop(*crop_size, ignore_index=ignore_index, cat_max_ratio=cat_max_ratio, generator=generator),
        RandomHorizontalFlip(0.5, flip_pairs, generator=generator),
    ]
    if photometric:
        steps.append(PhotometricJitter(generator=generator))
    return Compose(steps)


def build_eval_transforms(size: tuple[int, int] | None = None, keep_ratio: bool = True,
                          size_divisor: int | None = None, ignore_index: int = 255,
                          resize_label: bool = False) -> Compose:
    """Optional Resize(size, keep_ratio; label kept at full size by default) and PadTo(size_divisor)."""
    steps: list[Callable[[Item], Item]] = []
    if size is not None:
        steps.append(Resize(size=size, keep_ratio=keep_ratio, resize_label=resize_label))
    if size_divisor:
        if size is not None and not resize_label:
            raise ValueError("padding to size_divisor needs resize_label=True when resizing (sizes must match)")
        steps.append(PadTo(size_divisor=size_divisor, ignore_index=ignore_index))
    return Compose(steps)
