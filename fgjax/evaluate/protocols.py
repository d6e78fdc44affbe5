"""Evaluation protocols behind one interface, chosen by the names in `config.protocols`.

A protocol is one module that registers a `Protocol`:

    register(Protocol("likelihood", LikelihoodConfig, run))

  options  its options dataclass: the fields of `config.protocols.<name>`, with defaults
  run      run(context, cfg, dataset, spec) -> [Result] for each dataset of the config
  sources  for a protocol with inputs of its own instead (general_qa's question sources):
           sources(entry) -> [(group, source)] from its config entry, and then
           run(context, cfg, group, source) -> [Result] for each

The modules named in MODULES are imported the first time the registry is read, so a new
protocol is its own file plus its name there.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from pathlib import Path

from fgjax.config_utils import unknown_key

MODULES = ("likelihood", "choices", "generation", "probe", "vqa")


@dataclasses.dataclass
class Context:
    """What every protocol may use: the evaluator, the evaluation config, its output folder,
    and a cache shared by the protocols of one evaluation (e.g. a negatives miner)."""

    evaluator: object  # fgjax.evaluate.evaluator.Evaluator
    config: object  # the evaluation's ml_collections config
    workdir: Path
    cache: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Protocol:
    name: str
    options: type
    run: Callable
    sources: Callable | None = None
    inputs: tuple[str, ...] = ()  # keys of its config entry that are input, not options

    @property
    def per_dataset(self) -> bool:
        return self.sources is None


_REGISTRY: dict[str, Protocol] = {}


def register(protocol: Protocol) -> Protocol:
    if protocol.name in _REGISTRY and _REGISTRY[protocol.name] != protocol:
        raise ValueError(f"two protocols are named {protocol.name!r}")
    _REGISTRY[protocol.name] = protocol
    return protocol


def registry() -> dict[str, Protocol]:
    for module in MODULES:
        importlib.import_module(f"fgjax.evaluate.{module}")
    return dict(_REGISTRY)


def get(name: str) -> Protocol:
    found = registry()
    if name not in found:
        raise unknown_key("protocol", name, found)
    return found[name]


def options(name: str, values) -> object:
    """The protocol's options dataclass from a dict (less its input keys, such as general_qa's
    "sources"); an unknown field names the closest one."""
    protocol = get(name)
    cls = protocol.options
    values = {k: v for k, v in dict(values or {}).items() if k not in protocol.inputs}
    fields = {f.name for f in dataclasses.fields(cls)}
    for key in sorted(set(values) - fields):
        raise unknown_key(f"option of protocols.{name}", key, fields)
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
