"""The model computations behind every protocol: pure functions of (graphdef, state, arrays),
jitted once per shape with the graph definition static (the NNX graph is walked at trace time
only, never per call).

Axis legend: B rows (one image and its prompt each), P prompt tokens (right-padded; `mask`
marks the real ones), C classes, N chunks, L tokens per chunk, K stop tokens, S new tokens,
V vocabulary, D width.

Shared-prefix scoring. `score_continuations` runs each row's prompt once into a KV cache and
then scores every class name after it: the class names are packed into chunks of L tokens
(`pack_continuations`), each chunk runs as one row per image on top of the cached prompt, with
positions restarting at the prompt length for each class and a block-diagonal causal mask, so
that no class sees another. This equals scoring each class as a separate full sequence
(tests/evaluate/test_likelihood.py) at a fraction of the cost (benchmarks/likelihood_scoring.py).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fgjax.models.vlm import prefix_before_targets


class Chunks(NamedTuple):
    """Class continuations packed into fixed-length rows.

    tokens: i32[N, L]; offsets: i32[N, L], each token's index within its class name;
    class_ids: i32[N, L], the class of each token, C (one past the last class) for padding.
    """

    tokens: np.ndarray
    offsets: np.ndarray
    class_ids: np.ndarray


def pack_continuations(class_tokens: list[list[int]], chunk_tokens: int) -> Chunks:
    """Packs token lists (one per class, in class order) greedily into rows of `chunk_tokens`."""
    num_classes = len(class_tokens)
    for index, tokens in enumerate(class_tokens):
        if not tokens:
            raise ValueError(f"class {index} has no tokens; class names must be non-empty")
        if len(tokens) > chunk_tokens:
            raise ValueError(
                f"class {index} has {len(tokens)} tokens, more than chunk_tokens={chunk_tokens}; "
                "raise chunk_tokens"
            )
    rows: list[list[tuple[int, int, int]]] = [[]]
    for class_id, tokens in enumerate(class_tokens):
        if len(rows[-1]) + len(tokens) > chunk_tokens:
            rows.append([])
        rows[-1] += [(token, offset, class_id) for offset, token in enumerate(tokens)]
    shape = (len(rows), chunk_tokens)
    tokens = np.zeros(shape, np.int32)
    offsets = np.zeros(shape, np.int32)
    class_ids = np.full(shape, num_classes, np.int32)
    for r, row in enumerate(rows):
        for t, (token, offset, class_id) in enumerate(row):
            tokens[r, t], offsets[r, t], class_ids[r, t] = token, offset, class_id
    return Chunks(tokens, offsets, class_ids)


def fitted_chunk_tokens(class_tokens: list[list[int]], chunk_tokens: int, multiple: int = 8) -> int:
    """The shortest row length (a multiple of `multiple`) that packs `class_tokens` into as few
    rows as `chunk_tokens` does: every padding slot of a chunk costs a full token of compute
    against the whole prompt, so 188 class tokens go into one row of 192, not of 256."""
    chunk_tokens = max(chunk_tokens, *map(len, class_tokens))
    rows = len(pack_continuations(class_tokens, chunk_tokens).tokens)
    total = sum(map(len, class_tokens))
    length = max(-(-total // rows), *map(len, class_tokens))
    length = -(-length // multiple) * multiple
    while length < chunk_tokens and len(pack_continuations(class_tokens, length).tokens) > rows:
        length += multiple
    return min(length, -(-chunk_tokens // multiple) * multiple)


# -- building blocks (called inside jit) -----------------------------------------------------


def prompt_forward(model, tokens, mask, images, extra_capacity: int | None):
    """Runs right-padded prompts. tokens: i32[B, P]; mask: bool[B, P]; images: the model's
    image input or None (text only).

    Returns (cache or None, logits f32[B, V] at each row's last real token, lengths i32[B]).
    With `extra_capacity` the prompt goes into a fresh KV cache with that many free slots.
    """
    batch, length = tokens.shape
    cache = None
    if extra_capacity is not None:
        cache = model.decoder.init_cache(batch, length + extra_capacity)
    out = model(tokens, images, input_mask=mask, cache=cache, return_logits=False)
    lengths = mask.sum(axis=1).astype(jnp.int32)
    last = jnp.take_along_axis(out.last_hidden, (lengths - 1)[:, None, None], axis=1)
    return out.cache, model.decoder.logits(last)[:, 0], lengths


def _chunk_log_probs(model, cache, lengths, first_logp, chunk):
    """f32[B, L]: log-prob of each chunk token given the prompt and its class's earlier tokens
    (0 at padding)."""
    tokens, offsets, class_ids, num_classes = chunk
    batch, length = lengths.shape[0], tokens.shape[0]
    real = class_ids < num_classes
    order = jnp.arange(length)
    block = (class_ids[:, None] == class_ids[None, :]) & (order[:, None] >= order[None, :])
    logits = model.decoder(
        jnp.broadcast_to(tokens, (batch, length)),
        positions=lengths[:, None] + offsets[None, :],
        input_mask=jnp.broadcast_to(real, (batch, length)),
        attn_mask=block[None],
        cache=cache,
    ).logits
    lse = jax.nn.logsumexp(logits[:, :-1], axis=-1)
    picked = jnp.take_along_axis(logits[:, :-1], tokens[1:][None, :, None], axis=-1)[..., 0]
    from_previous = jnp.pad(picked - lse, ((0, 0), (1, 0)))  # token t given token t - 1
    from_prompt = first_logp[:, tokens]  # the first token of a class follows the prompt
    logp = jnp.where(offsets[None] == 0, from_prompt, from_previous)
    return jnp.where(real[None], logp, 0.0)


# -- the jitted entry points -----------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("graphdef", "num_classes"))
def score_continuations(graphdef, state, tokens, mask, images, chunks: Chunks, num_classes: int):
    """f32[B, C]: summed log-probs of every class's tokens after each row's prompt.

    tokens, mask: the prompts [B, P]; chunks: from `pack_continuations` (any placement).
    """
    model = nnx.merge(graphdef, state)
    cache, first_logits, lengths = prompt_forward(
        model, tokens, mask, images, chunks.tokens.shape[1]
    )
    first_logp = jax.nn.log_softmax(first_logits, axis=-1)

    def one_chunk(total, chunk):
        toks, offsets, class_ids = chunk
        logp = _chunk_log_probs(
            model, cache, lengths, first_logp, (toks, offsets, class_ids, num_classes)
        )
        per_class = jax.ops.segment_sum(logp.T, class_ids, num_segments=num_classes + 1)
        return total + per_class[:num_classes].T, None

    total = jnp.zeros((tokens.shape[0], num_classes), jnp.float32)
    total, _ = jax.lax.scan(one_chunk, total, tuple(jnp.asarray(c) for c in chunks))
    return total


@functools.partial(jax.jit, static_argnames=("graphdef",))
def projected_image_features(graphdef, state, images):
    """A VLM's image features as its decoder reads them, [B, M * N, D]."""
    return nnx.merge(graphdef, state).image_features(images)


@functools.partial(jax.jit, static_argnames=("graphdef",))
def score_full_sequences(graphdef, state, tokens, mask, image_features, targets):
    """The naive reference: f32[B] summed log-probs of the tokens marked by `targets`
    (bool[B, T]) in one full forward of each row (no cache) on the rows' image features
    (`projected_image_features`, or None for text). Each target is predicted from the position
    before it."""
    model = nnx.merge(graphdef, state)
    prefix = {}  # a prefix-LM (PaliGemma) sees the prompt both ways, the answer causally
    if getattr(model.cfg, "image_attention", None) == "prefix":
        prefix["prefix_mask"] = prefix_before_targets(targets, mask)
    logits = model(tokens, input_mask=mask, image_features=image_features, **prefix).logits[:, :-1]
    logp = jax.nn.log_softmax(logits, axis=-1)
    picked = jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]
    return jnp.sum(jnp.where(targets[:, 1:], picked, 0.0), axis=1)


