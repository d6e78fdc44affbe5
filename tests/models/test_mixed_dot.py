"""fgjax.models.mixed_dot: half-precision products summed in float32, forward and backward,
against float64 references of the same rounded operands; the lowered program asks XLA for
bf16 x bf16 -> float32 dots only; a bf16 model uses them on a CPU and keeps its outputs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fgjax.models import mixed_dot

SPECS = {
    "linear": ("BTD,DF->BTF", (2, 5, 24), (24, 40)),
    "attention projection": ("BTD,DNH->BTNH", (2, 5, 24), (24, 3, 8)),
    "attention output": ("BKGTS,BSKH->BTKGH", (2, 2, 2, 5, 7), (2, 7, 2, 8)),
    "output projection": ("BTNH,NHD->BTD", (2, 5, 3, 8), (3, 8, 24)),
}


def _operands(shape_a, shape_b, seed=0):
    rng = np.random.RandomState(seed)
    a = jnp.asarray(rng.randn(*shape_a), jnp.bfloat16)
    b = jnp.asarray(rng.randn(*shape_b), jnp.bfloat16)
    return a, b


def _loss(product, spec, weights):
    return lambda a, b: jnp.sum(product(spec, a, b).astype(jnp.float32) * weights)


@pytest.mark.parametrize("name", SPECS)
def test_value_and_gradients_match_float64(name):
    """Each result is the float64 product of the same bf16 operands, rounded once to bf16:
    within half a bf16 ulp (at most 2^-8 relative) plus float32 summation error. A product that
    rounded before summing, or a backward product taken in bf16, would be ~10x further off."""
    spec, shape_a, shape_b = SPECS[name]
    a, b = _operands(shape_a, shape_b)
    a64, b64 = (np.asarray(x, np.float64) for x in (a, b))
    out = mixed_dot.einsum(spec, a, b)
    assert out.dtype == jnp.bfloat16
    ref = np.einsum(spec, a64, b64)
    bound = 2.0**-8 * np.abs(ref) + 1e-5 * np.abs(ref).max()
    assert np.all(np.abs(np.asarray(out, np.float64) - ref) <= bound)

    weights = jnp.asarray(np.random.RandomState(1).randn(*ref.shape), jnp.float32)
    ga, gb = jax.grad(_loss(mixed_dot.einsum, spec, weights), argnums=(0, 1))(a, b)
    w64 = np.asarray(np.asarray(weights, jnp.bfloat16), np.float64)  # the cotangent is bf16
    sa, sb, so = mixed_dot._parse(spec)
    for got, want in ((ga, np.einsum(f"{so},{sb}->{sa}", w64, b64)),
                      (gb, np.einsum(f"{sa},{so}->{sb}", a64, w64))):  # fmt: skip
        assert got.dtype == jnp.bfloat16
        bound = 2.0**-8 * np.abs(want) + 1e-5 * np.abs(want).max()
        assert np.all(np.abs(np.asarray(got, np.float64) - want) <= bound)


def test_dot_general_spec_and_values():
    """nnx.Linear's contraction, and one with batch axes, as einsum strings and as values."""
    assert mixed_dot._dot_spec((((2,), (0,)), ((), ())), 3, 2) == "abc,cd->abd"
    assert mixed_dot._dot_spec((((2,), (1,)), ((0,), (0,))), 3, 3) == "abc,acd->abd"
    a, b = _operands((3, 4, 6), (3, 6, 5))
    dims = (((2,), (1,)), ((0,), (0,)))
    got = mixed_dot.dot_general(a, b, dims)
    want = jax.lax.dot_general(a, b, dims, preferred_element_type=jnp.float32).astype(jnp.bfloat16)
    np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))


def _dots(lowered_text: str) -> list[str]:
    return [line for line in lowered_text.splitlines() if "stablehlo.dot_general" in line]


def test_lowered_dots_are_bf16_to_float32():
    """The contract with XLA: every product, forward and both backward, is bf16 x bf16 ->
    float32 (the kind XLA:CPU runs on bf16 units); jnp.einsum's backward asks for bf16 x bf16
    -> bf16, which XLA:CPU runs in float32."""
    spec, shape_a, shape_b = SPECS["linear"]
    a, b = _operands(shape_a, shape_b)
    weights = jnp.ones((2, 5, 40), jnp.float32)
    for product, fast in ((mixed_dot.einsum, True), (jnp.einsum, False)):
        step = jax.jit(jax.grad(_loss(product, spec, weights), argnums=(0, 1)))
        dots = _dots(step.lower(a, b).as_text())
        assert len(dots) == 2  # the two backward products: jax drops the unused forward one
        mixed = [d for d in dots if "bf16>, tensor<" in d and d.rstrip().endswith("xf32>")]
        assert (len(mixed) == len(dots)) == fast, dots


def test_bf16_decoder_uses_mixed_products_and_keeps_its_outputs():
    """A bf16 decoder on a CPU builds its layers with the mixed products; its logits stay
    within bf16 rounding of the same decoder with jax's products (float32 reference)."""
    from fgjax.models import decoder as decoder_lib
    from fgjax.models import presets

    cfg = presets.decoder("tiny_llama", dtype="bfloat16")
    model = decoder_lib.Decoder(cfg, rngs=nnx.Rngs(0))
    linears = [m for _, m in nnx.iter_graph(model) if isinstance(m, nnx.Linear)]
    assert linears and all(m.dot_general is mixed_dot.dot_general for m in linears)
    tokens = jnp.asarray(np.random.RandomState(0).randint(0, cfg.vocab_size, (2, 12)), jnp.int32)
    got = np.asarray(model(tokens).logits, np.float32)
    f32 = decoder_lib.Decoder(presets.decoder("tiny_llama"), rngs=nnx.Rngs(0))
    want = np.asarray(f32(tokens).logits, np.float32)
    scale = np.abs(want).max()
    assert np.abs(got - want).max() <= 0.05 * scale
    assert not mixed_dot.enabled(jnp.float32) and not mixed_dot.enabled(jnp.bfloat16, "gpu")
