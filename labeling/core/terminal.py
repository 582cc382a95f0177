"""Consoles for command output, and the one way data is made safe to print on them.

Everything shown that comes from data (report text and ids, dataset names, file paths, run
names, raw model output, error messages that quote input) goes through `literal` (text printed
with markup) or `visible` (text put in a `rich.text.Text`): rich markup in it is shown as
written, and control characters, which could move the cursor, recolour the terminal, set its
title or make hyperlinks, are shown as their escapes (`\\x1b`, `\\x07`, `\\u202e`)."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.markup import escape

# C0 controls but tab and newline, DEL, the C1 controls, and the invisible characters that
# reorder or separate text (bidirectional overrides and isolates, line and paragraph separators).
_CONTROLS = [
    *(c for c in range(0x20) if c not in (0x09, 0x0A)),
    *range(0x7F, 0xA0),
    0x200E,
    0x200F,
    *range(0x202A, 0x202F),
    *range(0x2066, 0x206A),
    0x2028,
    0x2029,
]
_VISIBLE = {c: f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}" for c in _CONTROLS}


def visible(value: object, *, newlines: bool = True) -> str:
    """`value` as text with every control character shown as its escape (tab and newline are
    kept, unless `newlines` is false; CRLF becomes a newline) and lone surrogates (undecodable
    file-name bytes) as theirs: safe for a `Text` or a `markup=False` print. Never raises."""
    text = str(value).replace("\r\n", "\n").translate(_VISIBLE)
    if not newlines:
        text = text.replace("\n", "\\n")
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def literal(value: object, *, newlines: bool = True) -> str:
    """`value` as it must appear inside a rich markup string: `visible`, with markup escaped."""
    return escape(visible(value, newlines=newlines))


def output_console() -> Console:
    """stdout: lines are not wrapped, and where stdout is not a terminal (a pipe, a file, a
    test) tables get 160 columns rather than rich's 80, so that names are not cut short. Emoji
    codes (`:warning:`) in data stay text."""
    return Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160, emoji=False)


def error_console() -> Console:
    """stderr, for errors and progress bars; emoji codes in data stay text."""
    return Console(stderr=True, emoji=False)
