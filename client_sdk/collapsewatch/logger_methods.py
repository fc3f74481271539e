"""The explicit loggers as methods of :class:`collapsewatch.Monitor` (a mixin, so the monitor's
own module stays about hooks and steps). Cadences and guarantees: :mod:`collapsewatch.loggers`.

Each method returns at once on a disabled monitor and, for the in-loop loggers, on an
unsampled step; otherwise it reduces its tensors on their device and returns. None raises.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from collapsewatch.loggers import MAX_PENDING
from collapsewatch.packing import StepPack
from collapsewatch.schemas import ProbeKind

if TYPE_CHECKING:
    import torch

    from collapsewatch.loggers import Loggers

_K = ProbeKind


class LoggerMethods:
    """``log_attention``, ``log_codes``, ``log_posterior``, ``log_routing`` (training loop) and
    ``log_tokens``, ``log_eval``, ``log_samples``, ``log_state`` (evaluations)."""

    _active: bool
    _loggers: Loggers
    _submit_pack: Callable[[StepPack], None]  # the monitor's: host copy, then the sender

    def _evaluation_logged(self) -> None:
        """Evaluation records wait for the end of their step; too many are copied now."""
        if self._loggers.pending >= MAX_PENDING:
            self._flush_evaluations()

    def _flush_evaluations(self) -> None:
        """Hand the evaluation records over (the training-loop ones of a step stay open)."""
        pack = StepPack()
        self._loggers.flush(pack, evaluations_only=True)
        self._submit_pack(pack)

    # ------------------------------------------------------------------- training loop

    def log_attention(self, name: str, probs: torch.Tensor) -> None:
        """Attention probabilities of a custom attention layer, ``[batch, heads, queries,
        keys]`` (rows summing to 1; masked keys exactly 0, as softmax gives after ``-inf``).

        Gives the normalised entropy per head (probe kind ``attention``), reduced for up to 4
        sequences x 64 queries of the call; a key counts as visible to a query when some head
        gives it a probability > 0. ``nn.MultiheadAttention`` layers (so
        ``nn.TransformerEncoderLayer`` and ``...DecoderLayer``) are watched without this
        call, fused kernels included.
        """
        if not (self._active and self._loggers.wants(_K.attention)):
            return
        from collapsewatch.attention import AttentionAccumulator

        self._loggers.add(name, _K.attention, AttentionAccumulator, lambda a: a.add_probs(probs))

    def log_codes(self, name: str, indices: torch.Tensor, num_codes: int) -> None:
        """The code indices a vector quantiser chose (any shape, integers in ``0..num_codes-1``;
        others, e.g. ``-1`` padding, are counted apart): codebook utilisation, dead codes and
        perplexity (probe kind ``codes``)."""
        if not (self._active and self._loggers.wants(_K.codes)):
            return
        from collapsewatch.latents import CodeAccumulator

        self._loggers.add(name, _K.codes, CodeAccumulator, lambda a: a.add(indices, num_codes))

    def log_posterior(self, name: str, mu: torch.Tensor, logvar: torch.Tensor) -> None:
        """A diagonal Gaussian posterior ``N(mu, exp(logvar))``, ``[batch, latent...]`` (every
        dimension after the first is a latent dimension): KL per dimension, active units and
        total KL (probe kind ``posterior``)."""
        if not (self._active and self._loggers.wants(_K.posterior)):
            return
        from collapsewatch.latents import PosteriorAccumulator

        self._loggers.add(name, _K.posterior, PosteriorAccumulator, lambda a: a.add(mu, logvar))

    def log_routing(
        self,
        name: str,
        router_logits: torch.Tensor,
        k: int = 1,
        *,
        capacity: int | None = None,
    ) -> None:
        """A mixture-of-experts router's logits, ``[tokens, experts]`` (leading dims are
        flattened into tokens); each token goes to its ``k`` largest logits, as the model
        routes it. ``capacity``: the most choices an expert takes in one call (one routed
        batch), to count dropped ones. Every call of a step must have the same number of
        experts and ``k``, and give a capacity on all or none. Gives load entropy, imbalance,
        dead experts, the auxiliary loss, the z-loss and, with a capacity, the dropped
        fraction (probe kind ``routing``)."""
        if not (self._active and self._loggers.wants(_K.routing)):
            return
        from collapsewatch.routing import RoutingAccumulator

        self._loggers.add(
            name, _K.routing, RoutingAccumulator, lambda a: a.add(router_logits, k, capacity)
        )

    # --------------------------------------------------------------------- evaluations

    def log_tokens(
        self,
        name: str,
        token_ids: torch.Tensor | Sequence[Sequence[int]],
        generation: int | None = None,
    ) -> None:
        """Generated token ids, ``[samples, length]`` (negative ids are padding: set your pad
        id to -1) or a list of sequences of any lengths: distinct-n, repetition and unigram
        entropy (probe kind ``text``); n-grams touching padding are left out. ``generation``
        numbers the rounds of a self-consuming loop (a model trained on its own samples)."""
        if not self._active:
            return
        from collapsewatch.generation import TextAccumulator

        self._loggers.add(name, _K.text, TextAccumulator, lambda a: a.add(token_ids, generation))
        self._evaluation_logged()

    def log_eval(
        self, name: str, nll_sum: torch.Tensor | float, token_count: torch.Tensor | int
    ) -> None:
        """Validation loss on fixed real data: the summed negative log-likelihood (nats) and
        the number of tokens (or samples) it sums over. Calls at one step add up, so call it
        per validation batch: the record holds the set's perplexity (probe kind ``eval``)."""
        if not self._active:
            return
        from collapsewatch.generation import EvalAccumulator

        self._loggers.add(name, _K.eval, EvalAccumulator, lambda a: a.add(nll_sum, token_count))
        self._evaluation_logged()

    def log_samples(
        self, name: str, samples: torch.Tensor, reference: torch.Tensor | None = None
    ) -> None:
        """Generated samples ``[n, ...]`` (each flattened to a vector) and, once or every time,
        real samples of the same shape: the diversity ratio (mean pairwise distance of the
        generated over the real ones) and the effective rank of the generated ones (probe kind
        ``samples``). Without ``reference``, the reduced statistics of the real samples of
        the last step that had some are used (the user's tensors are never kept)."""
        if not self._active:
            return
        from collapsewatch.samples import SampleAccumulator

        refs = self._loggers.memory(name)
        self._loggers.add(
            name,
            _K.samples,
            lambda: SampleAccumulator(refs),
            lambda a: a.add(samples, reference),
        )
        self._evaluation_logged()

    def log_state(
        self,
        name: str,
        hidden: torch.Tensor,
        positions: torch.Tensor | Sequence[int],
        *,
        train_length: int | None = None,
    ) -> None:
        """Recurrent or state-space states ``[batch, len(positions), dim]`` (or without the
        batch dim) at sequence ``positions``, typically log-spaced and past the training
        length: the state norm at the longest positions against the norm at ``train_length``
        (probe kind ``state``)."""
        if not self._active:
            return
        from collapsewatch.states import StateAccumulator

        self._loggers.add(
            name, _K.state, StateAccumulator, lambda a: a.add(hidden, positions, train_length)
        )
        self._evaluation_logged()
