"""timm backbones as multi-scale feature extractors (NCHW features at strides >= 4)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from hssn.errors import UserError


# Extra timm kwargs a backbone family needs for segmentation, keyed by model-name prefix.
# HRNet: ``feature_location=""`` gives the HRNetV2 branch outputs (e.g. 48/96/192/384 for W48)
# instead of the classification network's "incre" features.
FAMILY_KWARGS: dict[str, dict[str, Any]] = {
    "hrnet": {"feature_location": ""},
}

MIN_REDUCTION = 4  # features finer than 1/4 (the stem) are dropped


def _family_kwargs(name: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for prefix, kw in FAMILY_KWARGS.items():
        if name.startswith(prefix):
            out.update(kw)
    return out


def _check_weights_file(path: Path) -> None:
    """``ValueError`` naming ``path`` unless it holds a state dict (names -> tensors, as timm reads it:
    .pth / .bin / .safetensors, unwrapped from "state_dict" / "model"); timm would fail on it with a bare
    KeyError, or load nothing from a dict of other things."""
    from timm.models import load_state_dict

    try:
        state = load_state_dict(str(path))
    except Exception as err:  # torch / safetensors raise many types for a file that is not weights
        raise UserError(f"model.pretrained {path}: not a weights file ({type(err).__name__}: "
                        f"{str(err).splitlines()[0][:160] if str(err) else 'unreadable'})") from None
    if not isinstance(state, dict) or not state:
        raise UserError(f"model.pretrained {path}: not a state dict (holds {type(state).__name__})")
    bad = next(((k, v) for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        raise UserError(f"model.pretrained {path}: not a state dict of tensors (entry {bad[0]!r} holds "
                        f"{type(bad[1]).__name__})")


def _pretrained_kwargs(pretrained: bool | str | os.PathLike) -> dict[str, Any]:
    if pretrained is True:
        return {"pretrained": True}
    if pretrained is False or pretrained is None:
        return {"pretrained": False}
    if isinstance(pretrained, (str, os.PathLike)):
        path = Path(pretrained)
        if not path.is_file():
            raise FileNotFoundError(f"pretrained weights file not found: {path}")
        _check_weights_file(path)
        return {"pretrained": True, "pretrained_cfg_overlay": {"file": str(path)}}
    raise TypeError(f"pretrained must be a bool or a file path, got {type(pretrained).__name__}")


class TimmBackbone(nn.Module):
    """A ``timm.create_model(name, features_only=True)`` network returning NCHW features.

    Args:
        name: any timm model name that supports ``features_only``.
        pretrained: False, True (timm's ImageNet weights, needs the network or the HF cache) or a
            path to a local checkpoint of the full timm model (its ``state_dict()``).
        output_stride: passed to timm (dilated CNNs such as ResNet: 8, 16 or 32); None = native.
        img_size: passed to timm for fixed-size models (Swin, ViT), which are then built with
            ``strict_img_size=False`` so that other sizes work too.
        **timm_kwargs: anything else for ``timm.create_model``.

    ``forward(images (B, 3, H, W) float) -> list[(B, channels[i], H / reductions[i], W / ...)]``,
    only the features with reduction >= 4, coarsest last.
    """

    def __init__(
        self,
        name: str,
        pretrained: bool | str | os.PathLike = False,
        output_stride: int | None = None,
        img_size: int | tuple[int, int] | None = None,
        **timm_kwargs: Any,
    ):
        super().__init__()
        import timm

        if not isinstance(name, str) or not name:
            raise TypeError(f"backbone name must be a non-empty string, got {name!r}")
        if not timm.is_model(name):
            raise UserError(f"unknown timm model {name!r} (see timm.list_models())")
        kwargs: dict[str, Any] = {**_family_kwargs(name), **timm_kwargs, **_pretrained_kwargs(pretrained)}
        if output_stride is not None:
            if output_stride not in (8, 16, 32):
                raise UserError(f"output_stride must be 8, 16 or 32, got {output_stride}")
            kwargs["output_stride"] = output_stride
        if img_size is not None:
            kwargs["img_size"] = img_size
        try:
            self.model = self._create(timm, name, kwargs)
        except OSError as err:  # includes huggingface_hub's offline / not-cached errors
            if pretrained is not True:
                raise
            raise OSError(
                f"could not fetch timm's pretrained weights for {name!r} ({type(err).__name__}: {err}); on an "
                f"offline machine save `timm.create_model({name!r}, pretrained=True).state_dict()` elsewhere "
                f"and pass pretrained='path/to/file.pth' (model.pretrained in a config), or pretrained=False"
            ) from err
        info = self.model.feature_info
        keep = [i for i, r in enumerate(info.reduction()) if r >= MIN_REDUCTION]
        if not keep:
            raise UserError(f"backbone {name!r} has no features at stride >= {MIN_REDUCTION}")
        self.name = name
        self.keep = keep
        self.channels: list[int] = [info.channels()[i] for i in keep]
        self.reductions: list[int] = [info.reduction()[i] for i in keep]
        self.channels_last = getattr(self.model, "output_fmt", "NCHW") == "NHWC"
        self.in_chans = int(kwargs.get("in_chans", 3))
        self.weights = self._describe_weights(pretrained)

    def _describe_weights(self, pretrained: bool | str | os.PathLike) -> str:
        """Which weights were loaded: ``"random init"``, ``"timm <name>.<tag> (<source>)"`` or ``"file <path>"``."""
        if pretrained is False or pretrained is None:
            return "random init"
        if pretrained is not True:
            return f"file {pretrained}"
        cfg = getattr(self.model, "pretrained_cfg", None) or {}
        tag = cfg.get("tag")
        source = cfg.get("hf_hub_id") or cfg.get("url") or "timm"
        full = f"{cfg.get('architecture', self.name.split('.')[0])}.{tag}" if tag else self.name
        return f"timm {full} ({source})"

    @staticmethod
    def _create(timm, name: str, kwargs: dict[str, Any]) -> nn.Module:
        """Build with ``strict_img_size=False`` where the model takes it (Swin/ViT), else without."""
        try:
            try:
                return timm.create_model(name, features_only=True, strict_img_size=False, **kwargs)
            except TypeError as err:
                if "strict_img_size" not in str(err):
                    raise
            return timm.create_model(name, features_only=True, **kwargs)
        except TypeError as err:
            for key in ("output_stride", "img_size"):
                if f"'{key}'" in str(err):
                    raise UserError(f"timm backbone {name!r} does not accept {key}") from None
            raise
        except AssertionError as err:  # e.g. HRNet asserts output_stride == 32
            given = {k: v for k, v in kwargs.items() if k not in ("pretrained", "pretrained_cfg_overlay")}
            raise UserError(f"timm backbone {name!r} rejected the arguments {given}: {err}") from None

    @property
    def fixed_size(self) -> tuple[int, int] | None:
        """The input size a fixed-size model (Swin, ViT: windows and position tables built for ``img_size``) was
        built for, else None (any size that is a multiple of :attr:`size_divisor`)."""
        embed = getattr(self.model, "patch_embed", None)
        size = getattr(embed, "img_size", None)
        return None if size is None else (int(size[0]), int(size[1]))

    @property
    def size_divisor(self) -> int:
        """Inputs are padded to a multiple of this (the coarsest feature stride)."""
        return max(self.reductions)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        feats = self.model(images)
        feats = [feats[i] for i in self.keep]
        if self.channels_last:
            feats = [f.permute(0, 3, 1, 2).contiguous() for f in feats]
        return feats
