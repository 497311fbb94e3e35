"""The digest of an on-demand transform's code: part of its view's definition.

An on-demand view names its transform by import path, so editing the function's body
changes nothing else in the definition. Its ``to_dict()`` (and so ``streamfeat plan``'s
diff and the service fingerprint) carries this digest, so a code change is a definition
change. It is a SHA-256 over the source text (``inspect.getsource``) of the transform and
of every function or class of the transform's own module that it refers to by a global
name, transitively (its helpers). The source text is the same in every process and
Python version; a comment or blank line inside those functions counts as a change.

Without source (a module loaded from bytecode only, a function made at run time), the
digest covers the code objects instead (bytecode, constants, names), which are the same
across processes of one Python version but not across versions; the digest says so
(``bytecode-py3.11 sha256:...``). Code in other modules (imported helpers, libraries) is
not covered. Never ``id()`` or ``hash()``: both change from one process to the next.
"""

from __future__ import annotations

import hashlib
import inspect
import sys
import types
from collections.abc import Callable

#: The digest's prefix when it covers the source text.
SOURCE_KIND = "source"


def code_digest(function: Callable[..., object]) -> str:
    """``"<kind> sha256:<hex>"`` of the transform's code and its same-module helpers."""
    digest = hashlib.sha256()
    from_bytecode = False
    for name, item in _code_closure(function):
        source = _source_text(item)
        digest.update(name.encode() + b"\0")
        if source is not None:
            digest.update(b"source\0" + source.encode())
            continue
        code = getattr(item, "__code__", None)
        from_bytecode = True
        if isinstance(code, types.CodeType):
            digest.update(b"code\0" + _code_bytes(code))
        else:  # a callable object without code of its own: only its name is known
            digest.update(b"opaque\0" + f"{type(item).__module__}.{type(item).__qualname__}".encode())
    kind = f"bytecode-py{sys.version_info.major}.{sys.version_info.minor}" if from_bytecode else SOURCE_KIND
    return f"{kind} sha256:{digest.hexdigest()[:32]}"


def _target(function: Callable[..., object]) -> object:
    """What holds the code: the innermost wrapped function, or a callable object's class."""
    unwrapped = inspect.unwrap(function)
    if isinstance(unwrapped, types.FunctionType | types.MethodType | type):
        return unwrapped
    return type(unwrapped)


def _code_closure(function: Callable[..., object]) -> list[tuple[str, object]]:
    """The transform, then the functions and classes of its module it names (transitively),
    each once, in a deterministic order (by name after the transform itself)."""
    root = _target(function)
    module = getattr(root, "__module__", None)
    seen: dict[str, object] = {"": root}
    pending = [root]
    while pending:
        item = pending.pop()
        globals_ = getattr(item, "__globals__", None)
        code = getattr(item, "__code__", None)
        if not isinstance(globals_, dict) or not isinstance(code, types.CodeType):
            continue
        for name in sorted(_global_names(code)):
            value = globals_.get(name)
            if name in seen or value is root:
                continue
            if isinstance(value, types.FunctionType | type) and getattr(value, "__module__", None) == module:
                seen[name] = value
                pending.append(value)
    return [("", root), *sorted(((k, v) for k, v in seen.items() if k), key=lambda kv: kv[0])]


def _global_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def _source_text(item: object) -> str | None:
    try:
        return inspect.getsource(item)  # type: ignore[arg-type]
    except (OSError, TypeError):  # no source file (bytecode only, built at run time, builtin)
        return None


def _code_bytes(code: types.CodeType) -> bytes:
    """The behaviour of a code object as bytes: bytecode, names and constants (nested code
    objects too); line numbers and file names are left out."""
    parts = [code.co_code, repr((code.co_names, code.co_varnames, code.co_freevars, code.co_cellvars)).encode()]
    parts += [_const_bytes(const) for const in code.co_consts]
    return b"\0".join(parts)


def _const_bytes(const: object) -> bytes:
    if isinstance(const, types.CodeType):
        return b"code(" + _code_bytes(const) + b")"
    if isinstance(const, frozenset):  # iteration order follows hash(), which differs per process
        return b"frozenset(" + b",".join(sorted(_const_bytes(c) for c in const)) + b")"
    if isinstance(const, tuple):
        return b"tuple(" + b",".join(_const_bytes(c) for c in const) + b")"
    return f"{type(const).__name__}:{const!r}".encode()
