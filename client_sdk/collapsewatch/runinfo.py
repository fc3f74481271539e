"""What the SDK tells the server about a run: its metadata and the probes found in the model."""

from __future__ import annotations

import socket
import sys
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from collapsewatch._version import __version__
from collapsewatch.config import jsonable
from collapsewatch.schemas import ProbeInfo, ProbeKind, RunInfo

if TYPE_CHECKING:
    import torch
    from torch import nn


#: Longest probe name the wire takes; deeper paths keep their (more specific) tail.
MAX_NAME = 256


@dataclass
class Layer:
    """A Linear or Conv layer whose outputs are observed."""

    name: str
    module: nn.Module
    spatial_dims: int  # 0 for Linear, N for ConvNd


def _spatial_dims(module: nn.Module) -> int | None:
    from torch import nn

    if isinstance(module, nn.Linear):
        return 0
    for dims, cls in ((1, nn.Conv1d), (2, nn.Conv2d), (3, nn.Conv3d)):
        if isinstance(module, cls):
            return dims
    return None


def _numel(module: nn.Module) -> int:
    try:
        return sum(p.numel() for p in module.parameters())
    except (RuntimeError, ValueError):  # lazy modules have no shape before their first call
        return 0


Params = list[tuple[str, "torch.Tensor"]]


def discover(model: nn.Module) -> tuple[list[Layer], Params, list[ProbeInfo]]:
    """Layers to hook, trainable parameters, and their probes, all in model order.

    Linears inside ``nn.MultiheadAttention`` are skipped: it reads their weights directly and
    never calls them, so their hooks would never fire.
    """
    from torch import nn

    layers: list[Layer] = []
    params: Params = []
    infos: list[ProbeInfo] = []
    seen: set[int] = set()
    attention: list[str] = []
    for name, module in model.named_modules():
        dims = _spatial_dims(module)
        inside_attention = any(name.startswith(prefix + ".") for prefix in attention)
        if isinstance(module, nn.MultiheadAttention):
            attention.append(name)
        if dims is not None and not inside_attention:
            probe = (name or type(module).__name__)[-MAX_NAME:]
            width = getattr(module, "out_features", None) or getattr(module, "out_channels", None)
            layers.append(Layer(probe, module, dims))
            infos.append(
                ProbeInfo(
                    name=probe,
                    kind=ProbeKind.activation,
                    module=type(module).__name__[:128],
                    order=len(infos),
                    width=width,
                    params=_numel(module),
                )
            )
        for pname, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            full = (f"{name}.{pname}" if name else pname)[-MAX_NAME:]
            try:
                size = param.numel()
            except (RuntimeError, ValueError):
                size = 0
            params.append((full, param))
            infos.append(
                ProbeInfo(
                    name=full,
                    kind=ProbeKind.parameter,
                    module=type(module).__name__[:128],
                    order=len(infos),
                    params=size,
                )
            )
    return layers, params, infos


def class_probe(name: str, module: nn.Module, order: int) -> ProbeInfo:
    """The probe of a classifier's neural-collapse statistics (kind ``classes``): it shares the
    classifier's module name; ``width`` is the feature width d (the classifier's input)."""
    weight = getattr(module, "weight", None)
    width = int(weight.shape[1]) if weight is not None and weight.dim() == 2 else None
    return ProbeInfo(
        name=name[-MAX_NAME:],
        kind=ProbeKind.classes,
        module=type(module).__name__[:128],
        order=order,
        width=width,
        params=_numel(module),
    )


def run_config(
    config: dict[str, Any] | None, optimizer: Any, criterion: Any, every: int | None
) -> dict[str, Any]:
    """The user's config (made JSON-safe) plus what the SDK can tell cheaply; user keys win."""
    extra: dict[str, Any] = {"sampling_every": every if every is not None else "adaptive"}
    if optimizer is not None:
        extra["optimizer"] = type(optimizer).__name__
        groups = getattr(optimizer, "param_groups", None) or [{}]
        lr = groups[0].get("lr")
        if isinstance(lr, int | float):
            extra["lr"] = lr
    if criterion is not None:
        extra["criterion"] = type(criterion).__name__
    return {**extra, **(jsonable(config) if config else {})}


def build(
    *,
    run_id: uuid.UUID,
    project: str,
    name: str,
    config: dict[str, Any],
    started_at: datetime,
    probes: list[ProbeInfo],
) -> dict[str, Any]:
    """A validated ``RunInfo`` as a JSON-ready dict, built once and reused by every batch."""
    torch = sys.modules.get("torch")
    info = RunInfo(
        run_id=run_id,
        project=project,
        name=name,
        config=config,
        host=socket.gethostname()[:256],
        torch_version=str(getattr(torch, "__version__", ""))[:64],
        sdk_version=__version__,
        started_at=started_at,
        probes=probes,
    )
    return info.model_dump(mode="json")
