"""The README's figures are the benchmark files' figures: every ratio and size quoted in a paragraph that names a
file under benchmarks/ appears in that file (ratios with their x; sizes as numbers, since the files' tables give
units in their headers). A rerun that changes the file makes this fail until the README says the same."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIGURE = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)(?:[-–](\d+(?:\.\d+)?))?(x|\s(?:MiB|GiB|GB|MB))(?![\w])")
FILE = re.compile(r"benchmarks/([A-Z_]+\.md)")


def quoted_figures(text: str) -> list[tuple[str, list[str]]]:
    """(paragraph's benchmark files, figures) for each README paragraph that names a benchmark file."""
    out = []
    for para in re.split(r"\n\s*\n", text):
        files = FILE.findall(para)
        if not files:
            continue
        figures = []
        for low, high, unit in FIGURE.findall(para):
            figures += [f"{v}{unit}" for v in (low, high) if v]
        out.append((files, figures))
    return out


def test_readme_quotes_the_benchmark_files():
    quoted = quoted_figures((ROOT / "README.md").read_text())
    assert any(figures for _, figures in quoted)
    missing = []
    for files, figures in quoted:
        sources = " ".join((ROOT / "benchmarks" / f).read_text() for f in files)
        sources = sources.replace("–", "-")
        for fig in figures:
            number, unit = re.match(r"([\d.]+)(.*)", fig).groups()
            # A ratio appears with its x; a size may stand in a table whose header gives the unit.
            suffix = "x" if unit == "x" else r"(?![\d.])"
            if not re.search(rf"(?<![\d.]){re.escape(number)}{suffix}", sources):
                missing.append(f"{fig} (quoted with {', '.join(files)})")
    assert not missing, "README figures not in the benchmark files they cite: " + "; ".join(missing)
