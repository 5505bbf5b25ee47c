"""A newcomer's path: README's quick start says the two commands, and its script runs verbatim."""

import re
from pathlib import Path

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_quick_start_is_exactly_the_two_commands():
    section = README.split("## Quick start", 1)[1].split("##", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands == ["make demo", "make test"]


def test_readme_script_runs_verbatim(capsys):
    script = re.search(r"## Your own Pyro program, from a script\n\n```python\n(.*?)```",
                       README, re.S).group(1)
    assert len(script.strip().splitlines()) <= 20
    namespace: dict = {}
    exec(compile(script, "README.md", "exec"), namespace)  # noqa: S102 - the point of the test
    ll = namespace["ll"]
    assert ll.kind == "exact" and ll.num_examples == 200
    assert "exact" in capsys.readouterr().out


def test_readme_is_short_and_its_links_and_picture_exist():
    """A newcomer reads it in two minutes: at most 120 lines; every relative link resolves."""
    assert len(README.splitlines()) <= 120
    root = Path(__file__).resolve().parents[1]
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README)
    local = [t for t in targets if not t.startswith(("http://", "https://"))]
    assert "docs/img/demo_iris_comparison.png" in local
    missing = [t for t in local if not (root / t).exists()]
    assert not missing, f"README links to missing files: {missing}"


def test_readme_says_how_to_get_the_cpu_build_of_torch():
    assert "download.pytorch.org/whl/cpu" in README
