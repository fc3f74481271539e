"""Train the chosen pairs against a server and judge them."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from collapsewatch_demo.harness import train
from collapsewatch_demo.validation.judge import Server, Verdict, judge
from collapsewatch_demo.validation.processes import busy_neighbour
from collapsewatch_demo.validation.registry import Pair


def run_pairs(
    pairs: Sequence[Pair],
    server_url: str,
    *,
    project: str,
    busy: bool = False,
    log: Callable[[str], object] = print,
) -> list[Verdict]:
    """Train each pair's collapse run, then its control (runs ``<pair>-collapse`` and
    ``<pair>-control`` in ``project``), with a busy neighbour process while training when
    ``busy``; return the verdicts in the pairs' order."""
    server = Server(server_url)
    verdicts = []
    try:
        for pair in pairs:
            with busy_neighbour(busy):
                runs = [
                    train(
                        recipe,
                        server=server_url,
                        project=project,
                        run=f"{pair.name}-{role}",
                        log=log,
                    )
                    for role, recipe in (("collapse", pair.collapse), ("control", pair.control))
                ]
            verdicts.append(judge(server, project, pair, *runs))
    finally:
        server.close()
    return verdicts
