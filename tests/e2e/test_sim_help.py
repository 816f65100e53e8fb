"""Every option of ``synth-engine sim`` has help text and says its default, as printed by
``synth-engine sim --help`` (and as declared on the parser, so a new option without help
fails here)."""

from __future__ import annotations

import argparse
import re

from engine.cli.parser import build_parser
from tests.conftest import run_cli


def _sim_parser() -> argparse.ArgumentParser:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            sim = action.choices["sim"]
            assert isinstance(sim, argparse.ArgumentParser)
            return sim
    raise AssertionError("no sim subcommand")


def _blocks(help_text: str) -> dict[str, str]:
    """Option (its first long name) -> its help block as printed, joined on one line."""
    options = help_text.split("\noptions:\n", 1)[1]
    blocks: dict[str, str] = {}
    current = ""
    for line in options.splitlines():
        start = re.match(r"  (-\w, )?(--[\w-]+)", line)
        if start:
            current = start.group(2)
            blocks[current] = line[start.end() :]
        elif current:
            blocks[current] += " " + line.strip()
    return {k: " ".join(v.split()) for k, v in blocks.items()}


def test_every_sim_option_has_help_and_its_default() -> None:
    parser = _sim_parser()
    # Hidden options (help=SUPPRESS, e.g. the refused --api-key) are not shown, by design.
    declared = [
        a
        for a in parser._actions
        if a.option_strings
        and not isinstance(a, argparse._HelpAction)
        and a.help != argparse.SUPPRESS
    ]
    assert len(declared) >= 14
    proc = run_cli("sim", "--help")
    assert proc.returncode == 0, proc.stderr
    blocks = _blocks(proc.stdout)
    for action in declared:
        name = next(o for o in action.option_strings if o.startswith("--"))
        assert action.help and action.help.strip(), f"{name} has no help"
        block = blocks[name]
        # the help text itself, then its default: "(default: X)" from the formatter, or a
        # "default: ..." the help writes out where the value needs words
        words = action.help.split()[:3]
        assert " ".join(words) in block, (name, block)
        assert re.search(r"\(default: [^)]+\)|default: \w", block), f"{name}: {block}"
    assert set(blocks) == {
        next(o for o in a.option_strings if o.startswith("--")) for a in declared
    } | {"--help"}
