"""Every command's help says what each option does and what it is when not given."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from collector.cli.parser import build_parser


def _commands() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    yield from sub.choices.items()


def _options(parser: argparse.ArgumentParser) -> Iterator[tuple[argparse.Action, str]]:
    """Each option but -h, with its help as printed (before wrapping)."""
    formatter = parser._get_formatter()
    for action in parser._actions:
        if action.option_strings and action.default is not argparse.SUPPRESS:
            yield action, formatter._expand_help(action) if action.help else ""


@pytest.mark.parametrize(("name", "parser"), list(_commands()))
def test_every_option_states_its_default(name: str, parser: argparse.ArgumentParser) -> None:
    for action, text in _options(parser):
        flag = action.option_strings[0]
        assert text, f"{name} {flag} has no help"
        if action.required or action.nargs == 0:  # a flag is off unless given
            continue
        if action.default is None or action.default == []:
            assert "default" in text, f"{name} {flag}: what is it when not given? {text!r}"
        else:  # the value itself, as argparse prints it or with thousands separators
            said = {str(action.default), f"{action.default:,}" if isinstance(action.default, int) else ""}
            assert any(f"default: {v}" in text for v in said if v), f"{name} {flag}: {text!r}"


def test_the_rate_is_stated_as_each_command_has_it() -> None:
    commands = dict(_commands())
    demo = {a.option_strings[0]: t for a, t in _options(commands["demo"])}
    emulate = {a.option_strings[0]: t for a, t in _options(commands["emulate"])}
    assert demo["--rate"].endswith("(default: 200.0)") and "--market" not in demo["--rate"]
    assert "(default: 50; with --market: 0, its own pace)" in emulate["--rate"]
    assert demo["--seconds"].endswith("(default: 30.0)")
    assert demo["--destination"].endswith("(default: demo-landing)")
    assert emulate["--host"].endswith("(default: 127.0.0.1)") and emulate["--port"].endswith(
        "(default: 9443)"
    )
    help_text = commands["demo"].format_help()
    assert "(default: 200.0)" in help_text and "default 50" not in help_text
