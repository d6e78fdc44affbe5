"""The SigLIP-style contrastive model: pooling, embeddings and the sigmoid loss."""

import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from fgjax import models
from fgjax.models.contrastive import sigmoid_loss


def tiny():
    text = models.TextTowerConfig(
        width=32, depth=1, num_heads=4, mlp_dim=64, vocab_size=64, max_length=12
    )
    return models.ContrastiveConfig(
        image=models.presets.encoder("tiny_siglip", depth=1), text=text, embed_dim=16
    )


def test_text_pooling_ignores_padding():
    model = models.build(tiny())
    tokens = jnp.asarray(np.random.RandomState(0).randint(1, 64, (2, 6)), jnp.int32)
    padded = jnp.concatenate([tokens, jnp.zeros((2, 4), jnp.int32)], axis=1)
    a = model.embed_texts(tokens, jnp.ones((2, 6), bool))
    b = model.embed_texts(padded, jnp.arange(10)[None] < 6)
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(jnp.linalg.norm(a, axis=-1), 1.0, atol=1e-5)


def test_sigmoid_loss_matches_its_definition_and_learns_pairs():
    logits = jnp.asarray(np.random.RandomState(1).randn(3, 3), jnp.float32)
    expected = (
        -sum(
            np.log(1 / (1 + np.exp(-(1 if i == j else -1) * float(logits[i, j]))))
            for i in range(3)
            for j in range(3)
        )
        / 3
    )
    assert abs(float(sigmoid_loss(logits)) - expected) < 1e-5

    model = models.build(tiny())
    rng = np.random.RandomState(2)
    images = jnp.asarray(rng.randn(8, 32, 32, 3), jnp.float32)
    tokens = jnp.asarray(rng.randint(1, 64, (8, 5)), jnp.int32)
    mask = jnp.ones((8, 5), bool)
    optimizer = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer):
        def loss_fn(model):
            return sigmoid_loss(
                model.logits(model.embed_images(images), model.embed_texts(tokens, mask))
            )

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    first = float(step(model, optimizer))
    for _ in range(40):
        last = float(step(model, optimizer))
    assert last < 0.5 * first, (first, last)
    scores = model.logits(model.embed_images(images), model.embed_texts(tokens, mask))
    assert (jnp.argmax(scores, axis=1) == jnp.arange(8)).mean() >= 0.75
