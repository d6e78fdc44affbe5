"""Helpers for config files: `get_config(arg)` receives the text after ':' in
`--config=file.py:arg`, e.g. "stage=pretrain,llm=qwen2_7b,llm_frozen=False"."""

from __future__ import annotations

import ast
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
