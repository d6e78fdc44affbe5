"""Helpers for configs: `get_config(arg)` receives the text after ':' in
`--config=file.py:arg`, e.g. "stage=pretrain,llm=qwen2_7b,llm_frozen=False" (parse_arg); a
job's fields are declared once as `Field`s and resolved against them (resolve)."""

from __future__ import annotations

import ast
import copy
import dataclasses
import difflib

import ml_collections


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
    """Parses "k=v,k2=v2" over `defaults`, the one parser of config-file arguments: a value
    whose default is a string stays text ("llm=qwen2_7b", "datasets=a+b"), a boolean's is
    true for 1/true/yes (a bare "k" means k=True), others are Python literals when they parse
    ("steps=300", "seeds=3"), else text. Unknown keys are an error naming the closest one."""
    out = ml_collections.ConfigDict(defaults)
    for item in filter(None, (arg or "").split(",")):
        key, has_value, value = item.partition("=")
        key = key.strip()
        if key not in defaults:
            raise unknown_key("config argument", key, defaults)
        default = defaults[key]
        if not has_value:
            if not isinstance(default, bool):
                raise ValueError(f"config argument {key!r} needs a value: {key}=...")
            parsed = True
        elif isinstance(default, str):
            parsed = value
        elif isinstance(default, bool):
            parsed = value.lower() in ("1", "true", "yes")
        else:
            try:
                parsed = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                parsed = value
        out[key] = parsed
    return out


def unknown_key(what: str, key: str, known) -> ValueError:
    """The error for a key that is not one of `known`: the closest known key, then all."""
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ValueError(f"unknown {what} {key!r}{hint}; known: {', '.join(sorted(known))}")



class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED = _Required()  # no default: the config must set it (the job's checks say how)
ABSENT = object()  # no default filled in: absence itself means something (e.g. `system`)


@dataclasses.dataclass(frozen=True)
class Field:
    """One config field: its default (a dict of Fields for a group) and what it does."""

    default: object
    doc: str

    @property
    def is_group(self) -> bool:
        return (
            isinstance(self.default, dict)
            and bool(self.default)
            and all(isinstance(f, Field) for f in self.default.values())
        )


def group(doc: str, **fields: Field) -> Field:
    return Field(dict(fields), doc)


def resolve(
    config, fields: dict[str, Field], what: str, where: str = "config"
) -> ml_collections.ConfigDict:
    """A copy of `config` checked against `fields`, with every default filled in: a key that is
    not a field is an error naming the closest one (and `where` it is, e.g. a list entry's
    "config.eval.evaluators[0]"); `config` itself is never changed."""
    values = config.to_dict() if hasattr(config, "to_dict") else copy.deepcopy(dict(config))
    return ml_collections.ConfigDict(_resolve(values, fields, where, what))


def _resolve(values: dict, fields: dict[str, Field], where: str, what: str) -> dict:
    for key in sorted(set(values) - set(fields)):
        raise unknown_key(f"{what} field in {where}", key, fields)
    out = {}
    for name, field in fields.items():
        value = values.get(name, ABSENT)
        if field.is_group:
            inner = {} if value is ABSENT or value is None else dict(value)
            out[name] = _resolve(inner, field.default, f"{where}.{name}", what)
        elif value is not ABSENT:
            out[name] = value
        elif field.default is not ABSENT and field.default is not REQUIRED:
            out[name] = copy.deepcopy(field.default)
    return out
