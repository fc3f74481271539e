"""Neural-collapse statistics: the classifier's input features by class, and the classifier.

On a sampled step the features ``h`` (the classifier's input), its logits and the labels are
reduced on their device to sums (see ``schemas.ClassStat``): they add up across forward calls
of a step and across data-parallel ranks, so the server can merge records by addition.

NC1 and VCI need a pseudo-inverse, which a random projection inflates by about d/k. Instead,
sums of outer products are taken in a basis that contains the class means: the identity when
``d <= FULL_BASIS_MAX`` (exact, and the same on every step and rank), otherwise the lagged
basis, an orthonormal basis of the class means of the previous sampled step kept on the device.
``classifier.py`` finds the classifier and feeds this module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from collapsewatch.probes.activations import COV_DIM, projection

if TYPE_CHECKING:
    import torch

    from collapsewatch.pipeline.packing import StepPack

#: Classes tracked at most; a larger classifier (a vocabulary) keeps the most frequent ones.
TOP_CLASSES = 64
#: Widths up to this use the identity basis: d x d outer products, exact at any step.
FULL_BASIS_MAX = 128
#: Class sums with more values than this are sent JL-projected to ``COV_DIM`` dimensions.
MAX_SUM_VALUES = 65_536
_EPS = 1e-12


class ClassAccumulator:
    """Sums of one sampled step for a classifier with ``num_classes`` outputs.

    State kept between steps: the previous step's class means (for the lagged basis and the
    nearest-class-mean predictions of NC4) and, with more than ``top`` classes, running label
    counts that choose the tracked classes.
    """

    def __init__(
        self, num_classes: int, top: int = TOP_CLASSES, max_sum_values: int = MAX_SUM_VALUES
    ) -> None:
        self.num_classes = num_classes
        self.max_sum_values = max_sum_values
        self.topk = num_classes > top
        self.size = min(num_classes, top)  # C, classes tracked
        self.step = -1  # the step of the data in the sums
        self._sums: dict[str, torch.Tensor] = {}
        self._width = 0
        self._weights: torch.Tensor | None = None  # this step's classifier rows (C x d)
        self._basis: torch.Tensor | None = None  # d x C, lagged mode only
        self._identity = False
        self._lagged: torch.Tensor | None = None  # C x d class means of the last packed step
        self._known: torch.Tensor | None = None  # C, which lagged means exist
        self._counts: torch.Tensor | None = None  # num_classes running label counts (top-K)
        self._ids: torch.Tensor | None = None  # C tracked class ids, ascending (top-K)
        self._slot_of: torch.Tensor | None = None  # num_classes -> slot or -1 (top-K)

    @property
    def empty(self) -> bool:
        return not self._sums

    def add(
        self,
        features: torch.Tensor,
        logits: torch.Tensor | None,
        labels: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        step: int,
    ) -> None:
        """Add one forward call: ``features`` ``[..., d]``, ``logits`` ``[..., num_classes]``,
        integer ``labels`` with one entry per row (others, like ignore_index, are skipped).

        The classifier (``weight``, ``bias``) is read on the step's first call only. Call
        under ``no_grad``.
        """
        import torch

        x = features.reshape(-1, features.shape[-1]).float()
        y = labels.reshape(-1).long()
        if y.numel() != x.shape[0]:
            raise ValueError(f"{y.numel()} labels for {x.shape[0]} feature rows")
        first = self.empty
        if first:
            self._start(x, y, weight, bias, step)
        assert self._weights is not None
        dev, c = x.device, self.size
        inside = (y >= 0) & (y < self.num_classes)
        yc = y.clamp(0, self.num_classes - 1)
        if self.topk:
            assert self._counts is not None and self._slot_of is not None
            if not first:  # the first call counted its labels in _start
                self._counts.index_add_(0, yc, inside.float())
            slot = torch.where(inside, self._slot_of[yc], -1)
        else:
            slot = torch.where(inside, y, -1)
        # one-hot rows, zero for skipped labels: masks instead of indexing, so no device sync
        onehot = (slot[:, None] == torch.arange(c, device=dev)[None, :]).float()
        valid = onehot.sum(1)
        class_sum = onehot.T @ x
        inv_norm = torch.linalg.vector_norm(x, dim=1).clamp_min(_EPS).reciprocal()
        self._acc("n", onehot.sum(0))
        self._acc("sum", class_sum)
        self._acc("sqnorm", onehot.T @ (x * x).sum(1))
        self._acc("unit_sum", onehot.T @ (x * inv_norm[:, None]))
        self._acc("w_sum", self._weights @ class_sum.T)
        z = x if self._identity else (x @ self._basis if self._basis is not None else None)
        if z is not None:
            self._acc("basis_sum", onehot.T @ z)
            self._acc("basis_outer", (z * valid[:, None]).T @ z)
        if logits is not None and self._lagged is not None and self._known is not None:
            out = logits.reshape(-1, logits.shape[-1])
            if self.topk:
                assert self._ids is not None
                out = out[:, self._ids]
            lagged = self._lagged
            dist = (lagged * lagged).sum(1)[None, :] - 2 * x @ lagged.T
            dist = torch.where(self._known[None, :], dist, torch.inf)
            miss = (out.argmax(1) != dist.argmin(1)).float()
            self._acc("ncc_miss", (miss * valid).sum())
            self._acc("ncc_n", valid.sum())

    def _acc(self, key: str, value: torch.Tensor) -> None:
        # a new tensor, never in place: a packed step's tensors must stay as they were filed
        old = self._sums.get(key)
        self._sums[key] = value if old is None else old + value

    def _start(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        step: int,
    ) -> None:
        """First call of a step: choose the tracked classes, fix the basis, snapshot W."""
        import torch

        self.step = step
        d, dev = x.shape[1], x.device
        self._width = d
        self._identity = d <= FULL_BASIS_MAX
        # copies: a parameter's storage may be freed after the forward (FSDP reshards it)
        rows = weight.detach().float().clone()
        if self.topk:
            self._track(y)
            assert self._ids is not None
            rows = rows[self._ids]
            bias = None if bias is None else bias[self._ids]
        if self._lagged is not None and self._lagged.shape[1] != d:
            self._lagged = self._known = None  # another classifier width: start over
        if not self._identity and self._lagged is not None and self._known is not None:
            # columns of unknown classes are zero; QR still returns an orthonormal basis
            self._basis = torch.linalg.qr((self._lagged * self._known[:, None]).T).Q
        else:
            self._basis = None
        self._weights = rows.to(dev)
        self._sums["w_gram"] = self._weights @ self._weights.T
        self._sums["snapshots"] = torch.ones((), device=dev)
        if bias is not None:
            self._sums["bias"] = bias.detach().float().to(dev, copy=True)

    def _track(self, y: torch.Tensor) -> None:
        """Top-K mode: count the labels, choose the K most frequent classes, and carry the
        lagged means of classes that stay tracked over to their new slots."""
        import torch

        dev = y.device
        if self._counts is None:
            self._counts = torch.zeros(self.num_classes, device=dev)
        inside = (y >= 0) & (y < self.num_classes)
        self._counts.index_add_(0, y.clamp(0, self.num_classes - 1), inside.float())
        ids = torch.topk(self._counts, self.size).indices.sort().values
        slot_of = torch.full((self.num_classes,), -1, dtype=torch.long, device=dev)
        slot_of[ids] = torch.arange(self.size, device=dev)
        if self._slot_of is not None and self._lagged is not None and self._known is not None:
            old = self._slot_of[ids]
            keep = old >= 0
            self._lagged = self._lagged[old.clamp_min(0)] * keep[:, None]
            self._known = self._known[old.clamp_min(0)] & keep
        self._ids, self._slot_of = ids, slot_of

    def pack(self, stats: dict[str, Any], pack: StepPack) -> None:
        """File the step's ``ClassStat`` values into a record, then keep this step's class
        means as the next step's lagged means and reset the sums."""
        sums, self._sums = self._sums, {}
        d, c = self._width, self.size
        stats["width"] = float(d)
        stats["classes"] = float(c)
        class_sum = sums["sum"]
        sent = class_sum
        if c * d > self.max_sum_values:
            sent = class_sum @ projection(d, class_sum.device, class_sum.dtype)
        unit_sum = sums["unit_sum"]
        if d > COV_DIM:
            if self._basis is not None:
                # The mean unit vectors lie mostly in the span of the class means (all the more
                # after a ReLU, whose common offset they share): send that part exactly and
                # project only the rest, whose JL error is then a fraction of a small number.
                in_basis = unit_sum @ self._basis
                sums["unit_basis_sum"] = in_basis
                unit_sum = unit_sum - in_basis @ self._basis.T
            unit_sum = unit_sum @ projection(d, unit_sum.device, unit_sum.dtype)
        sums.update(sum=sent, unit_sum=unit_sum)
        for key, value in sums.items():  # matrices go flat, row-major
            pack.put(stats, key, value.reshape(-1) if value.dim() else value)
        if self.topk or not self._identity:
            # the tracked classes or the lagged basis come from this rank's own labels and
            # means: another rank's sums are in other coordinates and cannot be added
            pack.rank_local(stats)
        self.update_lagged(class_sum, sums["n"])
        self._weights = None

    def clear(self) -> None:
        """Drop the sums of an unfinished step; the lagged means stay."""
        self._sums = {}
        self._weights = None

    def update_lagged(self, class_sum: torch.Tensor, counts: torch.Tensor) -> None:
        """Keep the class means of ``class_sum``/``counts`` (C x d, C) for the next step; a class
        absent from them keeps its older mean. Ranks that pass the same (all-reduced) sums get
        the same basis, so their records add up."""
        import torch

        have = counts > 0
        means = class_sum / counts.clamp_min(1)[:, None]
        if self._lagged is None or self._known is None or self._lagged.shape != means.shape:
            self._lagged, self._known = means * have[:, None], have
        else:
            self._lagged = torch.where(have[:, None], means, self._lagged)
            self._known = self._known | have
