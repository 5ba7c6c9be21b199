"""Figures quoted in the documentation agree with the command's own text and with the results
they are derived from."""
import glob
import json
import re
from pathlib import Path

import pytest

from pdnn.cli import main

REPO = Path(__file__).resolve().parents[1]


def _seconds(text: str) -> list[str]:
    return re.findall(r"(\d+) s\b", text)


def test_demo_time_is_one_measured_figure_in_help_and_readme(capsys):
    readme = (REPO / "README.md").read_text()
    figure = _seconds(readme[readme.index("The first command trains"):readme.index("## Using it")])
    assert len(figure) == 1
    for argv in (["--help"], ["demo", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        shown = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
        assert "few minutes" not in shown
        assert f"{figure[0]} s" in shown, (argv, shown)


def test_energy_doc_quotes_the_largest_gain_after_t10_on_fashion_mnist():
    gains = {}
    for path in glob.glob(str(REPO / "results" / "fashion-mnist" / "runs" / "pbit*" / "eval-network.json")):
        accuracy = {r["samples"]: r["accuracy_mean"] for r in json.loads(Path(path).read_text())["results"]}
        gains[Path(path).parent.name] = max(a for t, a in accuracy.items() if t >= 10) - accuracy[10]
    assert len(gains) == 8
    doc = (REPO / "docs" / "energy.md").read_text()
    quoted = re.search(r"after T = 10 further samples \(up to\s+T = 50\) buy at most \*\*\+([\d.]+) points\*\*", doc)
    assert quoted, "the sentence about samples after T = 10 is gone from docs/energy.md"
    assert quoted.group(1) == f"{100 * max(gains.values()):.2f}"
