"""The platform programs are built for: jax's backend, or the one the fit check compiles for."""

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from fgjax.models import attention, mixed_dot, platform, presets
from fgjax.models import decoder as decoder_lib


def _mixed_linears(cfg) -> list[bool]:
    model = decoder_lib.Decoder(cfg, rngs=nnx.Rngs(0))
    linears = [m for _, m in nnx.iter_graph(model) if isinstance(m, nnx.Linear)]
    assert linears
    return [m.dot_general is mixed_dot.dot_general for m in linears]


def test_a_model_built_for_a_tpu_on_a_cpu_host_takes_the_tpu_choices():
    cfg = presets.decoder("tiny_llama", dtype="bfloat16")
    host = jax.default_backend()
    assert platform.target() == host
    with platform.compiling_for("tpu"):
        assert platform.target() == "tpu"
        assert not any(_mixed_linears(cfg))  # CPU-only products stay off
        assert attention.resolve_implementation("auto", jnp.bfloat16) == "splash"
        with platform.compiling_for("gpu"):
            assert attention.resolve_implementation("auto", jnp.bfloat16) == "xla"
        assert platform.target() == "tpu"
    assert platform.target() == host  # restored
    if host == "cpu":
        assert all(_mixed_linears(cfg))
        assert attention.resolve_implementation("auto", jnp.bfloat16) == "reference"


def test_the_platform_is_restored_after_an_error_and_unknown_names_are_refused():
    with pytest.raises(RuntimeError), platform.compiling_for("tpu"):
        raise RuntimeError("compiling failed")
    assert platform.target() == jax.default_backend()
    with pytest.raises(ValueError, match="unknown platform 'tpuv5'"), platform.compiling_for("tpuv5"):
        pass
