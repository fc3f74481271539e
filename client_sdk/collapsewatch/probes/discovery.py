"""What to watch in a model: the probes its modules call for, in model order.

- the outputs (:class:`ActivationProbe`) of every layer: ``nn.Linear``, ``nn.ConvNd``,
  ``nn.ConvTransposeNd``, Hugging Face's ``Conv1D`` (GPT-2's linear layers) and the hidden
  states of ``nn.LSTM``/``nn.GRU``/``nn.RNN``; Linears inside an ``nn.MultiheadAttention`` are
  skipped (it reads their weights and never calls them, so their hooks would never fire);
- every ``nn.Tanh`` and ``nn.Sigmoid``: saturation (:class:`SaturationProbe`), its units in the
  channel dim when the last layer before it in model order is convolutional;
- transformer blocks: token statistics of their output, the residual stream
  (:class:`TokenProbe`): ``nn.TransformerEncoderLayer``/``DecoderLayer``, the blocks given as
  ``watch(..., blocks=[...])`` (and the blocks nested in those), and the repeated blocks of any
  model: two or more modules of one class with modules of their own in one ``nn.ModuleList``
  or ``nn.Sequential`` (nanoGPT's ``Block``, Hugging Face's ``GPT2Block``...), the outermost
  such only; a repeated block whose calls do not map ``[batch, seq, dim]`` to the same shape
  (a stack of conv or MLP blocks) is dropped at its first call;
- every ``nn.MultiheadAttention`` (one given as a block stays a block): attention entropy
  (:class:`AttentionProbe`); attention computed by ``F.scaled_dot_product_attention`` is found
  by :class:`collapsewatch.probes.functions.FunctionProbe` as it is called;
- the trainable parameters, each once, named by their path.

The last layer of each block (but the model's last layer) is marked a branch output
(:attr:`ActivationProbe.branch_output`): complete collapse is not judged there.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from collapsewatch.probes.activation_functions import SaturationProbe
from collapsewatch.probes.activations import ActivationProbe, LayerOutputs
from collapsewatch.probes.attention import AttentionProbe
from collapsewatch.probes.base import MAX_NAME, Probe
from collapsewatch.probes.inputs import DataRank
from collapsewatch.probes.tokens import TokenProbe

if TYPE_CHECKING:
    import torch
    from torch import nn

Params = list[tuple[str, "torch.Tensor"]]


def spatial_dims(module: nn.Module) -> int | None:
    """For a layer whose outputs are watched, the dims after its units: N for a (transposed)
    ConvNd, whose units are the channels; 0 for the others, whose units are the last dim.
    None for any other module."""
    from torch import nn

    if isinstance(module, nn.Linear | nn.RNNBase) or _is_hf_conv1d(module):
        return 0
    for dims, classes in (
        (1, (nn.Conv1d, nn.ConvTranspose1d)),
        (2, (nn.Conv2d, nn.ConvTranspose2d)),
        (3, (nn.Conv3d, nn.ConvTranspose3d)),
    ):
        if isinstance(module, classes):
            return dims
    return None


def _is_hf_conv1d(module: nn.Module) -> bool:
    """Hugging Face's ``Conv1D`` (GPT-2): a linear layer with its weight ``[in, out]``."""
    weight = getattr(module, "weight", None)
    return (
        type(module).__name__ == "Conv1D"
        and isinstance(getattr(module, "nf", None), int)
        and getattr(weight, "dim", lambda: 0)() == 2
    )


def input_dim(module: nn.Module) -> int | None:
    """The dimension of what one output row is computed from: ``in_features`` of a Linear,
    ``in_channels x kernel size`` of a (transposed) ConvNd (all channels: a grouped conv's
    outputs together see them all), the rows of a ``Conv1D``'s weight. The output's rank cannot
    exceed it, so an expanding layer (32 -> 256) is judged against 32, not 256. None for a
    recurrent layer, whose state mixes every earlier input."""
    in_features = getattr(module, "in_features", None)
    if isinstance(in_features, int):
        return in_features
    if _is_hf_conv1d(module):
        weight: Any = module.weight
        return int(weight.shape[0])
    channels, kernel = getattr(module, "in_channels", None), getattr(module, "kernel_size", None)
    if isinstance(channels, int) and isinstance(kernel, tuple):
        return channels * math.prod(kernel)
    return None


def output_width(module: nn.Module) -> int | None:
    """Units of a watched layer's output."""
    from torch import nn

    if isinstance(module, nn.RNNBase):
        size = getattr(module, "proj_size", 0) or module.hidden_size  # an LSTM may project
        return int(size) * (2 if module.bidirectional else 1)
    if _is_hf_conv1d(module):
        nf: Any = module.nf
        return int(nf)
    width = getattr(module, "out_features", None) or getattr(module, "out_channels", None)
    return width if isinstance(width, int) else None


def repeated_blocks(model: nn.Module) -> list[nn.Module]:
    """The outermost repeated blocks of ``model``: modules of one class that occur two or more
    times in one ``nn.ModuleList`` or ``nn.Sequential`` and have modules of their own (not
    containers: a ``Sequential`` of layers is not a token block)."""
    found: list[nn.Module] = []
    inside: set[int] = set()  # modules within a found block
    for group in _repeated_groups(model):
        first = group[0]
        if id(first) in inside or _is_container(first) or spatial_dims(first) is not None:
            continue
        found += group
        inside.update(id(m) for b in group for m in b.modules())
    return found


