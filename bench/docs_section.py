"""Replace one marked section of a Markdown file with a benchmark's latest report."""

from __future__ import annotations

from pathlib import Path


def write_section(path: Path, begin: str, end: str, report: str, new_file_head: str = "# Benchmarks\n") -> None:
    """`report` starts with `begin` and ends with `end`; what was between them before is replaced,
    or the report is appended (and the file made with `new_file_head` if it does not exist)."""
    text = path.read_text() if path.exists() else new_file_head
    if begin in text:
        text = text[:text.index(begin)] + report + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + report + "\n"
    path.write_text(text)
