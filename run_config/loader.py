"""Load JSON run configs into typed, validated pydantic models (the one loader of the toolkit)."""

from __future__ import annotations

import difflib
import json
import re
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationError

from run_config.errors import ConfigError

COMMENT_KEY = "_comment"
# Error type of a validator whose value may be a credential: the message never shows the value.
SECRET_ERROR = "secret_value"
_TRUE_FALSE = {"True": True, "False": False, "true": True, "false": False}


class StageConfig(BaseModel):
    """Base of every stage config: unknown keys are errors, types are strict."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    # Keys of the original LM-Lexicon JSON configs: original name -> field name, or None for a key
    # that is accepted for compatibility but has no effect here.
    legacy_keys: ClassVar[dict[str, str | None]] = {}
    # Keys naming the files, folders and models a stage reads: its manifest records their fingerprint
    # (runtime.inputs_fingerprint) and the outputs are redone when one changes.
    INPUT_FIELDS: ClassVar[tuple[str, ...]] = ()


T = TypeVar("T", bound=StageConfig)


def _line_of(text: str, key: str) -> int | None:
    m = re.search(r'"' + re.escape(key) + r'"\s*:', text)
    return text.count("\n", 0, m.start()) + 1 if m else None


def _repeat_at(path: Path, text: str, key: str) -> str:
    """`path:line` of the second `"key":` when the text has exactly two (else which one repeats is unclear)."""
    matches = list(re.finditer(r'"' + re.escape(key) + r'"\s*:', text))
    return f"{path}:{text.count(chr(10), 0, matches[1].start()) + 1}" if len(matches) == 2 else str(path)


def _unique_keys(pairs: list[tuple[str, Any]], duplicates: list[str]) -> dict[str, Any]:
    """A JSON object as a dict; keys that occur twice are added to `duplicates`."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out and key not in duplicates:
            duplicates.append(key)
        out[key] = value
    return out


def _field_annotation(model: type[BaseModel], name: str) -> Any:
    field = model.model_fields.get(name)
    return field.annotation if field else None


def _accepts_bool(annotation: Any) -> bool:
    return annotation is bool or (
        get_origin(annotation) in (typing.Union, types.UnionType) and bool in get_args(annotation)
    )


def _translate_legacy(model: type[StageConfig], data: dict[str, Any]) -> tuple[dict, list[str]]:
    """Rename original-code keys to ours and turn their "True"/"False" strings into booleans."""
    out: dict[str, Any] = {}
    ignored: list[str] = []
    for key, value in data.items():
        if key in model.model_fields or key not in model.legacy_keys:
            out[key] = value
            continue
        target = model.legacy_keys[key]
        if target is None:
            ignored.append(key)
            continue
        if isinstance(value, str) and value in _TRUE_FALSE and _accepts_bool(_field_annotation(model, target)):
            value = _TRUE_FALSE[value]
        if target in data and target != key:
            raise ConfigError(f"keys '{key}' (original name) and '{target}' both given; keep one")
        out[target] = value
    return out, ignored


def _describe(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (str, int, float, bool, type(None), list, dict)) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _format_error(err: dict, model: type[BaseModel], source: str, text: str | None, from_cli: set[str]) -> str:
    loc = [str(p) for p in err["loc"]]
    dotted = ".".join(loc) or "<root>"
    top = loc[0] if loc else ""
    key_for_line = next((p for p in reversed(loc) if not p.isdigit()), top)
    if top in from_cli:
        where = "command line"
    else:
        line = _line_of(text, key_for_line) if text is not None else None
        where = f"{source}:{line}" if line else source
    kind = err["type"]
    if kind == "extra_forbidden":
        valid = sorted(model.model_fields) if len(loc) == 1 else []
        close = difflib.get_close_matches(loc[-1], valid, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        return f"{where}: {dotted}: unknown key{hint}"
    if kind == "missing":
        return f"{where}: {dotted}: missing required key"
    if kind == SECRET_ERROR:
        return f"{where}: {dotted}: {err['msg']}"
    return f"{where}: {dotted}: {err['msg'].lower()}, got {_describe(err.get('input'))}"


def read_json_config(path: str | Path) -> tuple[dict[str, Any], str]:
    """Read a JSON object from `path`; errors (not UTF-8, invalid JSON, a key given twice in one object)
    name the file and line."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read config: {e.strerror or e}") from e
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise ConfigError(f"{p}:{line}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start})") from None
    duplicates: list[str] = []
    try:
        data = json.loads(text, object_pairs_hook=lambda pairs: _unique_keys(pairs, duplicates))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{p}:{e.lineno}: invalid JSON: {e.msg}") from e
    if duplicates:
        raise ConfigError(
            [
                f"{_repeat_at(p, text, key)}: {key}: key given twice in one object (JSON would keep only the last)"
                for key in duplicates
            ]
        )
    if not isinstance(data, dict):
        raise ConfigError(f"{p}:1: a run config must be a JSON object, got {type(data).__name__}")
    data.pop(COMMENT_KEY, None)
    return data, text


def load_config(path: str | Path | None, model: type[T], overrides: dict[str, Any] | None = None) -> T:
    """Read `path` (JSON, optional), apply `overrides` (CLI flags), validate into `model`.

    Every problem is reported at once in one ConfigError naming the file, line and key.
    """
    source = str(path) if path is not None else "command line"
    data, text = read_json_config(path) if path is not None else ({}, None)
    data, _ignored = _translate_legacy(model, data)
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    for key, value in overrides.items():
        _set_dotted(data, key, value)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        from_cli = {k.split(".")[0] for k in overrides}
        raise ConfigError([_format_error(err, model, source, text, from_cli) for err in e.errors()]) from None


def section_problems(model: type[StageConfig], data: dict[str, Any], source: str) -> list[str]:
    """Check the keys of `data` alone (a section that others complete later): each problem as load_config
    words it, unknown keys and wrong types included, but none for required keys that `data` leaves out."""
    data, _ = _translate_legacy(model, data)
    try:
        model.model_validate(data)
    except ValidationError as e:
        return [
            _format_error(err, model, source, None, set())
            for err in e.errors()
            if not (err["type"] == "missing" and len(err["loc"]) == 1)
        ]
    return []


def ignored_legacy_keys(path: str | Path, model: type[StageConfig]) -> list[str]:
    """List the original-code keys in `path` that this toolkit accepts but does not use."""
    data, _ = read_json_config(path)
    return _translate_legacy(model, data)[1]


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"command line: {dotted}: '{part}' is not a section")
    node[parts[-1]] = value


def parse_set_option(item: str) -> tuple[str, Any]:
    """Parse one `--set key=value` item; the value is JSON when it parses, else a string."""
    if "=" not in item:
        raise ConfigError(f"command line: --set {item!r}: expected KEY=VALUE")
    key, raw = item.split("=", 1)
    try:
        return key.strip(), json.loads(raw)
    except json.JSONDecodeError:
        return key.strip(), raw


def scalar_type(annotation: Any) -> tuple[Any, bool]:
    """Return (inner type, is_list) of an annotation, unwrapping Optional."""
    if get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        annotation = args[0] if len(args) == 1 else str
    if get_origin(annotation) is list:
        return (get_args(annotation) or (str,))[0], True
    return annotation, False


def is_literal(annotation: Any) -> bool:
    return get_origin(annotation) is Literal
