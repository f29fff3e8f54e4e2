"""Every ``hubctl`` and ``hub-agent`` verb, as argparse knows it, is documented in the
README or docs/operations.md (as sqlite-utils' tests/test_docs.py does for its CLI)."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub_agent.cli import build_parser as agent_parser
from provisioning.cli import build_parser as hubctl_parser

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", ROOT / "docs" / "operations.md"]


def verbs(p: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name)
                yield from verbs(sub, (*path, name))


def commands() -> list[str]:
    out = [" ".join(("hubctl", *v)) for v in verbs(hubctl_parser())]
    return out + [" ".join(("hub-agent", *v)) for v in verbs(agent_parser())]


def documented(command: str, text: str) -> bool:
    """``hubctl content`` must appear as such; a sub-verb (``hubctl content add``) may be
    written out or listed on a line naming its parent (``hubctl content add|list``)."""
    *parent, last = command.split()
    if len(parent) == 1:
        return re.search(rf"{re.escape(command)}\b", text) is not None
    head = " ".join(parent)
    return any(
        re.search(rf"(?<![\w-]){re.escape(last)}(?![\w-])", line[line.index(head) + len(head) :])
        for line in text.splitlines()
        if head in line
    )


@pytest.mark.parametrize("command", commands())
def test_every_verb_is_documented(command: str) -> None:
    text = "\n".join(p.read_text(encoding="utf-8") for p in DOCS)
    assert documented(command, text), f"`{command}` is in the CLI but not in README or docs"


def test_the_check_catches_a_missing_verb() -> None:
    assert not documented("hubctl teleport", "`hubctl content add|list`")
    assert documented("hubctl content list", "`hubctl content add|list|assign`")
    assert not documented("hubctl content remove", "`hubctl content add|list|assign`")
