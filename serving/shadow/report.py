"""A shadow run's report from its outcomes: ``report.json``, ``report.md`` and
``mismatch_rates.svg`` (docs/shadow.md describes every field).

Per feature: rows compared, mismatches, the mismatch rate and the count per cause; per
cause, a few examples (entity, both values and statuses, the evidence); every request
that failed, with the side and the reason.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson

from engine.timefmt import iso_utc
from engine.wording import counted
from serving.shadow.classify import CAUSES
from serving.shadow.outcome import Outcome
from serving.shadow.svg import rate_bars

EXAMPLES_PER_CAUSE = 3
MAX_FAILURES_LISTED = 50


# Any: the JSON report built by summarize(), indexed several levels deep by markdown() and write_report()
def summarize(outcomes: Sequence[Outcome], about: Mapping[str, object]) -> dict[str, Any]:
    """The JSON report: ``about`` (who was compared, how), totals, per-feature rates, failures, examples."""
    compared: Counter[str] = Counter()
    mismatched: Counter[str] = Counter()
    causes: dict[str, Counter[str]] = defaultdict(Counter)
    examples: dict[str, dict[str, list[dict[str, object]]]] = defaultdict(lambda: defaultdict(list))
    failures = []
    for outcome in outcomes:
        compared.update(outcome.compared)
        if outcome.failure is not None:
            failures.append({"request": outcome.request, **asdict(outcome.failure)})
        for m in outcome.mismatches:
            mismatched[m.feature] += 1
            causes[m.feature][m.cause] += 1
            kept = examples[m.feature][m.cause]
            if len(kept) < EXAMPLES_PER_CAUSE:
                kept.append(
                    {
                        "request": outcome.request,
                        "as_of_ms": outcome.as_of_ms,
                        **{k: v for k, v in asdict(m).items() if k not in ("feature", "cause")},
                    }
                )
    features = {
        name: {
            "compared": compared[name],
            "mismatches": mismatched[name],
            "mismatch_rate": mismatched[name] / compared[name] if compared[name] else 0.0,
            "causes": dict(sorted(causes[name].items())),
            "examples": {c: examples[name][c] for c in causes[name]},
        }
        for name in sorted(set(compared) | set(mismatched))
    }
    failure_reasons = Counter(f"{f['side']}:{f['reason']}" for f in failures)
    report = {
        "about": dict(about),
        "requests": {
            "total": len(outcomes),
            "compared": len(outcomes) - len(failures),
            "failed": len(failures),
            "failed_by_reason": dict(sorted(failure_reasons.items())),
        },
        "values": {"compared": sum(compared.values()), "mismatches": sum(mismatched.values())},
        "causes": {
            cause: sum(c[cause] for c in causes.values())
            for cause in CAUSES
            if any(cause in c for c in causes.values())
        },
        "features": features,
        "failures": failures,
    }
    report["warning"] = coverage_warning(report)
    return report


# Any: the JSON report built by summarize()
def coverage_warning(report: Mapping[str, Any]) -> str | None:
    """What the report does not cover, said where a reader looks first (the top of report.md,
    stderr): nothing compared at all, or requests one side failed. None when every request
    was compared. A report with no values compared shows no agreement, whatever it lists."""
    about, requests, values = report["about"], report["requests"], report["values"]
    failed = []
    for key, n in requests["failed_by_reason"].items():
        side, reason = key.split(":", 1)
        url = about.get(side)
        failed.append(f"{side} {reason}" + (f" at {url}" if url else "") + f" for {counted(n, 'request')}")
    if values["compared"] == 0:
        why = "; ".join(failed) if failed else f"{counted(requests['total'], 'request')}, none with a value to compare"
        return (
            f"nothing was compared: 0 values compared ({why}); this report shows no agreement, "
            "only that no value could be compared"
        )
    if failed:
        return (
            f"{requests['failed']} of {counted(requests['total'], 'request')} not compared ({'; '.join(failed)}); "
            f"the rates cover the other {requests['compared']}"
        )
    return None


def _cell(value: object) -> str:
    return "null" if value is None else orjson.dumps(value).decode()[:60]


# Any: the JSON report built by summarize(), indexed several levels deep by markdown() and write_report()
def markdown(report: Mapping[str, Any]) -> str:
    about, requests, values = report["about"], report["requests"], report["values"]
    lines = [
        "# Shadow run report",
        "",
        f"Baseline `{about.get('baseline')}` against streamfeat `{about.get('streamfeat')}`"
        f" ({about.get('source')}), numeric tolerance: absolute {about.get('tolerance', {}).get('absolute', 0)},"
        f" relative {about.get('tolerance', {}).get('relative', 0)}.",
        "",
        *([f"**Warning: {report['warning']}.**", ""] if report.get("warning") else []),
        f"- requests: {requests['total']} ({requests['compared']} compared, {requests['failed']} failed)",
        f"- values compared: {values['compared']}, mismatches: {values['mismatches']}"
        + (f" ({values['mismatches'] / values['compared']:.2%})" if values["compared"] else ""),
        "",
        "![mismatch rate per feature](mismatch_rates.svg)",
        "",
        "## Mismatch rate per feature",
        "",
        "| feature | compared | mismatches | rate | causes |",
        "|---|---:|---:|---:|---|",
    ]
    for name, f in report["features"].items():
        causes = ", ".join(f"{c} {n}" for c, n in f["causes"].items()) or "-"
        lines.append(f"| `{name}` | {f['compared']} | {f['mismatches']} | {f['mismatch_rate']:.2%} | {causes} |")
    lines += ["", "## Causes", ""]
    lines += [f"- **{c}** ({n}): {CAUSES[c]}" for c, n in report["causes"].items()] or [
        "No mismatches." if values["compared"] else "Nothing compared, so no mismatch could be found."
    ]
    for name, f in report["features"].items():
        for cause, kept in f["examples"].items():
            lines += [
                "",
                f"### `{name}`: {cause}",
                "",
                "| entity | as of | streamfeat | baseline | evidence |",
                "|---|---|---|---|---|",
            ]
            for e in kept:
                entity = ", ".join(f"{k}={v}" for k, v in e["entity"].items())
                lines.append(
                    f"| {entity} | {iso_utc(e['as_of_ms'])} | {_cell(e['streamfeat'])} "
                    f"({e['streamfeat_status']}) | {_cell(e['baseline'])} ({e['baseline_status']}) "
                    f"| {e['evidence']} |"
                )
    if report["failures"]:
        lines += ["", "## Failed requests", "", "| request | side | reason | detail |", "|---:|---|---|---|"]
        for failure in report["failures"][:MAX_FAILURES_LISTED]:
            detail = str(failure["detail"]).replace("|", "\\|").replace("\n", " ")[:160]
            lines.append(f"| {failure['request']} | {failure['side']} | {failure['reason']} | {detail} |")
        if len(report["failures"]) > MAX_FAILURES_LISTED:
            lines.append(f"\n({len(report['failures']) - MAX_FAILURES_LISTED} more in report.json)")
    return "\n".join(lines) + "\n"


# Any: the JSON report built by summarize(), indexed several levels deep by markdown() and write_report()
def write_report(out: Path, outcomes: Sequence[Outcome], about: Mapping[str, object]) -> dict[str, Any]:
    """Write report.json, report.md and mismatch_rates.svg under ``out``; returns the JSON report."""
    report = summarize(outcomes, about)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    (out / "report.md").write_text(markdown(report), encoding="utf-8")
    bars = {
        name: (f["mismatch_rate"], {c: n / f["compared"] for c, n in f["causes"].items()} if f["compared"] else {})
        for name, f in report["features"].items()
    }
    (out / "mismatch_rates.svg").write_text(rate_bars(bars, list(CAUSES)), encoding="utf-8")
    return report
