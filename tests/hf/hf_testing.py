"""Shared helpers of the HF import tests: tiny transformers models with random weights saved
to temporary directories, and the parity measure."""

from __future__ import annotations

import json
import os

import jax.numpy as jnp
import numpy as np
import torch

TOL = 1e-4  # max |ours - reference| relative to max |reference|

# tiny transformers configs shared by the test modules
TEXT = dict(
    vocab_size=256,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
)
VISION = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    image_size=32,
    patch_size=8,
)


def randomize(model, seed: int = 0):
    """Perturbs every parameter so that no mapping error hides behind HF's initialization
    (zero biases, unit norms, unit LayerScale): matrices get N(0, 0.02) noise, vectors
    N(0, 0.1)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            scale = 0.02 if p.ndim > 1 and p.shape[0] > 1 else 0.1
            p.add_(torch.randn(p.shape, generator=gen) * scale)
    return model.eval()


def saved_models(tmp_path_factory, cases: dict, reference=None):
    """get(name) -> (transformers model `cases[name]()` with random weights, its
    save_pretrained directory, `reference(model)` under no_grad or None), built once."""
    cache = {}

    def get(name):
        if name not in cache:
            torch.manual_seed(0)
            model = randomize(cases[name]())
            path = save_pretrained(model, tmp_path_factory.mktemp(name))
            with torch.no_grad():
                cache[name] = model, path, reference(model) if reference else None
        return cache[name]

    return get


def save_pretrained(model, directory, **kwargs) -> str:
    model.save_pretrained(directory, **kwargs)
    return str(directory)


def edit_config(directory, edit) -> None:
    """Rewrites config.json of `directory` with `edit(dict) -> dict`."""
    path = os.path.join(directory, "config.json")
    with open(path) as f:
        config = json.load(f)
    with open(path, "w") as f:
        json.dump(edit(config), f)


def rel_err(ours, reference) -> float:
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    assert ours.shape == reference.shape, (ours.shape, reference.shape)
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


def check(name: str, ours, reference) -> float:
    err = rel_err(ours, reference)
    print(f"[parity] {name}: max|diff|/max|ref| = {err:.2e}")
    assert err <= TOL, f"{name}: relative error {err:.2e} > {TOL:.0e}"
    return err


def images(batch: int, size: int, seed: int = 0):
    """(fgjax NHWC f32 array, torch NCHW tensor) of the same normalized images."""
    x = np.random.default_rng(seed).normal(size=(batch, size, size, 3)).astype(np.float32)
    return jnp.asarray(x), torch.from_numpy(x.transpose(0, 3, 1, 2).copy())


def tokens(batch: int, length: int, vocab: int, seed: int = 0):
    """(fgjax i32 array, torch int64 tensor) of the same random tokens."""
    x = np.random.default_rng(seed).integers(0, vocab, (batch, length))
    return jnp.asarray(x, jnp.int32), torch.from_numpy(x)


def state_dicts_equal(a, b) -> list:
    """Keys whose tensors differ (or exist on one side only) between two torch models."""
    sa, sb = a.state_dict(), b.state_dict()
    bad = sorted(set(sa) ^ set(sb))
    bad += [k for k in sa if k in sb and not torch.equal(sa[k], sb[k])]
    return bad


def transformers_count(hf: dict) -> int:
    """Parameters of the transformers model for a config dict, built on the meta device."""
    import transformers as tf

    hf = dict(hf)
    arch = hf.pop("architectures")[0]
    config = tf.AutoConfig.for_model(**hf)
    with torch.device("meta"):
        model = getattr(tf, arch)(config)
    return sum(p.numel() for p in model.parameters())


def resave_renamed(path, out_dir, renames) -> str:
    """Copies the checkpoint in `path` to `out_dir` with every key's prefix rewritten by the
    first matching (old, new) of `renames` (another on-disk key layout); returns out_dir."""
    from safetensors.numpy import load_file, save_file

    def rename(key):
        for old, new in renames:
            if key.startswith(old):
                return new + key[len(old) :]
        raise AssertionError(f"no rename for {key}")

    tensors = load_file(os.path.join(path, "model.safetensors"))
    save_file(
        {rename(k): v for k, v in tensors.items()}, os.path.join(out_dir, "model.safetensors")
    )
    _copy_config(path, out_dir)
    return str(out_dir)


def save_state_dict(model, path, out_dir) -> str:
    """Writes `model`'s raw state_dict (transformers' in-memory key names) with the config of
    `path` to `out_dir`; returns out_dir."""
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, os.path.join(out_dir, "model.safetensors"))
    _copy_config(path, out_dir)
    return str(out_dir)


def _copy_config(path, out_dir) -> None:
    with (
        open(os.path.join(path, "config.json")) as src,
        open(os.path.join(out_dir, "config.json"), "w") as dst,
    ):
        dst.write(src.read())
