"""The benchmark shell scripts call evspec verbs with options those verbs really have.

The GPU scripts run once per session on a lent machine; an option renamed in the CLI (as
``collect --shard`` became ``--chunk-idx``) would otherwise only show there, as a failed
phase.  This reads every ``-m evspec VERB [SUBVERB]`` command of ``benchmarks/*.sh``
(continuation lines joined, ``"${ARRAY[@]}"`` expanded from the script's own ``ARRAY=(...)``
definitions) and checks each ``--option`` against the click command behind the verb.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from typing import Any

import pytest
import typer

from evspec.cli import app

SCRIPTS = sorted((Path(__file__).resolve().parents[2] / "benchmarks").glob("*.sh"))
_ARRAY = re.compile(r"^\s*(?:local\s+)?([A-Z_][A-Z0-9_]*)=\((.*)\)\s*(?:;.*)?$")
_USE = re.compile(r'"\$\{([A-Z_][A-Z0-9_]*)\[@\]\}"')


def _logical_lines(text: str) -> list[str]:
    return text.replace("\\\n", " ").splitlines()


def _arrays(lines: list[str]) -> dict[str, list[str]]:
    """``NAME=(...)`` definitions (several may define one name: all their options count)."""
    found: dict[str, list[str]] = {}
    for line in lines:
        m = _ARRAY.match(line)
        if m:
            found.setdefault(m.group(1), []).extend(re.findall(r"--[a-z][a-z0-9-]*", m.group(2)))
    return found


def _commands(path: Path) -> list[tuple[list[str], list[str], str]]:
    """``(verb path, options, line)`` of each ``-m evspec ...`` command in ``path``."""
    lines = _logical_lines(path.read_text())
    arrays = _arrays(lines)
    out = []
    for line in lines:
        for m in re.finditer(r"-m evspec ((?:[a-z][a-z-]*)(?: [a-z][a-z-]*)?)", line):
            rest = line[m.end():]
            rest = re.split(r"\s(?:\||>|2>|>>|&&|\|\||;)\s|\s&\s*$|\)\s*&", rest)[0]
            opts = re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", rest)
            for name in _USE.findall(rest):
                opts += arrays.get(name, [])
            out.append((m.group(1).split(), opts, line.strip()))
    return out


def _is_group(cmd: Any) -> bool:
    return hasattr(cmd, "get_command") and hasattr(cmd, "list_commands")


def _resolve(words: list[str]) -> Any:
    """The command behind ``words`` (duck-typed: typer may bring its own click)."""
    cmd = typer.main.get_command(app)
    ctx = cmd.context_class(cmd)
    for word in words:
        sub = cmd.get_command(ctx, word) if _is_group(cmd) else None
        if sub is None:
            break
        cmd, ctx = sub, sub.context_class(sub, parent=ctx)
    return cmd


def _options(cmd: Any) -> set[str]:
    return {o for p in cmd.params for o in (*p.opts, *p.secondary_opts) if o.startswith("--")}


def test_scripts_exist_and_call_evspec() -> None:
    assert SCRIPTS, "no benchmark scripts found"
    assert sum(len(_commands(s)) for s in SCRIPTS) >= 10


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_option_a_script_passes_exists(script: Path) -> None:
    problems = []
    for words, opts, line in _commands(script):
        cmd = _resolve(words)
        if _is_group(cmd):
            problems.append(f"`evspec {' '.join(words)}` is not a command: {line}")
            continue
        known = _options(cmd)
        problems += [f"`evspec {' '.join(words)}` has no {o}: {line}" for o in opts if o not in known]
    assert not problems, "\n".join(problems)


def test_the_checker_catches_a_renamed_option(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sh"
    bad.write_text('ARGS=(--dataset m.json --out d)\npython3 -m evspec collect "${ARGS[@]}" \\\n  --shard 0\n')
    (words, opts, _), = _commands(bad)
    assert words == ["collect"] and "--shard" in opts and "--dataset" in opts
    assert "--shard" not in _options(_resolve(words))
