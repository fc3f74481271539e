"""Indicators, one module per family; importing this package registers the whole catalogue."""

from collapsewatch_server.indicators import activations, neural, sparsity, tokens, training
from collapsewatch_server.indicators.registry import CATALOGUE, Indicator, compute_indicators

__all__ = [
    "CATALOGUE",
    "Indicator",
    "activations",
    "compute_indicators",
    "neural",
    "sparsity",
    "tokens",
    "training",
]