@functools.partial(jax.jit, static_argnames=("graphdef", "max_new_tokens"))
def greedy_generate(graphdef, state, tokens, mask, images, stop_ids, max_new_tokens: int):
    """i32[B, S]: greedy continuations of each row's prompt, decoded with the KV cache in a
    `lax.while_loop` that stops when every row has emitted one of `stop_ids` (i32[K]) or after
    S tokens. A row's stop token is kept; slots after it hold -1."""
    model = nnx.merge(graphdef, state)
    cache, logits, lengths = prompt_forward(model, tokens, mask, images, max_new_tokens)
    batch = tokens.shape[0]

    def keep_going(carry):
        step, _, _, done, _ = carry
        return (step < max_new_tokens) & ~jnp.all(done)

    def one_token(carry):
        step, cache, token, done, out = carry
        out = out.at[:, step].set(jnp.where(done, -1, token))
        done = done | jnp.isin(token, stop_ids)
        decoded = model.decoder(token[:, None], positions=(lengths + step)[:, None], cache=cache)
        return step + 1, decoded.cache, jnp.argmax(decoded.logits[:, 0], axis=-1), done, out

    first = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    carry = (
        jnp.zeros((), jnp.int32),
        cache,
        first,
        jnp.zeros((batch,), bool),
        jnp.full((batch, max_new_tokens), -1, jnp.int32),
    )
    return jax.lax.while_loop(keep_going, one_token, carry)[-1]


