"""Protocols behind one interface: the registry names them all, parses their options, and a
new one is one registration."""

from __future__ import annotations

import dataclasses

import pytest

from fgjax.evaluate import protocols


def test_the_registry_holds_every_protocol_with_its_options_dataclass():
    found = protocols.registry()
    assert set(found) == {"likelihood", "multiple_choice", "open_world", "closed_world", "probe",
                          "general_qa"}  # fmt: skip
    assert [n for n, p in found.items() if not p.per_dataset] == ["general_qa"]
    for name, protocol in found.items():
        assert dataclasses.is_dataclass(protocol.options), name
        assert protocols.options(name, {}) == protocol.options()


def test_a_new_protocol_is_one_registration(monkeypatch):
    monkeypatch.setattr(protocols, "_REGISTRY", dict(protocols.registry()))

    @dataclasses.dataclass(frozen=True)
    class CountOptions:
        limit: int = 3

    def run(context, cfg, dataset, spec):
        return [min(len(dataset), cfg.limit)]

    protocols.register(protocols.Protocol("count", CountOptions, run))
    assert protocols.options("count", {"limit": 2}) == CountOptions(2)
    assert protocols.get("count").run(None, CountOptions(2), range(5), None) == [2]
    with pytest.raises(ValueError, match="'limt' \\(did you mean 'limit'\\?\\)"):
        protocols.options("count", {"limt": 2})
    with pytest.raises(ValueError, match="two protocols are named 'count'"):
        protocols.register(protocols.Protocol("count", CountOptions, lambda *a: []))
    with pytest.raises(ValueError, match="unknown protocol 'cont' \\(did you mean 'count'\\?\\)"):
        protocols.get("cont")
