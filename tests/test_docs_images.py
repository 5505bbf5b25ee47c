"""Every image a docs page (or the README) shows exists, is small, and its caption is current.

docs/figures.py writes docs/img/captions.json beside the PNGs; a page that captions one of those
figures (an italic paragraph under the image) repeats that caption, so the numbers on the page
are the numbers of the run that drew the picture.
"""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md")) + [ROOT / "README.md"]
IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")
MAX_BYTES = 150_000


def images(page: Path) -> list[tuple[str, Path]]:
    return [(target, (page.parent / target).resolve()) for target in IMAGE.findall(page.read_text())
            if not target.startswith(("http://", "https://"))]


def test_the_image_pattern_finds_references(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("text ![a chart](img/chart.png) and ![](../img/x.png)\n")
    assert [target for target, _ in images(page)] == ["img/chart.png", "../img/x.png"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_referenced_image_exists_and_is_small(page):
    missing = [target for target, path in images(page) if not path.is_file()]
    assert not missing, f"{page.relative_to(ROOT)} shows missing images: {missing}"
    large = [f"{target} ({path.stat().st_size:,} bytes)" for target, path in images(page)
             if path.stat().st_size > MAX_BYTES]
    assert not large, f"images over {MAX_BYTES:,} bytes: {large}"


FAMILY_PAGES = ("autoregressive", "diffusion", "ebm", "flow", "flow_matching", "hierarchical",
                "hmm", "mixture", "vae", "vqvae")


def test_the_docs_show_pictures():
    """The issue: the docs site had no picture at all. Each family page has at least two."""
    for name in FAMILY_PAGES:
        page = DOCS / "models" / f"{name}.md"
        assert len(images(page)) >= 2, f"{page.name} shows {len(images(page))} images"


def test_the_gallery_has_a_card_with_a_picture_per_example():
    cards = (DOCS / "gallery.md").read_text().split("\n-   ")[1:]
    named = {re.match(r"\*\*`(\w+)\.py`\*\*", card).group(1): card for card in cards}
    scripts = sorted(p.stem for p in (ROOT / "examples").glob("*.py") if not p.name.startswith("_"))
    missing = [s for s in scripts if s not in named]
    assert not missing, f"examples without a gallery card: {missing}"
    pictureless = [name for name, card in named.items() if not IMAGE.search(card)]
    assert not pictureless, f"gallery cards without a picture: {pictureless}"
    commands = [name for name, card in named.items() if f"python examples/{name}.py" not in card]
    assert not commands, f"gallery cards without their command: {commands}"


def test_captions_match_the_run_that_drew_the_figure():
    captions = json.loads((DOCS / "img" / "captions.json").read_text())
    stale = []
    for page in PAGES:
        text = page.read_text()
        for match in IMAGE.finditer(text):
            name = Path(match.group(1)).stem
            if name not in captions:
                continue
            following = text[match.end():].lstrip("\n").split("\n\n", 1)[0]
            caption = " ".join(following.split())
            if caption.startswith("*") and caption != f"*{captions[name]}*":
                stale.append(f"{page.relative_to(ROOT)}: {name}")
    assert not stale, ("captions differ from docs/img/captions.json (rerun docs/figures.py and "
                       f"copy its captions): {stale}")


def test_every_committed_figure_is_shown_somewhere():
    shown = {path.name for page in PAGES for _, path in images(page)}
    unused = sorted(p.name for p in (DOCS / "img").glob("*.png") if p.name not in shown)
    assert not unused, f"figures no page shows: {unused}"
