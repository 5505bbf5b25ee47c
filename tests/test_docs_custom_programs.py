"""Every code block of docs/guide/custom-programs.md runs, in order, in one namespace."""

import re
from pathlib import Path

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "guide" / "custom-programs.md"


def test_custom_program_guide_blocks_run(capsys):
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.S)
    assert len(blocks) == 5  # intro, global latents, per-example guide, subsample plate, reload
    namespace: dict = {}
    for index, block in enumerate(blocks):
        exec(compile(block, f"{GUIDE.name}[block {index}]", "exec"), namespace)
    printed = capsys.readouterr().out
    assert "exact" in printed and "estimate AutoNormal guide, 100 draws" in printed
    assert "lower_bound {'guide': 'AutoNormal'" in printed
