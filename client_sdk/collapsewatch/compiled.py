"""Sampled steps of a ``torch.compile``-d model run eagerly; the others run the compiled code.

A sampled step adds forward hooks and a torch function mode; traced by dynamo they broke the
graph (``time.perf_counter`` in the guard, the mode's class) and, as the hooks came and went,
recompiled the model on every sampled step until dynamo's cache limit made it give up. So while
a step is sampled, dynamo's stance is ``force_eager``: every compiled function runs its
original Python code, our hooks and mode see a plain eager model, and when the step ends the
stance in force before is restored. An unsampled step has no hook of ours on the model, so the
compiled code runs as compiled: no graph break, no recompile.

The cost: a sampled step runs at eager speed (one step in ``every``; bench/integrations.py
measures it). Nothing happens unless ``torch._dynamo`` is already imported, i.e. unless
something was compiled, and nothing is changed from inside a compiled region (a compiled
``optimizer.step``): dynamo refuses that, and the step then stays as it is.
"""

from __future__ import annotations

import sys
from typing import Any


class EagerWhileSampled:
    """Holds dynamo's ``force_eager`` stance from :meth:`enter` to :meth:`leave`."""

    def __init__(self) -> None:
        self._token: Any = None

    def enter(self) -> None:
        if self._token is not None:
            return
        dynamo = sys.modules.get("torch._dynamo")
        if dynamo is None:
            return  # nothing compiled yet: a model compiled later compiles on its next call
        try:
            self._token = dynamo.set_stance("force_eager")
        except RuntimeError:  # called inside a compiled region
            self._token = None

    def leave(self) -> None:
        token, self._token = self._token, None
        if token is not None:
            try:
                token.__exit__(None, None, None)
            except RuntimeError:  # inside a compiled region: keep it for the next leave
                self._token = token

    @property
    def active(self) -> bool:
        return self._token is not None
