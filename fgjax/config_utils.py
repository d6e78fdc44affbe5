"""Helpers for config files: `get_config(arg)` receives the text after ':' in
`--config=file.py:arg`, e.g. "stage=pretrain,llm=qwen2_7b,llm_frozen=False"."""

from __future__ import annotations

import ast

import ml_collections


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
    """Parses "k=v,k2=v2" (values as Python literals when possible, else strings) over
    `defaults`. Unknown keys are an error listing the known ones; a bare "k" means k=True."""
    out = ml_collections.ConfigDict(defaults)
    for item in filter(None, (arg or "").split(",")):
        key, _, value = item.partition("=")
        key = key.strip()
        if key not in defaults:
            raise ValueError(f"unknown config argument {key!r}; known: {sorted(defaults)}")
        if not _:
            parsed = True
        else:
            try:
                parsed = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                parsed = value
        expected = type(defaults[key])
        if defaults[key] is not None and expected is bool and isinstance(parsed, str):
            parsed = parsed.lower() in ("1", "true", "yes")
        out[key] = parsed
    return out
