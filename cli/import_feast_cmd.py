"""``streamfeat import-feast PATH --out DIR``: a Feast repo's definitions as a streamfeat repo.

Reads the Feast repo's Python with ``ast`` (Feast need not be installed; nothing of
the repo runs), writes ``DIR/__init__.py`` and ``DIR/definitions.py``, prints what was
translated and everything that was not (with the reason), then loads the written repo
to prove it validates. Existing files are never overwritten without ``--force``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cli.common import Subparsers
from engine.wording import counted


def register(subparsers: Subparsers) -> None:
    help_text = "translate a Feast repo (entities, stream views, on-demand views, services) into a streamfeat repo"
    parser: argparse.ArgumentParser = subparsers.add_parser("import-feast", help=help_text, description=help_text)
    parser.add_argument("path", type=Path, help="the Feast repo directory (holding feature_store.yaml)")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("feast_defs"),
        help="streamfeat repo package directory to write (default: feast_defs)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite the files import-feast writes in --out")
    parser.set_defaults(handler=_import_feast)


def _import_feast(args: argparse.Namespace) -> int:
    from engine.definitions import load_repo
    from engine.feast_import import FeastImportError, read_feast_repo, translate

    out: Path = args.out
    if not out.name.isidentifier():
        raise FeastImportError(
            f"--out {out}: expected a directory name that is a Python package name", hint="e.g. --out feast_defs"
        )
    files = {
        out / "__init__.py": f'"""Feature repo translated from the Feast repo {args.path}."""\n',
        out / "definitions.py": "",
    }
    existing = [str(f) for f in files if f.exists()]
    if existing and not args.force:
        raise FeastImportError(
            f"--out {out}: {', '.join(existing)} already {'exists' if len(existing) == 1 else 'exist'}",
            hint="pass --force to overwrite, or choose another --out",
        )
    translation = translate(read_feast_repo(args.path), str(args.path))
    if not translation.translated and not translation.not_translated:
        raise FeastImportError(
            f"Feast repo {args.path}: no Feast definition found (no Entity, FeatureView, StreamFeatureView, "
            "OnDemandFeatureView or FeatureService call in its .py files); nothing was written",
            hint="pass the directory holding feature_store.yaml and the Python files that define the features",
        )
    files[out / "definitions.py"] = translation.source
    out.mkdir(parents=True, exist_ok=True)
    for file, text in files.items():
        file.write_text(text, encoding="utf-8")
    print(translation.report())
    repo = load_repo(out)  # RepoValidationError -> exit 2 listing every problem of the written repo
    counts = ", ".join(
        (
            counted(len(repo.views), "stream view"),
            counted(len(repo.on_demand_views), "on-demand view"),
            counted(len(repo.services), "service"),
        )
    )
    print(f"wrote {out}/definitions.py: {counts}; it validates (next: streamfeat plan --repo {out})")
    return 0
