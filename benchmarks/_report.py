"""Shared by the benchmark scripts: machine description, peak memory, and updating docs/benchmarks.md.

Each benchmark owns one section of docs/benchmarks.md between ``<!-- bench:NAME -->`` and
``<!-- /bench:NAME -->`` and rewrites only that section (``--update-docs``).
"""

from __future__ import annotations

import os
import sys

# Import this module first in every benchmark script. Run as a script, a benchmark's folder is
# sys.path[0], where the scripts named like standard-library modules (io.py, tokenize.py) would shadow
# them for everything imported later (numpy imports ``tokenize``): take the folder off the path.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import datetime  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
from pathlib import Path  # noqa: E402

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    return (
        f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, torch {torch.__version__}, "
        f"{datetime.date.today().isoformat()}"
    )


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def update_section(name: str, markdown: str) -> None:
    """Replace the ``name`` section of docs/benchmarks.md with ``markdown`` (append if absent)."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{markdown.strip()}\n{end}"
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    DOC.write_text(text)


def publish(name: str, lines: list[str], *, update_docs: bool, input_path=None) -> str:
    """Print a benchmark's Markdown and, with ``update_docs``, write it as section ``name``.

    Figures measured on another input than the bundled background get a note saying so.
    """
    bundled = DOC.parents[1] / "data" / "background.csv.gz"
    if input_path is not None and Path(input_path).resolve() != bundled.resolve():
        lines = [*lines, "", f"Note: measured on `{input_path}`, not the bundled `data/background.csv.gz`; "
                 f"rerun `python benchmarks/{name}.py --update-docs` for the bundled sample."]
    text = "\n".join(lines)
    print(text)
    if update_docs:
        update_section(name, text)
    return text
