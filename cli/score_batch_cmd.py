"""``streamfeat score-batch``: score a file of entity keys with a model file through the
feature server (serving.scoring.score_batch)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cli.common import Subparsers, positive_number
from cli.setting_options import add_derived_option
from engine.exceptions import ConfigError
from engine.wording import counted

_URL_UNREAD = "default: http://serve_host:serve_port of streamfeat.yaml"


def _run(args: argparse.Namespace) -> int:
    from cli.tables import check_output, read_table, write_table
    from engine.config import load_settings
    from serving.client import FeatureClient
    from serving.model_file import load_model
    from serving.scoring import score_batch

    check_output(args.out)
    url = args.url
    if url is None:
        url = load_settings().serve_url
    elif not url.startswith(("http://", "https://")):
        raise ConfigError(
            f"--url: expected an http:// or https:// URL, got {url!r}", hint="e.g. --url http://127.0.0.1:8000"
        )
    model = load_model(args.model)
    entities = read_table(args.entities, "--entities")
    with FeatureClient(url, timeout=args.timeout, api_key=args.api_key) as client:
        chunking = {} if args.chunk_rows is None else {"chunk_rows": args.chunk_rows}
        scored = score_batch(model, entities, client, time_column=args.time_column, **chunking)
    write_table(scored, args.out)
    cold = int((scored["cold_start_features"] > 0).sum()) if scored.height else 0
    print(
        f"scored {counted(scored.height, 'row')} with service {model.trained_on.service!r} "
        f"(fingerprint {model.trained_on.fingerprint}) from {url}; {counted(cold, 'row')} used cold-start "
        f"defaults; wrote {args.out}"
    )
    return 0


def _url_default_text() -> str:
    """The server --url defaults to here: the URL of serve_host and serve_port as configured."""
    from engine.config import configured_setting, load_settings

    try:
        url = load_settings().serve_url
        given = [f"{key} from {where}" for key in ("serve_host", "serve_port") if (where := configured_setting(key)[1])]
    except ConfigError:
        return _URL_UNREAD
    return f"default: {url}, " + (", ".join(given) or "settings serve_host and serve_port")


def register(subparsers: Subparsers) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "score-batch",
        help="score entity keys with a model file, features looked up from the feature server",
        description="Looks up the features of the service the model was trained on (named in the "
        "model file, fingerprint checked) for every row, as of the row's time (--time-column) or "
        "now, and writes keys, features and the model's score. Model files are JSON "
        "(serving/model_file.py); nothing in them is executed.",
    )
    parser.add_argument("--model", type=Path, required=True, help="model file (JSON, streamfeat.logistic/1)")
    parser.add_argument("--entities", type=Path, required=True, help="entity keys (.parquet or .csv)")
    parser.add_argument("--out", type=Path, required=True, help="output file (.parquet, or .csv)")
    parser.add_argument(
        "--time-column", default=None, help="column with each row's as-of time (epoch ms or datetime); default: now"
    )
    add_derived_option(
        parser,
        "--url",
        what="feature server",
        default_text=_url_default_text,
        unread_text=_URL_UNREAD,
    )
    parser.add_argument(
        "--chunk-rows",
        type=int,
        default=None,
        help="rows per request, at most the server's max_entities_per_request (default: under the default limit)",
    )
    parser.add_argument("--api-key", default=None, help="API key when the server requires one")
    parser.add_argument("--timeout", type=positive_number, default=30.0, help="seconds per request (default 30)")
    parser.set_defaults(handler=_run)