@functools.partial(jax.jit, static_argnames=("graphdef", "layer"))
def vlm_features(graphdef, state, tokens, mask, images, layer: int = -1):
    """Decoder hidden states over each prompt: {"last": f32[B, D] at the last real token,
    "mean": f32[B, D] over the real tokens}. layer -1 is the output of the final norm;
    other values index the hidden-state list (0 = input embeddings, k = block k's output)."""
    model = nnx.merge(graphdef, state)
    out = model(tokens, images, input_mask=mask, return_hidden=layer != -1, return_logits=False)
    hidden = (out.last_hidden if layer == -1 else out.hidden_states[layer]).astype(jnp.float32)
    lengths = mask.sum(axis=1)
    last = jnp.take_along_axis(hidden, (lengths - 1)[:, None, None], axis=1)[:, 0]
    mean = jnp.sum(hidden * mask[..., None], axis=1) / lengths[:, None]
    return {"last": last, "mean": mean}


@functools.partial(jax.jit, static_argnames=("graphdef",))
def vision_features(graphdef, state, images):
    """Frozen vision-tower features of a VLM's encoder (or of a vision encoder itself):
    {"patch_mean": f32[B, D], the mean of the last hidden state over patch tokens, "cls":
    f32[B, D], the tower's pooled output (CLS token or attention-pooling head; the first token
    when it has neither)}; a fused encoder concatenates its towers' features."""
    module = nnx.merge(graphdef, state)
    encoder = getattr(module, "encoder", module)
    towers = getattr(encoder, "towers", None)
    pairs = zip(towers, images) if towers is not None else [(encoder, images)]
    patch_means, pooled = [], []
    for tower, image in pairs:
        out = tower(image)
        patches = out.last_hidden_state[:, tower.cfg.num_prefix_tokens :]
        patch_means.append(jnp.mean(patches.astype(jnp.float32), axis=1))
        pooled.append(
            (out.pooled if out.pooled is not None else out.last_hidden_state[:, 0]).astype(
                jnp.float32
            )
        )
    return {"patch_mean": jnp.concatenate(patch_means, -1), "cls": jnp.concatenate(pooled, -1)}


def full_sequence_class_scores(
    graphdef, state, prompts, images, class_tokens, *, encode_per_class: bool = False
) -> np.ndarray:
    """The naive reference for `score_continuations`: f32[B, C], one full forward (no cache,
    no sharing of text) of every row's prompt + class name per class. The image tower runs
    once per image, or (`encode_per_class`) in every forward, as a loop that calls the whole
    model per class does.

    prompts: B unpadded i32 arrays; class_tokens: C token lists. All forwards have one length
    (the longest prompt + class), so this compiles once.
    """

    def encoded():
        return None if images is None else projected_image_features(graphdef, state, images)

    features = None if encode_per_class else encoded()
    length = max(len(p) for p in prompts) + max(len(c) for c in class_tokens)
    scores = np.zeros((len(prompts), len(class_tokens)), np.float32)
    for class_id, continuation in enumerate(class_tokens):
        tokens = np.zeros((len(prompts), length), np.int32)
        targets = np.zeros((len(prompts), length), bool)
        for row, prompt in enumerate(prompts):
            sequence = np.concatenate([prompt, continuation])
            tokens[row, : len(sequence)] = sequence
            targets[row, len(prompt) : len(sequence)] = True
        mask = np.arange(length)[None] < (targets.argmax(1) + targets.sum(1))[:, None]
        feats = encoded() if encode_per_class else features
        scores[:, class_id] = score_full_sequences(graphdef, state, tokens, mask, feats, targets)
    return scores
