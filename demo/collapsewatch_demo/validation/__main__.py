"""``python -m collapsewatch_demo.validation``: train the pairs, print the tables, and exit
non-zero when the held-out pairs that ran miss the bar of issue 10 (see ``judge``)."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Sequence

from collapsewatch_demo.validation.registry import HALVES


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m collapsewatch_demo.validation",
        description="Train collapse/control pairs into a real collapsewatch server and report "
        "how the default rules did against each run's brute-force truth.",
    )
    p.add_argument("--half", choices=(*HALVES, "all"), default="all")
    p.add_argument("--family", help="only this family (e.g. dead_units)")
    p.add_argument("--fast", action="store_true", help="only the quick subset")
    p.add_argument("--busy", action="store_true", help="a CPU-bound process runs beside training")
    p.add_argument("--server", help="an existing server URL (default: start one on a temp SQLite)")
    p.add_argument("--project", help="project of the runs (default: validation-<time>)")
    p.add_argument(
        "--report-only", action="store_true", help="exit 0 whatever the held-out figures"
    )
    p.add_argument("--list", action="store_true", help="list the pairs and exit")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # A terminated run unwinds like Ctrl-C, so the server and the busy neighbour it started
    # are stopped by their context managers instead of left running.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    from collapsewatch_demo.validation import pairs as _registered  # noqa: F401 - registers
    from collapsewatch_demo.validation.judge import summarise
    from collapsewatch_demo.validation.processes import local_server
    from collapsewatch_demo.validation.registry import select
    from collapsewatch_demo.validation.report import print_report
    from collapsewatch_demo.validation.runner import run_pairs

    chosen = select(args.half, args.family, args.fast)
    if args.list or not chosen:
        for pair in chosen:
            print(
                f"{pair.name:<34} {pair.family:<12} {pair.half:<8} {pair.steps:>5}  {pair.summary}"
            )
        if not chosen:
            print("no pair matches", file=sys.stderr)
        return 0 if args.list else 2
    project = args.project or time.strftime("validation-%Y%m%d-%H%M%S")
    print(
        f"validation: {len(chosen)} pairs, project {project}"
        f"{', beside a busy process' if args.busy else ''}",
        flush=True,
    )

    def log(line: str) -> None:
        print("  " + line, flush=True)

    if args.server:
        verdicts = run_pairs(chosen, args.server, project=project, busy=args.busy, log=log)
    else:
        with local_server() as url:
            verdicts = run_pairs(chosen, url, project=project, busy=args.busy, log=log)
    halves = [h for h in HALVES if any(p.half == h for p in chosen)]
    summaries = [summarise(verdicts, h) for h in halves]
    print()
    print_report(verdicts, summaries)
    heldout = [s for s in summaries if s.half == "heldout"]
    if args.report_only or not heldout or heldout[0].meets_bar:
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
