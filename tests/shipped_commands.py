"""The shell commands the project ships: every line of README.md's ```bash blocks, every inline `gist-ray SUB ARG`
span of README.md, and every `gist-ray ...` command in the header (leading comments or docstring) of the shipped
configs and search spaces. Parsed from the files, so a new command is picked up without editing a test.
"""

from __future__ import annotations

import ast
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_GLOBS = ("configs/*.yaml", "search_spaces/*.yaml", "search_spaces/*.py")


@dataclass(frozen=True)
class Command:
    source: str  # "README.md:57"
    text: str  # as written, continuations joined
    argv: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.source}: {self.text}"


def _split(text: str) -> tuple[str, ...]:
    return tuple(shlex.split(text, comments=True))


def readme_commands(path: Path = ROOT / "README.md") -> list[Command]:
    """Commands of the ```bash blocks (in order), then the inline `gist-ray SUB ARG...` spans."""
    lines = path.read_text().splitlines()
    found: list[Command] = []
    in_bash, pending, start = False, "", 0
    for no, line in enumerate(lines, start=1):
        if line.strip().startswith("```"):
            in_bash = not in_bash and line.strip() in ("```bash", "```sh", "```shell")
            continue
        if not in_bash:
            continue
        if not pending:
            start = no
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        argv = _split(pending)
        if argv:
            found.append(Command(f"{path.name}:{start}", " ".join(pending.split()), argv))
        pending = ""
    blocks = {c.text for c in found}
    for no, line in enumerate(lines, start=1):
        for span in re.findall(r"`(gist-ray [^`]+)`", line):
            argv = _split(span)
            if len(argv) >= 3 and span not in blocks:  # a command with arguments, not a command's name
                found.append(Command(f"{path.name}:{no}", span, argv))
                blocks.add(span)
    return found


def header_lines(path: Path) -> list[tuple[int, str]]:
    """The file's header with line numbers: its leading comment lines (YAML) or its module docstring (Python)."""
    if path.suffix == ".py":
        doc = ast.get_docstring(ast.parse(path.read_text()), clean=False) or ""
        return list(enumerate(doc.splitlines(), start=1))
    out = []
    for no, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.startswith("#"):
            break
        out.append((no, line.lstrip("#")))
    return out


def header_commands(path: Path) -> list[Command]:
    """Every header line that is a command: it starts (after ``Run:`` or an opening parenthesis) with gist-ray."""
    rel = path.relative_to(ROOT)
    found = []
    for no, line in header_lines(path):
        m = re.match(r"\s*(?:Run:)?[\s(]*(gist-ray\s+\S.*)$", line)
        if not m:
            continue
        text = m.group(1).strip()
        if text.count(")") > text.count("("):  # "(... e.g.:\n gist-ray ...)" closes a parenthesis
            text = text[: text.rindex(")")].strip()
        found.append(Command(f"{rel}:{no}", text, _split(text)))
    return found


def shipped_files() -> list[Path]:
    return sorted(p for g in SHIPPED_GLOBS for p in ROOT.glob(g))


def option(argv: tuple[str, ...], key: str) -> str | None:
    """The value of a ``key=value`` word in ``argv`` (the last one wins, as on the command line)."""
    values = [a.split("=", 1)[1] for a in argv if a.startswith(key + "=")]
    return values[-1] if values else None
