"""The documentation runs as written: every shell and Python block of the README and of docs/*.md,
in order, on a copy of the project, and every link finds its target.

The README's blocks run first (they make the virtual environment and the tour's directories the
other pages build on), then each page of docs/ in the order of `PAGES`. A block is skipped only
where the line before its fence says why (`<!-- readme-test: skip, needs an AWS account -->`),
and inside a block only two kinds of line that cannot run here: the live `collector run` with no
local feed (it needs Binance, and runs until stopped) and the test suite itself (CI runs it as
its main step; running it in here would run it twice). A shell block runs as one script, so a
feed started with `&` in it can be stopped with `kill %1` further down. Nothing reads
`../shared`: the documentation is for a user's fresh clone.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO

README = REPO / "README.md"
# The order a reader takes them in; a page not listed here fails the test, so none is forgotten.
PAGES = (
    "landing", "continuity", "whole-market", "history", "table", "operations", "performance", "development"
)  # fmt: skip
_FENCE = re.compile(r"^(\s*)```(\w+)?\s*$")
_SKIP = re.compile(r"<!--\s*readme-test:\s*skip,\s*(.+?)\s*-->")
# Lines that run only elsewhere (see the module's docstring).
_NOT_HERE = (re.compile(r"^\.venv/bin/collector run\b"), re.compile(r"-m pytest\b"))
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


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


def anchor(heading: str) -> str:
    """A heading's anchor as GitHub makes it."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.DOTALL)  # a `# comment` is no heading
    return {anchor(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.MULTILINE)}


def documents() -> list[Path]:
    return [README, *(REPO / "docs" / f"{page}.md" for page in PAGES)]


def test_the_block_reader_finds_indented_fences_skip_notes_and_continuations() -> None:
    text = "intro\n<!-- readme-test: skip, needs AWS -->\n   ```sh\n   aws s3 ls \\\n     s3://x\n   ```\n"
    text += "```python\nprint(1)\n```\n```json\n{}\n```\n"
    found = blocks(text)
    assert [(b.language, b.skip) for b in found] == [("sh", "needs AWS"), ("python", None), ("json", None)]
    assert shell_commands(found[0].text) == ["aws s3 ls    s3://x"]
    local = "COLLECTOR_WS_URL=ws://127.0.0.1:9443 timeout 5 .venv/bin/collector run"
    assert shell_commands(
        f".venv/bin/collector run   # live\n.venv/bin/python -m pytest\necho ok\n{local}\n"
    ) == [
        "echo ok",
        local,
    ]


def test_every_page_of_docs_is_in_the_reading_order() -> None:
    pages = {p.stem for p in (REPO / "docs").glob("*.md")}
    assert pages == set(PAGES), f"add the page to PAGES in tests/test_docs.py, in its reading order: {pages}"


def test_every_link_finds_its_file_and_heading() -> None:
    broken = []
    for document in documents():
        text = re.sub(r"```.*?```", "", document.read_text(), flags=re.DOTALL)
        for target in _LINK.findall(text):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            path_part, _, fragment = target.partition("#")
            path = (document.parent / path_part).resolve() if path_part else document
            if not path.exists():
                broken.append(f"{document.relative_to(REPO)} links to {target}: no such file")
            elif fragment and path.suffix == ".md" and fragment not in anchors(path):
                broken.append(f"{document.relative_to(REPO)} links to {target}: no such heading")
    assert not broken, "\n".join(broken)


def _copy_of_the_project(target: Path) -> Path:
    tracked = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                             capture_output=True, text=True, check=True)  # fmt: skip
    for name in tracked.stdout.splitlines():
        if (REPO / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, target / name)
    return target


def _run_shell(script: str, project: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """One block as one script, in a session of its own: whatever it left running is stopped."""
    process = subprocess.Popen(["bash", "-c", f"set -euo pipefail\n{script}"], cwd=project, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)  # fmt: skip
    try:
        out, err = process.communicate(timeout=900)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


@pytest.mark.slow
def test_the_documentation_runs_as_written_on_a_fresh_copy_of_the_project(tmp_path: Path) -> None:
    project = _copy_of_the_project(tmp_path / "clone")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COLLECTOR_", "VIRTUAL_ENV"))}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    ran: list[str] = []
    for document in documents():
        where = document.relative_to(REPO)
        for block in blocks(document.read_text()):
            if block.skip or block.language not in ("sh", "python"):
                continue
            if block.language == "python":
                python = str(project / ".venv" / "bin" / "python")
                done = subprocess.run([python, "-c", block.text], cwd=project, env=env, capture_output=True,
                                      text=True, timeout=600, check=False)  # fmt: skip
            else:
                commands = shell_commands(block.text)
                if not commands:
                    continue
                done = _run_shell("\n".join(commands), project, env)
            assert done.returncode == 0, (
                f"{where} line {block.line}:\n{block.text}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            )
            ran.append(f"{where}:{block.line}")
    assert len(ran) >= 10, ran
