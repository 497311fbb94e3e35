"""Build a :class:`StreamJob` from settings, the feature repo and the applied plan."""

from __future__ import annotations

from dataflows.exceptions import DataflowConfigError
from dataflows.stream import StreamJob, select_views
from engine.config import Settings
from engine.definitions import load_repo
from engine.plan import load_applied_plan


def build_job(settings: Settings, source_name: str, *, tail: bool = True) -> StreamJob:
    """Load the repo, check it matches the applied plan, and describe the dataflow.

    The running dataflow must compute exactly what was applied: a view changed in
    the repo but not applied would write state under a fingerprint serving does
    not know, so that is refused with a hint to run ``streamfeat apply``.
    """
    repo = load_repo(settings.repo_path)
    plan = load_applied_plan(settings.plan_file)
    if plan is None:
        raise DataflowConfigError(
            f"no applied plan at {settings.plan_file}",
            hint=f"run `streamfeat apply --repo {settings.repo}` first",
        )
    source, views = select_views(repo, source_name)
    applied = plan.view_fingerprints
    stale = [v.name for v in views if applied.get(v.name) != v.fingerprint_hex]
    if stale:
        raise DataflowConfigError(
            f"views changed since the last apply: {', '.join(stale)}",
            hint="run `streamfeat plan` to review and `streamfeat apply` to record the change",
        )
    return StreamJob(
        source=source,
        views=views,
        bootstrap=settings.kafka_bootstrap,
        state_dir=settings.state_dir,
        shards=plan.shards,
        log_root=settings.log_uri,
        redis_url=settings.redis_url or None,
        batch_size=settings.batch_size,
        tail=tail,
        metrics_port=settings.metrics_port,
    )
