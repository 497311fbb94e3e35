"""``streamfeat shadow``: ask a baseline feature server (Feast's HTTP shape) and streamfeat the
same questions, compare every value and write a report explaining each divergence.

    streamfeat shadow --baseline URL (--requests FILE | --replay-log DIR | --from-log FILE)
                      [--streamfeat URL] [--mapping FILE] [--tolerance X] [--rel-tolerance X] --out DIR

``--from-log`` builds the report from the JSON lines the client's live sampler wrote
(``FeatureClient(shadow=ShadowConfig(...))``) without sending anything. Requests the
baseline (or streamfeat) fails are reported one by one; the run goes on, and the report
and stderr say what was not compared. Exit 0 when the report was written and compared at
least one value, whatever it found; 1 when it compared none (a baseline that is down:
such a report shows no agreement); 2 on bad flags or input files.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from cli.common import Subparsers, non_negative_number, positive_number
from engine.exact_doubles import FLOAT_TOLERANCE
from engine.json_types import JSONObject
from engine.wording import counted

if TYPE_CHECKING:  # imported when the command runs, so `streamfeat --help` stays fast
    from serving.shadow.classify import Tolerance
    from serving.shadow.outcome import Outcome


#: Exit status of a run that compared no value (every request failed, or none had one).
NOTHING_COMPARED = 1


def register(subparsers: Subparsers) -> None:
    help_text = "compare a baseline feature server (Feast's HTTP shape) with streamfeat and explain every divergence"
    parser: argparse.ArgumentParser = subparsers.add_parser("shadow", help=help_text, description=help_text)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--requests", type=Path, help="JSON-lines file, one request per line (docs/shadow.md)")
    source.add_argument("--replay-log", type=Path, help="a request_log_dir written by `streamfeat serve`")
    source.add_argument(
        "--from-log", type=Path, help="report only: the JSON lines of the client's live shadow sampler (its log_path)"
    )
    parser.add_argument("--baseline", help="the baseline server's base URL (it answers POST /get-online-features)")
    parser.add_argument("--streamfeat", default="http://127.0.0.1:8000", help="streamfeat's base URL")
    parser.add_argument("--out", type=Path, required=True, help="directory for report.md, report.json, the plot")
    parser.add_argument("--mapping", type=Path, help="JSON file of renamed features/services (streamfeat -> baseline)")
    parser.add_argument(
        "--tolerance",
        type=non_negative_number,
        default=FLOAT_TOLERANCE,
        help="absolute numeric tolerance (default 1e-9, as docs/semantics.md; 0 with --rel-tolerance 0: exact)",
    )
    parser.add_argument(
        "--rel-tolerance",
        type=non_negative_number,
        default=FLOAT_TOLERANCE,
        help="relative numeric tolerance (default 1e-9: last-bit differences of two correct sums)",
    )
    parser.add_argument(
        "--timeout", type=positive_number, default=2.0, help="seconds to wait for each answer (default 2)"
    )
    parser.add_argument(
        "--streamfeat-api-key",
        default=os.environ.get("STREAMFEAT_API_KEY"),
        help="API key for a streamfeat server that requires one (default: $STREAMFEAT_API_KEY)",
    )
    parser.add_argument("--service", help="with --replay-log: only requests of this feature service")
    parser.add_argument("--limit", type=int, help="at most this many requests")
    parser.set_defaults(handler=_shadow)


def _shadow(args: argparse.Namespace) -> int:
    from serving.shadow.classify import Tolerance
    from serving.shadow.exceptions import ShadowSetupError
    from serving.shadow.outcome import read_outcomes
    from serving.shadow.report import write_report

    try:
        tolerance = Tolerance(args.tolerance, args.rel_tolerance)
    except ValueError as exc:
        raise ShadowSetupError(f"--tolerance / --rel-tolerance: {exc}", hint="e.g. --tolerance 1e-9") from None
    about: JSONObject = {
        "baseline": args.baseline,
        "streamfeat": args.streamfeat,
        "tolerance": {"absolute": tolerance.absolute, "relative": tolerance.relative},
    }
    outcomes: list[Outcome]
    if args.from_log is not None:
        if not args.from_log.is_file():
            raise ShadowSetupError(
                f"--from-log {args.from_log}: no such file", hint="the log_path of the client's ShadowConfig"
            )
        read = read_outcomes(args.from_log)
        outcomes = read.outcomes
        about.update(source=f"live sampler log {args.from_log}", unreadable_lines=read.unreadable_lines)
        if read.unreadable_lines:
            print(
                f"skipped {counted(len(read.unreadable_lines), 'unreadable line')} of {args.from_log}: "
                f"{read.unreadable_lines[:10]}"
            )
    else:
        outcomes = _run(args, tolerance, about)
    report = write_report(args.out, outcomes, about)
    requests, values = report["requests"], report["values"]
    print(
        f"compared {requests['compared']} of {requests['total']} requests ({requests['failed']} failed: "
        f"{requests['failed_by_reason'] or 'none'}); {values['mismatches']} of {values['compared']} values differ"
    )
    for cause, n in report["causes"].items():
        print(f"  {cause}: {n}")
    print(f"report: {args.out / 'report.md'} (and report.json, mismatch_rates.svg)")
    if report["warning"]:
        print(f"warning: {report['warning']}", file=sys.stderr)
    return 0 if values["compared"] else NOTHING_COMPARED


def _check_url(flag: str, url: str | None) -> None:
    """An http(s) URL with a host (and a valid port), else one line naming the flag."""
    import httpx

    from serving.shadow.exceptions import ShadowSetupError

    if url is None:
        return
    try:
        parsed = httpx.URL(url)
        ok = parsed.scheme in ("http", "https") and bool(parsed.host)
    except httpx.InvalidURL:
        ok = False
    if not ok:
        raise ShadowSetupError(
            f"{flag}: expected an http:// or https:// URL with a host, got {url!r}",
            hint=f"e.g. {flag} http://127.0.0.1:6566",
        )


def _run(args: argparse.Namespace, tolerance: Tolerance, about: JSONObject) -> list[Outcome]:
    from serving.shadow.exceptions import ShadowSetupError
    from serving.shadow.mapping import FeatureMapping, load_mapping
    from serving.shadow.requests_io import read_replay_log, read_requests_file
    from serving.shadow.runner import ShadowRunner

    if not args.baseline:
        raise ShadowSetupError(
            "--baseline: required with --requests or --replay-log",
            hint="e.g. --baseline http://127.0.0.1:6566 (a `feast serve`)",
        )
    for flag, url in (("--baseline", args.baseline), ("--streamfeat", args.streamfeat)):
        _check_url(flag, url)
    if args.requests is not None:
        requests = read_requests_file(args.requests)[: args.limit]
        about["source"] = f"requests file {args.requests}"
    else:
        requests = read_replay_log(args.replay_log, args.service, args.limit)
        about["source"] = f"replayed request log {args.replay_log}"
    mapping = load_mapping(args.mapping) if args.mapping is not None else FeatureMapping()
    args.out.mkdir(parents=True, exist_ok=True)
    runner = ShadowRunner(
        args.baseline,
        args.streamfeat,
        mapping=mapping,
        tolerance=tolerance,
        timeout_s=args.timeout,
        streamfeat_api_key=args.streamfeat_api_key,
    )
    outcomes = []
    try:
        with (args.out / "outcomes.jsonl").open("wb") as log:
            for request in requests:
                outcome = runner.compare(request)
                if outcome.failure is not None:
                    print(
                        f"request {request.index}: {outcome.failure.side} failed ({outcome.failure.reason}): "
                        f"{outcome.failure.detail[:120]}"
                    )
                log.write(outcome.to_line())
                outcomes.append(outcome)
    finally:
        runner.close()
    return outcomes
