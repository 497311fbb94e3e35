"""Run with the Python of a Feast virtualenv: apply a Feast repo, then call Feast's own SDK.

    <feast venv>/bin/python tests/serving/feast_sdk_support.py REPO_DIR < calls.json

REPO_DIR holds feature_store.yaml (remote online store pointing at streamfeat) and
definitions.py. stdin is a JSON list of calls, each ``{"id", "mode": "sync"|"async",
"entity_rows", "full_feature_names", and "feature_service" or "features"}``. The last
stdout line is one JSON object: the Feast version and, per call id, either the answer
(feature names, values by name, status names) or the exception Feast raised.
Standalone on purpose: it runs in Feast's environment and must not import streamfeat.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import logging
import sys
from pathlib import Path
from typing import Any


def _answer(response: Any) -> dict[str, Any]:
    from feast.protos.feast.serving.ServingService_pb2 import FieldStatus  # type: ignore[import-not-found]

    proto = response.proto
    names = list(proto.metadata.feature_names.val)
    return {
        "ok": True,
        "names": names,
        "values": response.to_dict(),
        "statuses": {
            name: [FieldStatus.Name(s) for s in result.statuses]
            for name, result in zip(names, proto.results, strict=True)
        },
    }


def _call(store: Any, call: dict[str, Any]) -> dict[str, Any]:
    features = store.get_feature_service(call["feature_service"]) if "feature_service" in call else call["features"]
    kwargs = {
        "features": features,
        "entity_rows": call["entity_rows"],
        "full_feature_names": call.get("full_feature_names", False),
    }
    try:
        if call.get("mode") == "async":
            response = asyncio.run(store.get_online_features_async(**kwargs))
        else:
            response = store.get_online_features(**kwargs)
    except Exception as exc:  # the test asserts on the class Feast raised and its message
        return {"ok": False, "module": type(exc).__module__, "class": type(exc).__name__, "message": str(exc)}
    return _answer(response)


def main(repo_dir: str) -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    from feast import FeatureStore  # type: ignore[import-not-found]

    repo = Path(repo_dir)
    sys.path.insert(0, str(repo))
    import definitions  # type: ignore[import-not-found]  # the repo's file, written by the test

    store = FeatureStore(repo_path=str(repo))
    store.apply(definitions.OBJECTS)
    calls = json.loads(sys.stdin.read())
    results = {call["id"]: _call(store, call) for call in calls}
    print(json.dumps({"feast_version": importlib.metadata.version("feast"), "results": results}))


if __name__ == "__main__":
    main(sys.argv[1])
