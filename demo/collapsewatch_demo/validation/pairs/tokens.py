"""Family 4, token uniformity / rank collapse: mechanisms none of them the scenario's (24
untrained attention layers without skips on Gaussian tokens, handed over as ``blocks=``).

The models are hand-written (the transformers' blocks in :mod:`.blocks`, a graph network's
layers here): the SDK finds the repeated blocks itself. The truth is the mean pairwise cosine
of the tokens (a graph's nodes) of each block's output, over every pair of positions of every
sequence of a fixed held-out batch; collapsed above 0.9. Values are measured
by ``harness.train`` without the SDK on one CPU thread of an idle 2-core machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from collapsewatch_demo import reference
from collapsewatch_demo.data import Shapes, heldout_generator
from collapsewatch_demo.harness import Batch, Recipe, Setup
from collapsewatch_demo.validation.pairs.blocks import Block, Norm, Trunk, token_cosines
from collapsewatch_demo.validation.registry import Pair, register


def motif_sequences(n: int, length: int, vocab: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` sequences of ``length`` tokens, each a random motif of 3-8 tokens repeated: the
    next token is predictable from the previous period (an induction task)."""
    period = torch.randint(3, 9, (n, 1), generator=generator)
    motifs = torch.randint(0, vocab, (n, 8), generator=generator)
    return motifs.gather(1, torch.arange(length).view(1, length) % period)


class TinyGPT(nn.Module):
    """A causal :class:`Trunk` and a linear head over the vocabulary: nanoGPT's shape. The
    logits come flattened to ``[batch * seq, vocab]``."""

    def __init__(
        self, vocab: int, length: int, dim: int, depth: int, heads: int, **block: Any
    ) -> None:
        super().__init__()
        self.trunk = Trunk(vocab, length, dim, depth, heads, causal=True, **block)
        self.head = nn.Linear(dim, vocab)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(idx)).flatten(0, 1)


class FlatTargets(nn.Module):
    """Cross-entropy of ``[batch * seq, vocab]`` logits against ``[batch, seq]`` targets."""

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, targets.flatten())


@dataclass(frozen=True)
class MotifGPT(Recipe):
    """Next-token prediction of repeated motifs (V = 48, T = 24) by a :class:`TinyGPT` of six
    pre-LN blocks (d = 32, 4 heads), AdamW 3e-3, batch 16, 500 steps. Without the skip
    connections each block's causal averaging aligns the tokens: the last blocks read
    above 0.9 from the first step and 1.0 at the end, every block 0.94-1.0 at the end (seed
    0); with them the worst block peaks at 0.78 and ends at 0.45 (seed 0). About 15 s of CPU
    a run."""

    family: ClassVar[str] = "tokens"
    residual: bool = True
    steps: int = 500
    vocab: ClassVar[int] = 48
    length: ClassVar[int] = 24
    task_seed: ClassVar[int] = 941

    def build(self) -> Setup:
        model = TinyGPT(self.vocab, self.length, 32, 6, 4, residual=self.residual)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        heldout = motif_sequences(
            128, self.length + 1, self.vocab, heldout_generator(self.task_seed)
        )
        return Setup(model, opt, FlatTargets(), heldout[:, :-1])

    def batch(self, step: int, generator: torch.Generator) -> Batch:
        seq = motif_sequences(16, self.length + 1, self.vocab, generator)
        return seq[:, :-1], seq[:, 1:]

    def reference(self) -> reference.Reference:
        return reference.tokens(*(f"trunk.blocks.{i}" for i in range(6)))

    def reference_values(self, model: nn.Module, heldout: torch.Tensor) -> dict[str, float]:
        return token_cosines(model, self.reference().layers, lambda: model(heldout))


