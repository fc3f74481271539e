"""Indicators, one module per family; importing this package registers the whole catalogue."""

from collapsewatch_server.indicators import (
    activations,
    attention,
    codebook,
    diversity,
    generative,
    neural,
    posterior,
    routing,
    sparsity,
    state,
    tokens,
    training,
)
from collapsewatch_server.indicators.registry import CATALOGUE, Indicator, compute_indicators

__all__ = [
    "CATALOGUE",
    "Indicator",
    "activations",
    "attention",
    "codebook",
    "compute_indicators",
    "diversity",
    "generative",
    "neural",
    "posterior",
    "routing",
    "sparsity",
    "state",
    "tokens",
    "training",
]
