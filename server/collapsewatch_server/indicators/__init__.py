"""Indicators, one module per family; importing this package registers the whole catalogue
(:mod:`.catalogue`)."""

from collapsewatch_server.indicators import (  # noqa: F401  (each module registers its family)
    activations,
    attention,
    codebook,
    diversity,
    generative,
    neural_collapse,
    posterior,
    routing,
    sparsity,
    state,
    token_uniformity,
    training,
)
from collapsewatch_server.indicators.catalogue import CATALOGUE, Indicator, compute_indicators

__all__ = ["CATALOGUE", "Indicator", "compute_indicators"]
