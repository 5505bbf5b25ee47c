"""Every code block of docs/guide/training.md runs, in order, in one namespace."""

import re
from pathlib import Path

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "guide" / "training.md"


def test_training_guide_blocks_run(capsys):
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.S)
    assert len(blocks) >= 6
    namespace: dict = {}
    for index, block in enumerate(blocks):
        exec(compile(block, f"{GUIDE.name}[block {index}]", "exec"), namespace)
    printed = capsys.readouterr().out
    assert "best step:" in printed and "EM converged: True" in printed
