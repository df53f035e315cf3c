"""Where benchmark results go: a marked section of a Markdown file, and the harness's summary."""

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


def record(item: str, what: str, gpuhub: str, *, reference: str = "–", goal: str = "–",
           met: bool | None = None) -> None:
    """One figure for the summary table of docs/BENCHMARKS.md (bench/run_all.py), appended as a
    JSON line to the file named by $GPUHUB_BENCH_RESULTS; a script run on its own (variable
    unset) only prints its report. `met`: the goal was met (True), missed (False), or has none."""
    import json
    import os

    target = os.environ.get("GPUHUB_BENCH_RESULTS")
    if target:
        with open(target, "a") as out:
            out.write(json.dumps({"item": item, "what": what, "gpuhub": gpuhub, "reference": reference,
                                  "goal": goal, "met": met}) + "\n")
