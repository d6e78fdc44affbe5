"""Training config fields are declared once (fgjax/train/schema.py): a typo is an error that
names the closest field, before anything compiles; defaults fill a copy, never the caller's."""

from __future__ import annotations

import ml_collections
import pytest

from fgjax.train import experiment, schema
from tests.train import helpers


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return helpers.write_dataset(tmp_path_factory.mktemp("data"), num_rows=8)


@pytest.mark.parametrize(
    "path, typo, hint",
    [
        ((), "num_step", "did you mean 'num_steps'\\?"),
        (("optim",), "warmup_step", "did you mean 'warmup_steps'\\?"),
        (("checkpoint",), "evry_steps", "did you mean 'every_steps'\\?"),
        (("model",), "decoder_override", "did you mean 'decoder_overrides'\\?"),
        (("data",), "max_lenght", "did you mean 'max_length'\\?"),
        ((), "zzz", "; known: batch_size, checkpoint,"),
    ],
)
def test_an_unknown_key_fails_before_compiling_naming_the_closest_field(data, path, typo, hint):
    config = helpers.tiny_config(data)
    node = config
    for key in path:
        node = node[key]
    with node.unlocked():
        node[typo] = 1
    where = ".".join(("config", *path))
    with pytest.raises(ValueError, match=f"field in {where} '{typo}'.*{hint}"):
        experiment.build(config)


def test_defaults_fill_a_copy_and_the_callers_config_is_unchanged(data):
    config = helpers.tiny_config(data)
    before = config.to_json()
    resolved = schema.resolve(config)
    assert config.to_json() == before
    assert resolved.optim.b2 == 0.999 and resolved.checkpoint.keep == 3  # default / its own
    assert resolved.debug.nan_at_step == -1 and resolved.loss_tokens_per_row is None
    assert "system" not in resolved.data  # absent means "keep the template's"
    assert schema.resolve(resolved).to_json() == resolved.to_json()  # idempotent


def test_every_field_has_a_doc_and_the_shipped_configs_resolve():
    def walk(fields):
        for name, field in fields.items():
            assert field.doc, name
            if field.is_group:
                walk(field.default)

    walk(schema.FIELDS)
    from configs import llava15

    for arg in ("stage=pretrain", "stage=finetune"):
        schema.resolve(llava15.get_config(arg))
    assert isinstance(schema.resolve(ml_collections.ConfigDict()), ml_collections.ConfigDict)
