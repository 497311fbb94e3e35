"""``Entity``: the thing features are about, identified by one or more join keys."""

from __future__ import annotations

from collections.abc import Sequence

from engine.definitions.base import FIELD_RE, Checker, definition
from engine.json_types import JSONObject


@definition("Entity")
class Entity:
    name: str
    join_keys: Sequence[str]
    description: str = ""

    def __post_init__(self) -> None:
        c = Checker("Entity", self.name)
        c.name_field("name", self.name)
        keys: tuple[str, ...] = ()
        if isinstance(self.join_keys, str):
            c.add(
                "join_keys",
                "a list of key names",
                self.join_keys,
                f"write join_keys=[{self.join_keys!r}]",
                type_error=True,
            )
        elif not isinstance(self.join_keys, Sequence):
            c.add("join_keys", "a list of key names", self.join_keys, "write join_keys=['user_id']", type_error=True)
        else:
            keys = tuple(self.join_keys)
            if not keys:
                c.add("join_keys", "at least one key", self.join_keys, "write join_keys=['user_id']")
            for key in keys:
                if not isinstance(key, str) or not FIELD_RE.match(key):
                    c.add(
                        "join_keys",
                        "field names matching [A-Za-z_][A-Za-z0-9_]*",
                        key,
                        "use the name of a source field, e.g. 'user_id'",
                    )
            if len(set(keys)) != len(keys):
                c.add("join_keys", "distinct keys", list(keys), "list each key once")
        c.text("description", self.description)
        c.check()
        object.__setattr__(self, "join_keys", keys)

    def to_dict(self) -> JSONObject:
        return {"name": self.name, "join_keys": list(self.join_keys), "description": self.description}
