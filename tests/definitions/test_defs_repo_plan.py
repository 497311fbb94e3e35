"""load_repo collects every error across modules; plan/apply diff and the plan file."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import textwrap
from pathlib import Path

import pytest

import cli as cli
from engine.definitions import (
    FeatureRepo,
    PlanError,
    PlanMismatchError,
    RepoValidationError,
    check_on_demand,
    load_repo,
)
from engine.plan import (
    DEFAULT_SHARDS,
    PLAN_FORMAT_VERSION,
    ViewJoin,
    apply_plan,
    complete_joins,
    compute_plan,
    default_plan_path,
    load_applied,
    load_applied_plan,
)
from engine.state.rocksdb_store import RocksDBStore

REPO_ROOT = Path(__file__).resolve().parents[2]

ENTITIES = """
from engine.definitions import Entity
user = Entity(name="user", join_keys=["user_id"])
"""
SOURCES = """
from datetime import timedelta
from engine.definitions import EventSource, RequestSource
tx = EventSource(name="tx", topic="tx", timestamp_field="ts",
                 schema={"user_id": "string", "amount": "float", "kind": "string"},
                 allowed_lateness=timedelta(minutes=1))
req = RequestSource(name="req", schema={"amount": "float"})
"""
VIEWS = """
from datetime import timedelta
from engine.definitions import Aggregation, StreamFeatureView, col
from {pkg}.entities import user
from {pkg}.sources import tx
spend = StreamFeatureView(name="spend", source=tx, entities=[user], filter=col("kind") == "BUY",
    aggregations=[Aggregation(column="amount", function="sum", window=timedelta(hours={hours})),
                  Aggregation(column="amount", function="count", window=timedelta(hours=1))],
    description="{description}")
"""
TRANSFORMS = """
def ratio(row):
    return {"ratio": row["amount"] / max(row["amount_sum_{hours}h"], 0.001)}
"""
ODFV = """
from engine.definitions import OnDemandFeatureView
from {pkg}.sources import req
from {pkg}.views import spend
ratio = OnDemandFeatureView(name="ratio", sources=[spend, req], schema={"ratio": "float"},
                            fn="{pkg}.transforms:ratio")
"""
SERVICES = """
from engine.definitions import FeatureService
from {pkg}.views import spend
from {pkg}.odfv import ratio
scoring = FeatureService(name="scoring", features=[spend, ratio])
"""
MORE_VIEWS = """
from datetime import timedelta
from engine.definitions import Aggregation, StreamFeatureView
from {pkg}.entities import user
from {pkg}.sources import tx
big_spend = StreamFeatureView(name="big_spend", source=tx, entities=[user],
    aggregations=[Aggregation(column="amount", function="max", window=timedelta(hours=1))])
