"""The README is a front page: short, its docs links resolve, and every `clala ...` command it shows parses."""

import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
MAX_LINES = 250

# The two commands CI runs verbatim (.ci/run); the README must show them byte for byte.
QUICKSTART = 'python3 -m venv .venv && . .venv/bin/activate && pip install -e ".[local,model]" && clala quickstart'
TESTS = 'python3 -m venv .venv && . .venv/bin/activate && pip install -e ".[dev]" && python -m pytest -q'


def readme_text() -> str:
    return README.read_text(encoding="utf-8")


def code_blocks(text: str) -> list[list[str]]:
    """The lines of each fenced code block (``` ... ```), fences excluded."""
    blocks: list[list[str]] = []
    current: list[str] | None = None
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            if current is None:
                current = []
            else:
                blocks.append(current)
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def joined_lines(block: list[str]) -> list[str]:
    """A block's lines with `$ ` prompts stripped and `\\` continuations joined."""
    lines: list[str] = []
    pending = ""
    for raw in block:
        line = raw.strip()
        if not pending and line.startswith("$ "):
            line = line[2:]
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    if pending:
        lines.append(pending)
    return lines


def clala_commands(line: str) -> list[str]:
    """The `clala ...` commands of one shell line: a comment, a pipe or a redirection ends the
    line; `&&` and `;` separate commands, of which only those that start with `clala ` are kept."""
    if " #" in line:
        line = line[: line.index(" #")]
    if line.startswith("#"):
        return []
    for stop in ("|", ">"):
        if stop in line:
            line = line[: line.index(stop)]
    commands = []
    for part in re.split(r"&&|;", line):
        part = part.strip()
        if part.startswith("clala "):
            commands.append(part)
    return commands


def readme_commands() -> list[str]:
    return [
        command
        for block in code_blocks(readme_text())
        for line in joined_lines(block)
        if line.startswith("clala ") or "&& clala " in line
        for command in clala_commands(line)
    ]


def test_readme_is_a_front_page():
    lines = readme_text().splitlines()
    assert len(lines) <= MAX_LINES, f"README.md has {len(lines)} lines, at most {MAX_LINES}"


def test_readme_docs_links_exist():
    links = re.findall(r"\]\((docs/[^)#\s]+\.md)(?:#[^)]*)?\)", readme_text())
    assert links, "README.md links no docs page"
    missing = sorted({link for link in links if not (REPO / link).is_file()})
    assert not missing, f"README.md links docs pages that do not exist: {missing}"


def test_every_docs_page_is_linked_from_the_readme():
    text = readme_text()
    pages = sorted(p.name for p in (REPO / "docs").glob("*.md"))
    unlinked = [name for name in pages if f"](docs/{name}" not in text]
    assert not unlinked, f"docs pages the README does not link: {unlinked}"


def test_docs_pages_relative_links_exist():
    """The pages moved out of the README link each other, the README and their images by relative paths."""
    broken = []
    for page in sorted((REPO / "docs").glob("*.md")):
        for link in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
            path = link.partition("#")[0]
            if path and "://" not in path and not (page.parent / path).exists():
                broken.append(f"{page.name}: {link}")
    assert not broken, f"broken links in docs pages: {broken}"


def test_readme_has_the_quickstart_results_section():
    assert "## What the quickstart produces" in readme_text()


def test_readme_shows_the_ci_commands_verbatim():
    lines = readme_text().splitlines()
    assert QUICKSTART in lines
    assert TESTS in lines


def test_ci_runs_the_readme_commands_verbatim():
    """CI tests what users run: the two lines as written, in order, with no environment of CI's own."""
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    lines = [line.strip() for line in ci.splitlines()]
    assert QUICKSTART in lines and TESTS in lines
    assert lines.index(QUICKSTART) < lines.index(TESTS)
    assert "CMAKE_ARGS" not in ci and not any(line.startswith("export ") for line in lines)


def test_readme_commands_are_found():
    commands = readme_commands()
    assert "clala quickstart" in commands
    assert any(command.startswith("clala label ") for command in commands)


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_parses(command):
    import cli

    args = shlex.split(command)[1:] + ["--help"]
    result = CliRunner().invoke(cli.app, args)
    output = result.output
    assert "No such option" not in output, output
    assert "No such command" not in output, output
    assert result.exit_code == 0, f"{command!r} --help exited {result.exit_code}:\n{output}"
