"""The README's library example runs as written (every ```python block, in order, in one namespace), and its
generated blocks are exactly what their command prints from the committed results."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

from he_leak.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
GENERATED = re.compile(r"<!-- generated: (.+?) -->\n(.*?)<!-- end generated -->", flags=re.S)


def test_readme_python_blocks_run(monkeypatch, tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README lost its library example"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102


def test_readme_generated_blocks_equal_their_command(monkeypatch, capsys):
    """Each `<!-- generated: he-leak … -->` block holds what that command prints now; rerun it and paste on change."""
    blocks = GENERATED.findall(README.read_text())
    assert blocks, "the README lost its generated answer table"
    monkeypatch.chdir(ROOT)
    for command, text in blocks:
        args = shlex.split(command)
        assert args[0] in ("he-leak", "python"), command
        if args[0] == "python":  # a committed script over committed results (e.g. experiments/flooding_table.py)
            done = subprocess.run([sys.executable, *args[1:]], cwd=ROOT, capture_output=True, text=True, check=True)
            printed = done.stdout
        else:
            capsys.readouterr()
            assert main(args[1:]) == 0, command
            printed = capsys.readouterr().out
        assert printed == text, f"README block differs from `{command}`; paste its output"
