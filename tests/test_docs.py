"""The README runs as written: every shell and Python block, in order, on a copy of the project.

A block is skipped only where the line before its fence says why
(`<!-- readme-test: skip, needs an AWS account -->`), and inside a block only the two kinds of
line that cannot run here: the live `collector run` (it needs Binance, and runs until stopped)
and the test suite itself (CI runs that command as its main step; running it again in here
would run it twice). Everything else runs for real: the install into a new virtual
environment, both demos, the reading snippets, the audit.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import RECORDING_2024, REPO, SHARED

README = REPO / "README.md"
_FENCE = re.compile(r"^(\s*)```(\w+)?\s*$")
_SKIP = re.compile(r"<!--\s*readme-test:\s*skip,\s*(.+?)\s*-->")
# Lines that run only elsewhere (see the module's docstring).
_NOT_HERE = (re.compile(r"\bcollector run\b"), re.compile(r"-m pytest\b"))


@dataclass(frozen=True)
class Block:
    language: str
    text: str
    line: int  # where its fence is, for messages
    skip: str | None  # why it is not run


def blocks(text: str) -> list[Block]:
    """The fenced blocks of a Markdown text, in order."""
    found: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None or opening.group(2) is None:
            i += 1
            continue
        indent, language = opening.group(1), opening.group(2)
        previous = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        skip = _SKIP.search(previous)
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith("```"):
            body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j])
            j += 1
        found.append(Block(language, "\n".join(body) + "\n", i + 1, skip.group(1) if skip else None))
        i = j + 1
    return found


def shell_commands(text: str) -> list[str]:
    """The commands of a shell block: continuation lines joined, lines that run elsewhere left out."""
    commands: list[str] = []
    pending = ""
    for line in text.splitlines():
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        command = (pending + line).strip()
        pending = ""
        if command and not command.startswith("#") and not any(p.search(command) for p in _NOT_HERE):
            commands.append(command)
    return commands


def test_the_block_reader_finds_indented_fences_skip_notes_and_continuations() -> None:
    text = "intro\n<!-- readme-test: skip, needs AWS -->\n   ```sh\n   aws s3 ls \\\n     s3://x\n   ```\n"
    text += "```python\nprint(1)\n```\n```json\n{}\n```\n"
    found = blocks(text)
    assert [(b.language, b.skip) for b in found] == [("sh", "needs AWS"), ("python", None), ("json", None)]
    assert shell_commands(found[0].text) == ["aws s3 ls    s3://x"]
    assert shell_commands(".venv/bin/collector run   # live\n.venv/bin/python -m pytest\necho ok\n") == [
        "echo ok"
    ]


def test_every_link_to_a_heading_of_the_readme_finds_it() -> None:
    text = README.read_text()
    headings = {
        re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", text, flags=re.MULTILINE)
    }
    for anchor in re.findall(r"\]\(#([^)]+)\)", text):
        assert anchor in headings, f"README links to #{anchor}, which is no heading"


@pytest.mark.slow
def test_the_readme_runs_as_written_on_a_copy_of_the_project(tmp_path: Path) -> None:
    if not RECORDING_2024.is_file():
        pytest.skip(
            f"the README's replay demo reads {RECORDING_2024} (it lives in ../shared beside the clone)"
        )
    project = tmp_path / "clone"
    tracked = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                             capture_output=True, text=True, check=True)  # fmt: skip
    for name in tracked.stdout.splitlines():
        if (REPO / name).is_file():
            (project / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, project / name)
    (tmp_path / "shared").symlink_to(SHARED.resolve())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COLLECTOR_", "VIRTUAL_ENV"))}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    ran: list[str] = []
    for block in blocks(README.read_text()):
        if block.skip or block.language not in ("sh", "python"):
            continue
        if block.language == "python":
            python = str(project / ".venv" / "bin" / "python")
            done = subprocess.run([python, "-c", block.text], cwd=project, env=env, capture_output=True,
                                  text=True, timeout=600, check=False)  # fmt: skip
            assert done.returncode == 0, (
                f"README line {block.line}:\n{block.text}\n{done.stdout}\n{done.stderr}"
            )
            ran.append(block.text.splitlines()[0])
            continue
        for command in shell_commands(block.text):
            done = subprocess.run(["bash", "-c", f"set -euo pipefail; {command}"], cwd=project, env=env,
                                  capture_output=True, text=True, timeout=900, check=False)  # fmt: skip
            assert done.returncode == 0, (
                f"README line {block.line}: {command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            )
            ran.append(command)
    assert any("collector demo" in c for c in ran) and any("collector audit" in c for c in ran)
