"""The README is the front door: it must stay true to the code it describes."""

from __future__ import annotations

import re
from pathlib import Path

from wsgibridge.cli import build_parser

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")


def test_every_command_line_option_is_documented() -> None:
    """Each option `wsgibridge --help` lists appears in the README's text."""
    flags = {
        flag
        for action in build_parser()._actions
        for flag in action.option_strings
        if flag.startswith("--")
        and flag not in ("--help", "--version")
        and not flag.startswith("--no-")
    }
    missing = sorted(flag for flag in flags if f"`{flag}" not in README)
    assert missing == []


def test_no_option_the_command_line_does_not_have() -> None:
    """No documented `--option` that the CLI would refuse (exit 2)."""
    known = {flag for action in build_parser()._actions for flag in action.option_strings}
    documented = set(re.findall(r"`(--[a-z][a-z0-9-]*)", README))
    assert sorted(documented - known) == []


def test_examples_named_in_the_readme_exist() -> None:
    root = Path(__file__).parent.parent
    for name in re.findall(r"`(examples/[\w./-]+)`", README):
        assert (root / name).exists(), name
