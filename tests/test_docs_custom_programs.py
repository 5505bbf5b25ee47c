"""Every code block of docs/guide/custom-programs.md runs, in order: in one namespace, except a
block that opens with ``# name.py: ...`` (a module, written to the working folder) or with
``# name.py, run as a new process ...`` (a script, written there and run in a new process)."""

import re
import subprocess
import sys
from pathlib import Path

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "guide" / "custom-programs.md"
MODULE = re.compile(r"# (\w+\.py): ")
NEW_PROCESS = re.compile(r"# (\w+\.py), run as a new process")


def test_custom_program_guide_blocks_run(capsys, tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.S)
    # intro, global latents, per-example guide, global + per-example latents, subsample plate,
    # and the reload: the program module, the training script, the new process, the check
    assert len(blocks) == 9
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    namespace: dict = {}
    new_processes = 0
    for index, block in enumerate(blocks):
        if module := MODULE.match(block):
            (tmp_path / module.group(1)).write_text(block)
        elif script := NEW_PROCESS.match(block):
            (tmp_path / script.group(1)).write_text(block)
            completed = subprocess.run([sys.executable, script.group(1)], cwd=tmp_path,
                                       capture_output=True, text=True, timeout=300)
            assert completed.returncode == 0, f"block {index}: {completed.stderr[-3000:]}"
            new_processes += 1
        else:
            exec(compile(block, f"{GUIDE.name}[block {index}]", "exec"), namespace)
    monkeypatch.delitem(sys.modules, "regressor", raising=False)
    assert new_processes == 1 and (tmp_path / "scores.json").exists()
    printed = capsys.readouterr().out
    assert "exact" in printed and "estimate AutoNormal guide, 100 draws" in printed
    assert "lower_bound {'guide': 'AutoNormal'" in printed
