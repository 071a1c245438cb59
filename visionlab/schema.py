"""Typed settings: a pydantic model per config group of a task (`data.*`, `model.*`), the one place
that holds each key's type, default, range and cross-field checks. `Settings.parse` turns pydantic's
multi-line ValidationError into the project's one-line `ConfigError` naming the key and its value."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from visionlab.errors import ConfigError


def nearest(key: str, valid: Iterable[str]) -> str | None:
    """The valid key closest to `key` in spelling, or None when none is close."""
    matches = difflib.get_close_matches(key, sorted(valid), n=1, cutoff=0.6)
    return matches[0] if matches else None


def unknown_key_message(group: str, key: str, valid: Iterable[str], what: str = "") -> str:
    """`<group>.<key> is not a key of <what>; did you mean <group>.<match>?` (or the valid keys)."""
    valid = sorted(set(valid))
    where = what or group
    match = nearest(key, valid)
    hint = f"did you mean {group}.{match}?" if match else f"expected one of {', '.join(valid)}"
    return f"{group}.{key} is not a key of {where}; {hint}"


class Settings(BaseModel):
    """Base of every settings model: unknown keys are refused, values are not coerced (a string is not
    a number, a bool is not an integer), and the parsed settings are read-only."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    #: the config group the keys belong to, for messages (`data.batch_size=0 ...`)
    group: ClassVar[str] = "data"
    #: what the keys are the keys of, for the unknown-key message ("pose's data")
    owner: ClassVar[str] = ""

    @model_validator(mode="before")
    @classmethod
    def _tuples_as_lists(cls, values: Any) -> Any:
        """Python callers pass sequences as tuples (`mean=(0.5,)`); the config gives lists: both are lists."""
        if isinstance(values, Mapping):
            return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
        return values

    @classmethod
    def parse(cls, values: Mapping[str, Any] | None, owner: str = "") -> Self:
        """The settings of `values` (None = all defaults), or a one-line ConfigError for the first wrong key."""
        try:
            return cls.model_validate(dict(values or {}))
        except ValidationError as err:
            raise ConfigError(cls.error_line(err, owner or cls.owner)) from None

    @classmethod
    def keys(cls) -> frozenset[str]:
        """The keys this group takes."""
        return frozenset(cls.model_fields)

    @classmethod
    def error_line(cls, err: ValidationError, owner: str) -> str:
        """One line for the first error: a validator's own message as it is; an unknown key with the
        nearest valid one; a wrong value as `<group>.<key>=<value> must be <the field's description>`."""
        first = err.errors(include_url=False)[0]
        loc = [str(part) for part in first["loc"]]
        field = loc[0] if loc else ""
        if first["type"] == "extra_forbidden":
            return unknown_key_message(cls.group, field, cls.model_fields, owner or cls.__name__)
        if first["type"] == "value_error":  # a validator's message names the key and value itself
            return str(first["ctx"]["error"])
        key = f"{cls.group}.{field}" if field else cls.group
        info = cls.model_fields.get(field)
        expected = info.description if info is not None and info.description else first["msg"].lower()
        value = first.get("input")
        if field and isinstance(value, Mapping):  # a model-level error reports the whole mapping
            value = value.get(field)
        return f"{key}={_as_written(value)} must be {expected.removeprefix('input should be ')}"


def _as_written(value: Any) -> str:
    """`value` as the config writes it: true, false and null as in YAML, anything else as repr."""
    if isinstance(value, bool):
        return str(value).lower()
    return "null" if value is None else repr(value)


class ModelSettings(Settings):
    """`model.*` of a task: `arch` names one of the task's networks (`archs`, the first the default)."""

    group: ClassVar[str] = "model"
    #: the networks this task builds, by `model.arch`; the first is the default
    archs: ClassVar[tuple[str, ...]] = ()
    #: the task, for the message about another task's network ("is not a pose model")
    task_label: ClassVar[str] = ""

    arch: str = ""

    @model_validator(mode="before")
    @classmethod
    def _default_arch(cls, values: Any) -> Any:
        if isinstance(values, dict) and "arch" not in values and cls.archs:
            return {**values, "arch": cls.archs[0]}
        return values

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, arch: str) -> str:
        if cls.archs and arch not in cls.archs:
            expected = repr(cls.archs[0]) if len(cls.archs) == 1 else f"one of {list(cls.archs)}"
            article = "an" if cls.task_label[:1] in "aeiou" else "a"
            raise ValueError(
                f"model.arch={arch!r} is not {article} {cls.task_label} model; expected {expected}"
            )
        return arch