"""


def write_repo(root: Path, pkg: str, hours: int = 1, description: str = "", services: bool = True) -> Path:
    repo = root / pkg
    repo.mkdir(parents=True, exist_ok=True)
    files = {
        "__init__.py": "",
        "entities.py": ENTITIES,
        "sources.py": SOURCES,
        "views.py": VIEWS,
        "transforms.py": TRANSFORMS,
        "odfv.py": ODFV,
        "services.py": SERVICES if services else "",
    }
    for name, text in files.items():
        path = repo / name
        for key, value in (("{pkg}", pkg), ("{hours}", str(hours)), ("{description}", description)):
            text = text.replace(key, value)
        path.write_text(textwrap.dedent(text))
        # Stale bytecode is keyed by (mtime, size): push the mtime so a rewrite is always re-read.
        stamp = path.stat().st_mtime + 10 + hours
        os.utime(path, (stamp, stamp))
    return repo


@pytest.fixture(autouse=True)
def _restore_sys_path() -> object:
    saved = list(sys.path)
    yield
    sys.path[:] = saved
    for name in [m for m in sys.modules if m.startswith("repo_")]:
        del sys.modules[name]


def test_load_valid_repo(tmp_path: Path) -> None:
    repo = load_repo(write_repo(tmp_path, "repo_ok"))
    assert [v.name for v in repo.views] == ["spend"]
    assert [e.name for e in repo.entities] == ["user"]
    assert [s.name for s in repo.sources] == ["tx"]
    assert [r.name for r in repo.request_sources] == ["req"]
    assert repo.service("scoring").feature_names == ("amount_sum_1h", "amount_count_1h", "ratio")
    out = check_on_demand(repo.on_demand_view("ratio"), {"amount": 5.0, "amount_sum_1h": 2.0})
    assert out == {"ratio": 2.5}


def test_load_repo_reports_every_error_across_modules(tmp_path: Path) -> None:
    repo = write_repo(tmp_path, "repo_bad")
    (repo / "entities.py").write_text(ENTITIES + '\nshop = Entity(name="Shop", join_keys="shop_id")\n')
    (repo / "broken.py").write_text("x = 1\nraise RuntimeError('module broken on purpose')\n")
    (repo / "exits.py").write_text("import sys\nsys.exit(3)\n")  # ended `streamfeat plan` with no output
    (repo / "more.py").write_text(
        textwrap.dedent("""
        from datetime import timedelta
        from engine.definitions import Aggregation
        bad = Aggregation(column="amount", function="summ", window=timedelta(hours=1))
    """)
    )
    (repo / "dupes.py").write_text(
        textwrap.dedent("""
        from engine.definitions import RequestSource
        other_req = RequestSource(name="req", schema={"amount": "int"})
    """)
    )
    with pytest.raises(RepoValidationError) as info:
        load_repo(repo)
    errors = info.value.errors
    text = "\n".join(errors)
    # Each error starts with file:line of the definition (or statement) at fault.
    assert f"{repo}/broken.py:2: RuntimeError: module broken on purpose" in errors
    assert f"{repo}/exits.py:2: SystemExit: 3" in errors
    assert f"{repo}/more.py:4: Aggregation 'amount_summ': field 'function'" in text
    shop = [e for e in errors if "Entity 'Shop'" in e]
    # views.py imports entities.py and fails with the same error at the same line: reported once.
    assert len(shop) == 1 and shop[0].startswith(f"{repo}/entities.py:") and "field 'join_keys'" in shop[0]
    assert not any("views.py" in e for e in errors)
    # The cross-validation of what did load still runs: two different request sources named 'req'.
    assert "RequestSource 'req': defined twice with different contents" in text
    twice = next(e for e in errors if "RequestSource 'req': defined twice" in e)
    assert twice.startswith(f"{repo}/dupes.py:3: ") or twice.startswith(f"{repo}/sources.py:")
    assert str(info.value).count("\n  - ") == len(errors)


def test_load_repo_reports_every_bad_definition_of_one_module(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = write_repo(tmp_path, "repo_many")
    (repo / "entities.py").write_text(
        ENTITIES
        + textwrap.dedent("""
        shop = Entity(name="shop", join_keys="shop_id")
        card = Entity(name="card", join_keys=["card_id"])
        bank = Entity(name="bank", join_keys=[])
    """)
    )
    (repo / "sources.py").write_text(
        SOURCES
        + textwrap.dedent("""
        late = EventSource(name="late", topic="late", timestamp_field="ts", schema={"a": "decimal"})
        uses_late = RequestSource(name=late.name, schema={"amount": "float"})
    """)
    )
    (repo / "more_views.py").write_text(
        textwrap.dedent("""
        from datetime import timedelta
        from engine.definitions import Aggregation, StreamFeatureView
        from repo_many.entities import card, shop
        from repo_many.sources import tx
        shop_spend = StreamFeatureView(name="shop_spend", source=tx, entities=[shop],
            aggregations=[Aggregation(column="amount", function="sum", window=timedelta(hours=1))])
        card_spend = StreamFeatureView(name="card_spend", source=tx, entities=[card],
            aggregations=[Aggregation(column="amount", function="summ", window=timedelta(hours=1))])
    """)
    )
    with pytest.raises(RepoValidationError) as info:
        load_repo(repo)
    errors = info.value.errors
    # Every bad definition once, each at its own line, with its field, expectation and hint;
    # definitions that only use a bad one (uses_late, shop_spend) add no error of their own.
    assert len(errors) == 4, errors
    shop_line = 1 + ENTITIES.count("\n") + 1
    assert errors[0].startswith(f"{repo}/entities.py:{shop_line}: Entity 'shop': field 'join_keys': expected ")
    assert errors[1].startswith(f"{repo}/entities.py:{shop_line + 2}: Entity 'bank': field 'join_keys': expected ")
    assert all("Hint: " in e for e in errors)
    assert any(
        e.startswith(f"{repo}/sources.py:") and "EventSource 'late'" in e and "field 'schema['a']'" in e for e in errors
    )
    assert any(e.startswith(f"{repo}/more_views.py:9: ") and "field 'function'" in e for e in errors)
    assert not any("NameError" in e or "ImportError" in e or "uses_late" in e for e in errors)
    # `streamfeat plan` prints the same list and exits 2.
    assert cli.main(["plan", "--repo", str(repo), "--plan-file", str(tmp_path / "plan.json")]) == 2
    err = capsys.readouterr().err
    assert "4 errors:" in err and all(e.splitlines()[0] in err for e in errors)


def test_importing_a_bad_module_outside_load_repo_raises_at_once(tmp_path: Path) -> None:
    from engine.definitions import DefinitionError

    repo = write_repo(tmp_path, "repo_plain")
    (repo / "entities.py").write_text(
        ENTITIES
        + textwrap.dedent("""
        shop = Entity(name="Shop", join_keys="shop_id")
        reached = True
    """)
    )
    sys.path.insert(0, str(tmp_path))
    with pytest.raises(DefinitionError, match="Entity 'Shop'"):
        __import__("repo_plain.entities")
    assert not hasattr(sys.modules.get("repo_plain.entities"), "reached")


def test_load_repo_cross_validation(tmp_path: Path) -> None:
    repo = write_repo(tmp_path, "repo_cross")
    # A service referring to a view that is not defined at module level in the repo.
    (repo / "extra.py").write_text(
        textwrap.dedent("""
        from datetime import timedelta
        from engine.definitions import Aggregation, FeatureService, StreamFeatureView
        from repo_cross.entities import user
        from repo_cross.sources import tx
        hidden = [StreamFeatureView(name="hidden", source=tx, entities=[user],
                  aggregations=[Aggregation(column="amount", function="max", window=timedelta(hours=1))])]
        svc = FeatureService(name="svc_hidden", features=hidden)
        twin = StreamFeatureView(name="twin", source=tx, entities=[user],
                  aggregations=[Aggregation(column="amount", function="max", window=timedelta(hours=1), name="m")])
        twin2 = StreamFeatureView(name="twin2", source=tx, entities=[user],
                  aggregations=[Aggregation(column="amount", function="max", window=timedelta(hours=1), name="n")])
    """)
    )
    with pytest.raises(RepoValidationError) as info:
        load_repo(repo)
    text = "\n".join(info.value.errors)
    assert "FeatureService 'svc_hidden': field 'features': StreamFeatureView 'hidden' is not defined" in text
    assert "StreamFeatureView 'twin2': same fingerprint as 'twin'" in text
    assert len(info.value.errors) == 2


def test_load_repo_missing_dir_and_bad_name(tmp_path: Path) -> None:
    with pytest.raises(RepoValidationError, match="not a directory"):
        load_repo(tmp_path / "nope")
    (tmp_path / "my-repo").mkdir()
    with pytest.raises(RepoValidationError, match="not an importable package name"):
        load_repo(tmp_path / "my-repo")


def test_load_repo_reads_the_given_path_not_a_cached_package(tmp_path: Path) -> None:
    first = load_repo(write_repo(tmp_path / "a", "repo_same", hours=1))
    second = load_repo(write_repo(tmp_path / "b", "repo_same", hours=2))
    assert first.view("spend").feature_names[0] == "amount_sum_1h"
    assert second.view("spend").feature_names[0] == "amount_sum_2h"


def test_feature_repo_direct_construction_validates(tmp_path: Path) -> None:
    repo = load_repo(write_repo(tmp_path, "repo_direct"))
    view = repo.view("spend")
    assert FeatureRepo.from_objects([view]).sources == (view.source,)  # referenced source is added
    other_source = dataclasses.replace(view.source, topic="elsewhere")
    with pytest.raises(RepoValidationError) as info:
        FeatureRepo(entities=repo.entities, sources=(other_source,), views=(view,), on_demand_views=(), services=())
    assert "StreamFeatureView 'spend': field 'source'" in str(info.value)
    with pytest.raises(RepoValidationError, match="OnDemandFeatureView 'ratio': field 'sources'"):
        FeatureRepo.from_objects([repo.on_demand_view("ratio")])


def test_plan_apply_cycle(tmp_path: Path) -> None:
    plan_file = tmp_path / "state" / "plan.json"
    repo = load_repo(write_repo(tmp_path, "repo_plan"))
    first = compute_plan(repo, None)
    assert first.first_apply and first.shards == DEFAULT_SHARDS
    assert {(c.kind, c.name, c.action) for c in first.changes} == {
        ("view", "spend", "new"),
        ("on_demand_view", "ratio", "new"),
        ("service", "scoring", "new"),
    }
    # Nothing applied, no state: the new view starts empty, there is nothing to backfill.
    assert first.needs_backfill == () and [c.name for c in first.changes if c.starts_empty] == ["spend"]
    assert "+ view spend: new  [state starts empty]" in first.render()
    assert first.render().endswith(
        "; needs backfill: none\n1 new view starts with empty state: the project holds no state yet, so there is "
        "nothing to backfill; run `streamfeat backfill` only if you have history"
    )
    # A state already there (a plan file started over): the new view misses its source's past events.
    over_state = compute_plan(repo, None, has_state=True)
    assert over_state.needs_backfill == ("spend",) and not any(c.starts_empty for c in over_state.changes)

    _, applied = apply_plan(repo, plan_file)
    data = json.loads(plan_file.read_text())
    assert data["format_version"] == PLAN_FORMAT_VERSION and data["shards"] == DEFAULT_SHARDS
    assert data["views"]["spend"]["fingerprint"] == repo.view("spend").fingerprint_hex
    assert data["views"]["spend"]["definition"] == repo.view("spend").to_dict()
    assert set(data["on_demand_views"]) == {"ratio"} and set(data["services"]) == {"scoring"}
    loaded = load_applied_plan(plan_file)
    assert loaded is not None and loaded.view_fingerprints == {"spend": repo.view("spend").fingerprint_hex}
    assert applied.shards == loaded.shards

    again = compute_plan(load_repo(repo.path), loaded)
    assert not again.has_changes and "No changes" in again.render()

    # A description change: changed, same fingerprint, no backfill.
    described = load_repo(write_repo(tmp_path, "repo_plan", description="now documented"))
    plan = compute_plan(described, loaded)
    [change] = plan.changes
    assert (change.kind, change.name, change.action, change.needs_backfill) == ("view", "spend", "changed", False)
    assert any("description" in d for d in change.details)

    # A window change: new fingerprint, needs backfill; the transform changes with it.
    widened = load_repo(write_repo(tmp_path, "repo_plan", hours=2))
    plan = compute_plan(widened, loaded)
    by_name = {c.name: c for c in plan.changes}
    assert by_name["spend"].needs_backfill and by_name["spend"].fingerprint_before != by_name["spend"].fingerprint_after
    assert by_name["scoring"].action == "changed" and not by_name["scoring"].needs_backfill
    assert "[needs backfill]" in plan.render()
    # The diff is one readable line per added or removed aggregation, not JSON.
    assert "aggregations: - amount_sum_1h = sum(amount) over 1h" in by_name["spend"].details
    assert "aggregations: + amount_sum_2h = sum(amount) over 2h" in by_name["spend"].details
    assert not any("{" in line for line in plan.render().splitlines())

    # Removing the service.
    plan = compute_plan(load_repo(write_repo(tmp_path, "repo_plan", services=False)), loaded)
    assert [(c.kind, c.name, c.action) for c in plan.changes] == [("service", "scoring", "removed")]


def test_load_applied_lists_every_mismatch_at_once(tmp_path: Path) -> None:
    plan_file = tmp_path / "plan.json"
    with pytest.raises(PlanMismatchError, match="no applied plan") as absent:
        load_applied(plan_file, [])
    assert absent.value.hint is not None and "streamfeat apply" in absent.value.hint
    repo = load_repo(write_repo(tmp_path, "repo_match"))
    apply_plan(repo, plan_file)
    spend = repo.view("spend")
    assert load_applied(plan_file, [spend]).shards == DEFAULT_SHARDS
    widened = load_repo(write_repo(tmp_path, "repo_match", hours=2)).view("spend")
    unknown = dataclasses.replace(spend, name="unknown")
    with pytest.raises(PlanMismatchError) as mismatch:
        load_applied(plan_file, [widened, unknown])
    message = str(mismatch.value)
    assert "view 'spend' changed since apply" in message
    assert f"{spend.fingerprint_hex} applied, {widened.fingerprint_hex} defined" in message
    assert "view 'unknown' is not in the applied plan" in message


def test_shards_are_fixed_at_first_apply(tmp_path: Path) -> None:
    plan_file = tmp_path / "plan.json"
    repo = load_repo(write_repo(tmp_path, "repo_shards"))
    _, applied = apply_plan(repo, plan_file, shards=4)
    assert applied.shards == 4
    _, again = apply_plan(repo, plan_file)
    assert again.shards == 4
    with pytest.raises(PlanError, match="fixed at the first apply"):
        apply_plan(repo, plan_file, shards=8)
    with pytest.raises(PlanError, match="shards"):
        compute_plan(repo, None, shards=0)


def test_bad_plan_files(tmp_path: Path) -> None:
    assert load_applied_plan(tmp_path / "absent.json") is None
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(PlanError, match="cannot be read"):
        load_applied_plan(bad)
    bad.write_text(json.dumps({"format_version": 99, "shards": 8}))
    with pytest.raises(PlanError, match="format_version"):
        load_applied_plan(bad)
    for text, kind in (("[]", "array"), ("null", "null"), ('"plan"', "string")):
        bad.write_text(text)
        with pytest.raises(PlanError, match=f"expected a JSON object .*, got a JSON {kind}$"):
            load_applied_plan(bad)
    assert default_plan_path() == Path(".streamfeat/plan.json")
    assert default_plan_path(tmp_path) == tmp_path / "plan.json"


def test_plan_refuses_transform_with_wrong_outputs(tmp_path: Path) -> None:
    repo = write_repo(tmp_path, "repo_wrong")
    (repo / "transforms.py").write_text("def ratio(row):\n    return {'ratio': 'high', 'other': 1}\n")
    with pytest.raises(RepoValidationError) as info:
        compute_plan(load_repo(repo), None)
    text = str(info.value)
    assert "field 'schema['ratio']'" in text and "undeclared output 'other'" in text


def run_cli(monkeypatch: pytest.MonkeyPatch, *argv: str) -> int:
    monkeypatch.setattr(cli, "_SUBCOMMAND_MODULES", ("cli.plan_cmd",))
    return cli.main(list(argv))


def test_cli_plan_and_apply(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in [k for k in os.environ if k.startswith("STREAMFEAT_")]:
        monkeypatch.delenv(name)
    repo = write_repo(tmp_path, "repo_cli")
    assert run_cli(monkeypatch, "plan", "--repo", str(repo)) == 0
    out = capsys.readouterr().out
    assert "+ view spend: new  [state starts empty]" in out and "needs backfill: none" in out
    assert run_cli(monkeypatch, "apply", "--repo", str(repo), "--shards", "3") == 0
    assert "3 shards" in capsys.readouterr().out
    plan_file = tmp_path / ".streamfeat" / "plan.json"
    assert json.loads(plan_file.read_text())["shards"] == 3
    assert run_cli(monkeypatch, "plan", "--repo", str(repo), "--plan-file", str(plan_file)) == 0
    assert "No changes" in capsys.readouterr().out

    # A view added before anything ran starts empty too; once a run has made the state, it needs a backfill.
    (repo / "more_views.py").write_text(MORE_VIEWS.replace("{pkg}", "repo_cli"))
    assert run_cli(monkeypatch, "plan", "--repo", str(repo)) == 0
    assert "+ view big_spend: new  [state starts empty]" in capsys.readouterr().out
    RocksDBStore(tmp_path / ".streamfeat" / "state", 3).close()  # the shards a run or backfill creates
    assert run_cli(monkeypatch, "plan", "--repo", str(repo)) == 0
    out = capsys.readouterr().out
    assert "+ view big_spend: new  [needs backfill]" in out and out.rstrip().endswith("needs backfill: big_spend")
    assert "empty state" not in out
    assert run_cli(monkeypatch, "apply", "--repo", str(repo), "--shards", "5") == 2
    assert "fixed at the first apply" in capsys.readouterr().err

    (repo / "more.py").write_text("from engine.definitions import Entity\nx = Entity(name='X', join_keys=[])\n")
    (repo / "broken.py").write_text("import no_such_module_abc\n")
    assert run_cli(monkeypatch, "plan", "--repo", str(repo)) == 2
    err = capsys.readouterr().err
    assert "2 errors:" in err and f"{repo}/more.py:2: Entity 'X'" in err
    assert f"{repo}/broken.py:1: ModuleNotFoundError" in err


def test_example_repo_loads_and_transforms_check() -> None:
    repo = load_repo(REPO_ROOT / "feature_defs")
    assert {v.name for v in repo.views} == {
        "user_spend",
        "merchant_activity",
        "user_merchant_spend",
        "user_lifetime",
        "user_amount_profile",
    }
    # The example repo shows every sketch function (issue #16: make demo prints them).
    used = {str(a.function) for v in repo.views for a in v.aggregations}
    assert {"count_distinct", "count_distinct_approx", "percentile", "median"} <= used
    user_spend = repo.view("user_spend")
    assert user_spend.source.topic == "transactions" and user_spend.join_keys == ("user_id",)
    assert user_spend.source.allowed_lateness_ms == 300_000 and user_spend.interval_ms == 60_000
    assert set(user_spend.feature_names) == {
        f"amount_{fn}_{w}" for fn in ("sum", "count", "mean") for w in ("15m", "1h", "1d")
    } | {
        "amount_max_1h",
        "amount_stddev_1d",
        "ms_since_last_purchase",
        "distinct_merchants_1h",
        "distinct_cards_1d",
        "last_5_merchants_1d",
    }
    assert repo.view("user_amount_profile").feature_names == ("amount_median_30d", "amount_p95_30d", "amount_p99_30d")
    assert repo.view("merchant_activity").join_keys == ("merchant_id",)
    velocity = check_on_demand(repo.on_demand_view("spend_velocity"), {"amount": 50.0, "amount_sum_15m": 0.0})
    assert velocity == {"spend_velocity_ratio": pytest.approx(50.0 / 0.001)}
    share = check_on_demand(
        repo.on_demand_view("user_merchant_share"), {"amount_sum_1h": 30.0, "merchant_amount_sum_1h": 120.0}
    )
    assert share == {"user_merchant_share_1h": 0.25}
    guarded = check_on_demand(
        repo.on_demand_view("user_merchant_share"), {"amount_sum_1h": 30.0, "merchant_amount_sum_1h": 0.0}
    )
    assert guarded == {"user_merchant_share_1h": 0.0}
    service = repo.service("fraud_scoring")
    assert service.entity_join_keys == ("user_id", "merchant_id")
    assert dict(service.request_fields) == {"amount": "float"}
    assert service.feature_names[-13:] == (
        "merchant_txn_count_15m",
        "merchant_txn_count_1h",
        "pair_txn_count_1d",
        "pair_amount_sum_1d",
        "pair_ms_since_last_1d",
        "pair_first_seen_1d",
        "user_purchases_lifetime",
        "user_first_seen_lifetime",
        "amount_median_30d",
        "amount_p95_30d",
        "amount_p99_30d",
        "spend_velocity_ratio",
        "user_merchant_share_1h",
    )


def test_load_repo_reports_every_bad_aggregation_of_one_view(tmp_path: Path) -> None:
    repo = write_repo(tmp_path, "repo_aggs")
    (repo / "more_views.py").write_text(
        textwrap.dedent("""
        from datetime import timedelta
        from engine.definitions import Aggregation, StreamFeatureView
        from repo_aggs.entities import user
        from repo_aggs.sources import tx
        columns = ["amount"]
        two_bad = StreamFeatureView(name="two_bad", source=tx, entities=[user], aggregations=[
            Aggregation(column="amount", function="maxx", window=timedelta(hours=1)),
            Aggregation(column="amount", function="sum", window=timedelta(hours=1)),
            Aggregation(column="amount", function="last_n", window=timedelta(hours=1), n=0),
            *[Aggregation(column=c, function="count", window=timedelta(hours=1)) for c in columns],
        ])
    """)
    )
    with pytest.raises(RepoValidationError) as info:
        load_repo(repo)
    errors = info.value.errors
    # Both bad aggregations, each at its own line; the good ones and the comprehension add nothing.
    assert len(errors) == 2, errors
    assert errors[0].startswith(f"{repo}/more_views.py:8: ") and "field 'function'" in errors[0], errors
    assert errors[1].startswith(f"{repo}/more_views.py:10: ") and "'n'" in errors[1], errors


def _misspell_transform(repo: Path) -> Path:
    """Point the repo's on-demand view at a function that does not exist; return its file."""
    path = next(p for p in repo.glob("*.py") if 'fn="' in p.read_text())
    path.write_text(path.read_text().replace(':ratio"', ':ratioo"', 1))
    return path


