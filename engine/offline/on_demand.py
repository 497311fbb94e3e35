"""On-demand features of a training set, through the one transform runner serving uses."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import polars as pl

from engine.definitions.transform_runner import TransformRunError, TransformSpec, run_transform
from engine.offline.exceptions import OnDemandComputationError, TrainingSetError
from engine.offline.service_entries import OfflineOnDemand, on_demand_outputs, resolve_function

_DTYPES: Mapping[str, type[pl.DataType]] = {
    "string": pl.Utf8,
    "int": pl.Int64,
    "float": pl.Float64,
    "bool": pl.Boolean,
}


def compute_on_demand(
    odfv: OfflineOnDemand, inputs: pl.DataFrame, names: Sequence[str] | None = None
) -> dict[str, pl.Series]:
    """Run the ODFV over ``inputs`` (one row per spine row) through the one transform
    runner serving uses, so values and refusals are the same as online."""
    outputs = on_demand_outputs(odfv)
    wanted = list(outputs) if names is None else list(names)
    unknown = [n for n in wanted if n not in outputs]
    if unknown:
        raise TrainingSetError(
            f"OnDemandFeatureView '{odfv.name}': features {unknown} are not in its schema {list(outputs)}."
        )
    spec = TransformSpec(
        name=odfv.name,
        fn=resolve_function(odfv),
        mode=str(getattr(odfv.mode, "value", odfv.mode)),
        input_types=dict(odfv.input_types),
        output_types=dict(odfv.feature_types),
    )
    columns = {name: inputs.get_column(name).to_list() for name in spec.input_types}
    try:
        result = run_transform(spec, columns, inputs.height)
    except TransformRunError as exc:
        where = f" on spine row {exc.row}" if exc.row is not None else ""
        raise OnDemandComputationError(
            f"OnDemandFeatureView '{odfv.name}' ({odfv.fn}){where}: " + "; ".join(p.describe() for p in exc.problems),
            hint=exc.hint,
        ) from exc
    return {n: pl.Series(n, result.columns[n], dtype=_DTYPES.get(outputs[n], pl.Float64)) for n in wanted}
