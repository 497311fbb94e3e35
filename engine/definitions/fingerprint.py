"""Fingerprints: 8 bytes of blake2b over canonical JSON.

A view's fingerprint covers exactly what changes the meaning of its tile partials
(docs/semantics.md section 8), so the state of a changed view is never reused.
"""

from __future__ import annotations

import hashlib

import orjson


def canonical_json(data: object) -> bytes:
    """JSON with sorted keys and no whitespace: equal data gives equal bytes."""
    return orjson.dumps(data, option=orjson.OPT_SORT_KEYS)


def fingerprint_of(data: object) -> bytes:
    return hashlib.blake2b(canonical_json(data), digest_size=8).digest()