def _is_container(module: nn.Module) -> bool:
    from torch import nn

    return isinstance(module, nn.ModuleList | nn.Sequential | nn.ModuleDict)


def _structure(module: nn.Module) -> object:
    """What makes two blocks "the same block": the class, and for a container (``Sequential``
    of layers, say) the structures of its children in order."""
    if _is_container(module):
        return (type(module), tuple(_structure(c) for c in module.children()))
    return type(module)


def _repeated_groups(model: nn.Module) -> Iterator[list[nn.Module]]:
    """In model order, every group of two or more children of one ``nn.ModuleList`` or
    ``nn.Sequential`` that have modules of their own and the same :func:`_structure` (groups
    nested in other groups too)."""
    from torch import nn

    for container in model.modules():
        if not isinstance(container, nn.ModuleList | nn.Sequential):
            continue
        by_structure: dict[object, list[nn.Module]] = {}
        for child in container.children():
            if next(child.children(), None) is not None:
                by_structure.setdefault(_structure(child), []).append(child)
        yield from (group for group in by_structure.values() if len(group) >= 2)


def probe_name(path: str, module: nn.Module) -> str:
    """A module's probe name: its path in the model (the root: its class name), at most
    ``MAX_NAME`` characters, keeping the more specific tail."""
    return (path or type(module).__name__)[-MAX_NAME:]


def find_probes(
    model: nn.Module,
    blocks: Iterable[nn.Module] = (),
    outputs: LayerOutputs | None = None,
    data: DataRank | None = None,
) -> list[Probe]:
    """The module probes of ``model`` in model order; see the module docstring. ``outputs``
    is told of every watched layer's output on sampled steps; ``data`` (the model input's
    rank) goes into every layer's records.

    Raises:
        ValueError: a block in ``blocks`` is not part of ``model``.
    """
    from torch import nn

    chosen = {id(b) for b in blocks}
    repeated = {id(b) for b in repeated_blocks(model)} - chosen
    found: list[Probe] = []
    watched_blocks: set[int] = set()
    attention: list[str] = []
    spatial = 0  # of the last Linear/Conv seen: where a following Tanh/Sigmoid has its units
    for path, module in model.named_modules():
        name = probe_name(path, module)
        dims = spatial_dims(module)
        inside_attention = any(path.startswith(prefix + ".") for prefix in attention)
        if dims is not None:
            spatial = dims
            if not inside_attention:
                width = output_width(module)
                probe = ActivationProbe(name, module, dims, input_dim(module), width, outputs, data)
                found.append(probe)
        elif isinstance(module, nn.Tanh | nn.Sigmoid):
            found.append(SaturationProbe(name, module, spatial))
        elif id(module) in chosen or isinstance(
            module, nn.TransformerEncoderLayer | nn.TransformerDecoderLayer
        ):
            width = getattr(getattr(module, "linear2", None), "out_features", None)
            found.append(TokenProbe(name, module, width))
            watched_blocks.add(id(module))
        elif id(module) in repeated:
            found.append(TokenProbe(name, module, found=True))
        elif isinstance(module, nn.MultiheadAttention):
            found.append(AttentionProbe(name, module))
        if isinstance(module, nn.MultiheadAttention):
            attention.append(path)
    missing = chosen - watched_blocks
    if missing:
        raise ValueError(f"collapsewatch: {len(missing)} of the blocks are not part of the model")
    _mark_branch_outputs(model, found, watched_blocks | repeated)
    return found


def _mark_branch_outputs(model: nn.Module, found: list[Probe], blocks: set[int]) -> None:
    """Mark the last watched layer inside each block (``blocks``, ids of the token blocks, and
    every child of a ``ModuleList``/``Sequential`` repeated with the same structure, such as
    ``Sequential(LayerNorm, Linear, ReLU, Linear)`` residual MLP blocks), unless it is the
    model's last watched layer (an embedding or logits made by the last block)."""
    layers = {id(p.module): p for p in found if isinstance(p, ActivationProbe)}
    if not layers:
        return
    final = next(p for p in reversed(found) if isinstance(p, ActivationProbe))
    chosen = [m for m in model.modules() if id(m) in blocks]
    chosen += [block for group in _repeated_groups(model) for block in group]
    for block in chosen:
        inner = [layers[id(m)] for m in block.modules() if id(m) in layers]
        if inner and inner[-1] is not final:
            inner[-1].branch_output = True


def trainable_parameters(model: nn.Module) -> tuple[Params, dict[str, str]]:
    """The trainable parameters in model order, each once, named by their path; and the class
    name of the module holding each."""
    params: Params = []
    modules: dict[str, str] = {}
    seen: set[int] = set()
    for path, module in model.named_modules():
        for pname, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            full = (f"{path}.{pname}" if path else pname)[-MAX_NAME:]
            params.append((full, param))
            modules[full] = type(module).__name__
    return params, modules
