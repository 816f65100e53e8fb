"""The ``synth-engine`` command line: run | validate | bench | sim | inspect | view | export.

The only module that prints or exits. Exit codes: 0 done; 1 runtime error; 2 bad config
or input, or the output is locked by another run; 3 stopped early but resumable (budget,
watchdog); 4 stopped because an endpoint failed as a whole (key refused, limits a request
cannot fit, a wait over max_wait_s), resumable; 5 finished, but no row was kept;
130 interrupted (resumable).
"""

from __future__ import annotations

import logging
import sys

from ..errors import EngineError
from .outputs import cmd_export, cmd_inspect
from .parser import build_parser
from .run import cmd_run
from .runtime import EXIT_NOTHING_KEPT
from .serve import cmd_bench, cmd_sim, cmd_view
from .validate import cmd_validate

__all__ = ("EXIT_NOTHING_KEPT", "main")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``synth-engine`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="synth-engine: %(levelname)s: %(message)s", stream=sys.stderr
    )
    commands = {
        "run": cmd_run,
        "validate": cmd_validate,
        "sim": cmd_sim,
        "bench": cmd_bench,
        "inspect": cmd_inspect,
        "view": cmd_view,
        "export": cmd_export,
    }
    try:
        return commands[args.command](args)
    except EngineError as exc:
        print(f"synth-engine: error: {exc}", file=sys.stderr)
        return exc.exit_code
