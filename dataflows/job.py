"""Build a :class:`StreamJob` from settings, the feature repo and the applied plan."""

from __future__ import annotations

from dataflows.stream import StreamJob, select_views
from engine.config import Settings
from engine.definitions import load_repo
from engine.plan import load_applied


def build_job(
    settings: Settings, source_name: str, *, tail: bool = True, processes: int = 1, workers: int = 1
) -> StreamJob:
    """Load the repo, check it matches the applied plan, and describe the dataflow.

    The running dataflow must compute exactly what was applied: a view changed in
    the repo but not applied would write state under a fingerprint serving does
    not know, so that is refused with a hint to run ``streamfeat apply``.
    """
    repo = load_repo(settings.repo_path)
    source, views = select_views(repo, source_name)
    plan = load_applied(settings.plan_file, views)
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
        changelog=settings.state_backup == "kafka",
        processes=processes,
        workers=workers,
        joins={v.fingerprint: at for v in views if (at := plan.join_ms(v.fingerprint_hex)) is not None},
    )
