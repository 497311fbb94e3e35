"""The README's "Defining features" example is a repo that loads and plans, as written."""

from __future__ import annotations

import re
from pathlib import Path

from engine.definitions import load_repo
from engine.plan import apply_plan

ROOT = Path(__file__).resolve().parents[2]
SECTION = "## Defining features"


def readme_definitions() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```python\n(.*?)```", readme[readme.index(SECTION) :], re.DOTALL)
    assert block is not None, f"{SECTION!r} must hold a ```python block"
    return block.group(1)


def test_the_readme_definitions_load_and_apply(tmp_path: Path) -> None:
    package = tmp_path / "my_features"
    package.mkdir()
    (package / "__init__.py").write_text("", encoding="utf-8")
    (package / "features.py").write_text(readme_definitions(), encoding="utf-8")

    repo = load_repo(package)

    (view,) = repo.views
    assert view.source.name == "transactions"
    assert "amount_sum_15m" in view.feature_names
    apply_plan(repo, tmp_path / "data" / "plan.json", shards=2)
    assert (tmp_path / "data" / "plan.json").is_file()
