"""The README's shell command blocks as data, for tests/test_readme.py.

A block is a ```bash fence; the block is *offline* when the line before its fence is a
`<!-- readme-test: offline ... -->` comment (it runs as written on a CPU with no internet). Commands are the
block's lines with `\\` continuations joined and `#` comments removed, split with shlex; leading `NAME=value`
words become the command's environment.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
OFFLINE_MARK = re.compile(r"<!--\s*readme-test:\s*offline\b")
ENV_WORD = re.compile(r"^[A-Z_][A-Z0-9_]*=")


@dataclass(frozen=True)
class Command:
    text: str                       # as written (continuations joined, comment removed)
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    line: int = 0                   # README line of the command's first line


@dataclass(frozen=True)
class Block:
    line: int                       # README line of the opening fence
    offline: bool
    commands: list[Command]


def _strip_comment(line: str) -> str:
    """The line without a trailing `# comment` (a `#` outside quotes that starts a word)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=False)
    lexer.whitespace_split, lexer.commenters = True, "#"
    words = list(lexer)
    return shlex.join(words) if words else ""


def parse_commands(body: list[str], first_line: int) -> list[Command]:
    commands, pending, start = [], "", first_line
    for offset, raw in enumerate(body):
        line = raw.rstrip()
        if not pending:
            start = first_line + offset
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        text = _strip_comment(pending + line)
        pending = ""
        if not text:
            continue
        words = shlex.split(text)
        env = {}
        while words and ENV_WORD.match(words[0]):
            key, value = words.pop(0).split("=", 1)
            env[key] = value
        commands.append(Command(text=text, argv=words, env=env, line=start))
    return commands


def read_blocks(path: Path = README) -> list[Block]:
    lines = path.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        if lines[i].strip() == "```bash":
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
            offline = i > 0 and bool(OFFLINE_MARK.search(lines[i - 1]))
            blocks.append(Block(line=i + 1, offline=offline, commands=parse_commands(lines[i + 1:end], i + 2)))
            i = end
        i += 1
    return blocks
