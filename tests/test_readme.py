"""The README's Python example runs as written (docs that drift are bugs)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    for code in blocks:
        exec(compile(code, str(README), "exec"), {"__name__": "__readme__"})
    assert "torch.Size([4, 512, 64])" in capsys.readouterr().out


def test_readme_commands_exist():
    text = README.read_text()
    root = README.parent
    for script in re.findall(r"bash (scripts/\w+\.sh)", text):
        assert (root / script).is_file(), script
    assert "RESULTS_PLACEHOLDER" not in text, "fill in the results table"


def test_readme_results_match_benchmark_json():
    """The Results section is exactly what benchmarks/tables.py renders from the committed JSON."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("tables", README.parent / "benchmarks" / "tables.py")
    tables = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tables)
    text = README.read_text()
    body = text[text.index("<!-- results:begin -->") + len("<!-- results:begin -->"):text.index("<!-- results:end -->")]
    assert body.strip() == tables.results_markdown().strip(), "run: python benchmarks/tables.py --readme"


def test_every_result_json_comes_from_a_command_in_run_all():
    import json

    script = (README.parent / "benchmarks" / "run_all.sh").read_text().replace("\\\n    ", "")
    for p in sorted((README.parent / "benchmarks").glob("*/*.json")):
        d = json.loads(p.read_text())
        for cmd in d.get("commands", [d["command"]]):  # a grid filled by several processes lists each
            cmd = cmd.strip()
            assert cmd.replace("embodimem bench", "python -m embodimem bench", 1) in script or cmd in script, (p, cmd)