class PatchViT(nn.Module):
    """A vision transformer on one-channel images: 4x4 patches embedded by a Linear, learned
    positions, ``depth`` bidirectional :class:`Block`s, mean pooling, a linear head."""

    def __init__(
        self,
        size: int,
        dim: int,
        depth: int,
        heads: int,
        classes: int,
        *,
        residual: bool,
        norm: Norm,
    ) -> None:
        super().__init__()
        self.patches = (size // 4) ** 2
        self.embed = nn.Linear(16, dim)
        self.pos = nn.Parameter(torch.randn(self.patches, dim) * 0.1)
        self.blocks = nn.ModuleList(
            Block(dim, heads, causal=False, norm=norm, residual=residual) for _ in range(depth)
        )
        self.head = nn.Linear(dim, classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        p = F.unfold(images, 4, stride=4).transpose(1, 2)  # [b, patches, 16]
        x = self.embed(p) + self.pos
        for block in self.blocks:
            x = block(x)
        return self.head(x.mean(1))


@dataclass(frozen=True)
class ShapesViT(Recipe):
    """Four shapes in 16x16 images as 16 patches; :class:`PatchViT` with six post-LN blocks
    (d = 32, 2 heads), SGD 0.02 with momentum 0.9, batch 32, 800 steps. Without the skip
    connections the first block's near-uniform attention gives every patch the same vector and
    its LayerNorm keeps them so: 1.0 on every block from step 0 to the end, loss stuck at log
    4 (seed 0); with them the blocks start at 0.51-0.63 and the last one peaks at 0.87.
    About 20 s of CPU a run."""

    family: ClassVar[str] = "tokens"
    residual: bool = True
    steps: int = 800
    data: ClassVar[Shapes] = Shapes(16, task_seed=942)

    def build(self) -> Setup:
        model = PatchViT(16, 32, 6, 2, Shapes.CLASSES, residual=self.residual, norm="post")
        opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
        return Setup(model, opt, nn.CrossEntropyLoss(), self.data.heldout()[:256])

    def batch(self, step: int, generator: torch.Generator) -> Batch:
        return self.data.sample(32, generator)

    def reference(self) -> reference.Reference:
        return reference.tokens(*(f"blocks.{i}" for i in range(6)))

    def reference_values(self, model: nn.Module, heldout: torch.Tensor) -> dict[str, float]:
        return token_cosines(model, self.reference().layers, lambda: model(heldout))


class CommunityGraphs:
    """Graphs of ``nodes`` nodes in ``communities`` equal communities (a stochastic block
    model: an edge within a community with probability ``p_in``, across with ``p_out``), the
    nodes in random order; each node's features are its community's mean (fixed by
    ``task_seed``) plus unit Gaussian noise, its label the community. A batch of graphs is one
    tensor ``[graphs, nodes, features + nodes]``: the features, then the row of the
    row-normalised adjacency with self-loops that a GCN layer averages with."""

    def __init__(
        self, nodes: int, communities: int, features: int, p_in: float, p_out: float, task_seed: int
    ) -> None:
        g = torch.Generator().manual_seed(task_seed)
        self.means = torch.randn(communities, features, generator=g)
        self.nodes, self.communities, self.features = nodes, communities, features
        self.p_in, self.p_out, self.task_seed = p_in, p_out, task_seed

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        blocks = torch.arange(self.nodes) * self.communities // self.nodes
        order = torch.rand(n, self.nodes, generator=generator).argsort(1)
        labels = blocks[order]  # [n, nodes]
        same = labels.unsqueeze(2) == labels.unsqueeze(1)
        p = torch.where(same, self.p_in, self.p_out)
        edges = (torch.rand(n, self.nodes, self.nodes, generator=generator) < p).triu(1)
        adj = (edges | edges.transpose(1, 2) | torch.eye(self.nodes, dtype=torch.bool)).float()
        adj = adj / adj.sum(2, keepdim=True)
        x = self.means[labels] + torch.randn(n, self.nodes, self.features, generator=generator)
        return torch.cat((x, adj), 2), labels

    def heldout(self) -> torch.Tensor:
        return self.sample(64, heldout_generator(self.task_seed))[0]


class GraphConv(nn.Module):
    """One GCN layer on a batch of graphs, ``ReLU(A X W + b)``, then PairNorm when
    ``pair_norm``: the node states centred over their graph and scaled to unit mean squared
    norm (Zhao and Akoglu 2020, PairNorm-SI with s = 1)."""

    def __init__(self, dim: int, pair_norm: bool) -> None:
        super().__init__()
        self.lin = nn.Linear(dim, dim)
        self.pair_norm = pair_norm

    def forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        h = torch.relu(adj @ self.lin(x))
        if not self.pair_norm:
            return h
        h = h - h.mean(1, keepdim=True)
        return h / h.square().sum(2).mean(1).add(1e-6).sqrt().view(-1, 1, 1)


class DeepGCN(nn.Module):
    """A Linear embedding of the node features, ``depth`` :class:`GraphConv` layers in a
    ModuleList and a linear node classifier; the logits come flattened to
    ``[graphs * nodes, classes]``. Input: a :class:`CommunityGraphs` batch."""

    def __init__(self, features: int, dim: int, depth: int, classes: int, pair_norm: bool) -> None:
        super().__init__()
        self.features = features
        self.embed = nn.Linear(features, dim)
        self.blocks = nn.ModuleList(GraphConv(dim, pair_norm) for _ in range(depth))
        self.head = nn.Linear(dim, classes)

    def forward(self, graphs: torch.Tensor) -> torch.Tensor:
        x, adj = graphs[..., : self.features], graphs[..., self.features :]
        h = self.embed(x)
        for block in self.blocks:
            h = block(h, adj)
        return self.head(h).flatten(0, 1)


@dataclass(frozen=True)
class CommunityGCN(Recipe):
    """Node classification on stochastic-block-model graphs (32 nodes, 4 communities, edge
    probabilities 0.4 within and 0.1 across, 16-D noisy features) by a :class:`DeepGCN` of ten
    layers (d = 32), Adam 1e-2 with weight decay 5e-4 (Kipf and Welling's GCN recipe), batch 16
    graphs, 300 steps. The "tokens" are a graph's nodes. Without normalisation ten rounds of
    neighbourhood averaging leave every node of a graph with the same state (over-smoothing):
    0.91 at the second layer and 1.0 from the fourth at step 0, 1.0 on every layer from the
    first evaluated step to the end, the loss stuck at log 4 (seed 0); PairNorm re-centres the
    states over each graph: -0.03 to 0.04 on every layer all along, the loss falls to 0.62
    (seed 0). About 10-20 s a run."""

    family: ClassVar[str] = "tokens"
    pair_norm: bool = True
    steps: int = 300
    depth: ClassVar[int] = 10
    data: ClassVar[CommunityGraphs] = CommunityGraphs(32, 4, 16, 0.4, 0.1, task_seed=943)

    def build(self) -> Setup:
        model = DeepGCN(16, 32, self.depth, 4, self.pair_norm)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=5e-4)
        return Setup(model, opt, FlatTargets(), self.data.heldout())

    def batch(self, step: int, generator: torch.Generator) -> Batch:
        return self.data.sample(16, generator)

    def reference(self) -> reference.Reference:
        return reference.tokens(*(f"blocks.{i}" for i in range(self.depth)))

    def reference_values(self, model: nn.Module, heldout: torch.Tensor) -> dict[str, float]:
        return token_cosines(model, self.reference().layers, lambda: model(heldout))


register(
    Pair(
        "tokens-motif-gpt-no-residual",
        "nanoGPT-style causal LM (SDPA, ModuleList of blocks) without skip connections: every "
        "block's tokens align (control: with skips)",
        MotifGPT(residual=False),
        MotifGPT(residual=True),
    )
)
register(
    Pair(
        "tokens-vit-post-ln-no-skip",
        "post-LN patch transformer on shape images without skip connections: one vector per "
        "image from the first block (control: with skips)",
        ShapesViT(residual=False),
        ShapesViT(residual=True),
    )
)
register(
    Pair(
        "tokens-gcn-oversmoothing-300",
        "ten-layer graph convolutional network on community graphs, Adam: neighbourhood "
        "averaging gives every node of a graph the same state (control: PairNorm)",
        CommunityGCN(pair_norm=False),
        CommunityGCN(pair_norm=True),
    )
)