def test_load_repo_lists_a_transform_that_does_not_import_with_the_other_errors(tmp_path: Path) -> None:
    repo = write_repo(tmp_path, "repo_fn")
    where = _misspell_transform(repo)
    (repo / "entities.py").write_text(ENTITIES + '\nshop = Entity(name="Shop", join_keys="shop_id")\n')
    with pytest.raises(RepoValidationError) as info:
        load_repo(repo)
    errors = info.value.errors
    fn = [e for e in errors if "field 'fn'" in e]
    assert len(fn) == 1 and fn[0].startswith(f"{where}:") and "ratioo" in fn[0], errors
    assert any("Entity 'Shop'" in e for e in errors)


def test_plan_places_a_transform_error_at_its_definition(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = write_repo(tmp_path, "repo_fn_only")
    where = _misspell_transform(repo)
    assert cli.main(["plan", "--repo", str(repo), "--plan-file", str(tmp_path / "plan.json")]) == 2
    err = capsys.readouterr().err
    assert f"- {where}:" in err and "field 'fn'" in err, err


def test_apply_records_the_join_of_views_applied_over_a_running_stream(tmp_path: Path) -> None:
    """docs/semantics.md section 8: a view that needs a backfill joins its stream at the time
    ``join_time`` gives; a rename keeps the join; removal forgets it, so a later re-apply joins
    anew; a completed backfill ends it; a plan file without joins still reads."""
    plan_file = tmp_path / "state" / "plan.json"
    repo = load_repo(write_repo(tmp_path, "repo_plan"))
    asked: list[str] = []

    def join_time(topic: str) -> int | None:
        asked.append(topic)
        return 1_767_225_600_000

    _, first = apply_plan(repo, plan_file, join_time=join_time)
    assert first.joins == {} and asked == []  # nothing applied yet: every view starts with its stream
    widened = load_repo(write_repo(tmp_path, "repo_plan", hours=2))
    _, changed = apply_plan(widened, plan_file, has_state=True, join_time=join_time)
    fp = widened.view("spend").fingerprint_hex
    assert changed.joins == {fp: ViewJoin("spend", widened.view("spend").source.topic, 1_767_225_600_000)}
    assert changed.join_ms(fp) == 1_767_225_600_000 and asked == [widened.view("spend").source.topic]
    loaded = load_applied_plan(plan_file)
    assert loaded is not None and loaded.joins == changed.joins
    _, again = apply_plan(widened, plan_file, has_state=True, join_time=lambda topic: 0)
    assert again.joins == changed.joins  # applied again unchanged: the join stays
    complete_joins(plan_file, [fp])
    done = load_applied_plan(plan_file)
    assert done is not None and done.joins == {} and done.view_fingerprints == again.view_fingerprints
    # An older plan file, written before joins were recorded, reads as holding none.
    data = json.loads(plan_file.read_text())
    del data["joins"]
    plan_file.write_text(json.dumps(data))
    older = load_applied_plan(plan_file)
    assert older is not None and older.joins == {}
    data["joins"] = {fp: {"view": "spend"}}
    plan_file.write_text(json.dumps(data))
    with pytest.raises(PlanError, match="'joins' is not what `streamfeat apply` writes"):
        load_applied_plan(plan_file)
