"""DINOv3 ViT (transformers' DINOv3ViTModel) and the fixed-resolution SigLIP 2 towers through
fgjax.hf.load / fgjax.hf.save, float32 parity with transformers (eval mode, the RoPE path
without coordinate augmentation).

DINOv3 has no position table: 2-D RoPE rotates the patch tokens' queries and keys, the CLS
and register tokens are left alone, and any input size works. The parity checks cover the
config's size (32 px, patch 8) and others (48 px, 24 px and non-square 40 x 24), every hidden
state, the pooled (normed CLS) output and VLM features."""

import dataclasses

import hf_testing as ht
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers as tf
from flax import nnx

import fgjax.hf
from fgjax.data import images as image_ops
from fgjax.hf import config_export
from fgjax.models import param_count, presets

# head_dim 16: four RoPE frequencies per image axis. Weights of std 0.2 (not HF's 0.02) make
# the attention peaked enough that positions matter: dropping the rotation moves the output
# by ~0.8 relative here against ~7e-4 at 0.02 (test_dinov3_rope_matters)
TINY = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
    image_size=32, patch_size=8, initializer_range=0.2,
)  # fmt: skip
CASES = {
    # ViT-S/B/L-like: plain GELU MLP, 4 registers, q/v/o biases but no key bias (the defaults)
    "dinov3": lambda: tf.DINOv3ViTModel(tf.DINOv3ViTConfig(**TINY, num_register_tokens=4)),
    # ViT-S+/H+-like SwiGLU MLP; every bias switch flipped, no registers, another RoPE base
    "dinov3_gated": lambda: tf.DINOv3ViTModel(
        tf.DINOv3ViTConfig(
            **TINY,
            use_gated_mlp=True,
            hidden_act="silu",
            num_register_tokens=0,
            query_bias=False,
            key_bias=True,
            value_bias=False,
            proj_bias=False,
            mlp_bias=False,
            layer_norm_eps=1e-6,
            rope_theta=1000.0,
            layerscale_value=0.5,
        )
    ),  # fmt: skip
}
PREFIX = {"dinov3": 5, "dinov3_gated": 1}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """saved(name) -> (transformers model, its directory, None)."""
    return ht.saved_models(tmp_path_factory, CASES)


@nnx.jit
def outputs(model, images):
    """One compiled call: the full output with hidden states, and the VLM features."""
    return model(images, return_hidden=True), model.features(images)


def pixels(height, width, seed):
    """(fgjax NHWC f32, torch NCHW) of the same normalized images."""
    x = np.random.default_rng(seed).normal(size=(2, height, width, 3)).astype(np.float32)
    return jnp.asarray(x), torch.from_numpy(x.transpose(0, 3, 1, 2).copy())


def compare(label, model, hf_model, height, width, prefix):
    ours_in, theirs_in = pixels(height, width, seed=height + width)
    with torch.no_grad():
        ref = hf_model(pixel_values=theirs_in, output_hidden_states=True)
    out, features = outputs(model, ours_in)
    assert len(out.hidden_states) == len(ref.hidden_states) == model.cfg.depth + 1
    errs = [
        ht.check(f"{label} last_hidden_state", out.last_hidden_state, ref.last_hidden_state),
        ht.check(f"{label} pooled", out.pooled, ref.pooler_output),
        ht.check(f"{label} features", features, ref.hidden_states[-2][:, prefix:]),
    ]
    for i, (ours, theirs) in enumerate(zip(out.hidden_states, ref.hidden_states)):
        errs.append(ht.check(f"{label} hidden_states[{i}]", ours, theirs))
    return max(errs)


@pytest.mark.parametrize(
    "name, height, width",
    [("dinov3", 32, 32), ("dinov3", 48, 48), ("dinov3", 40, 24), ("dinov3_gated", 32, 32),
     ("dinov3_gated", 24, 24)],
)  # fmt: skip
def test_dinov3_parity(saved, name, height, width):
    hf_model, path, _ = saved(name)
    model, cfg = fgjax.hf.load(path)
    assert cfg.family == "dinov3" and cfg.num_prefix_tokens == PREFIX[name]
    compare(f"{name} @{height}x{width}px", model, hf_model, height, width, PREFIX[name])


def test_dinov3_unrolled_parity(saved):
    hf_model, path, _ = saved("dinov3")
    model, cfg = fgjax.hf.load(path, scan_layers=False)
    assert not cfg.scan_layers
    compare("dinov3 @48px, unrolled", model, hf_model, 48, 48, PREFIX["dinov3"])


def test_dinov3_rope_matters(saved):
    """Negative control: the same blocks run without the rotation miss parity by far, so the
    checks above see the RoPE path."""
    hf_model, path, _ = saved("dinov3")
    model, _ = fgjax.hf.load(path)
    ours_in, theirs_in = pixels(48, 48, seed=1)
    with torch.no_grad():
        ref = hf_model(pixel_values=theirs_in).last_hidden_state
    unrotated, _, _ = model.stack(model.embed(ours_in))
    assert ht.rel_err(model.post_norm(unrotated), ref) > 0.1


def test_dinov3_features_keep_prefix_and_layers(saved):
    """VLM feature selection as for the other towers: keep_prefix keeps CLS + registers;
    a tuple of layers concatenates them along channels (hidden states are never post-normed)."""
    hf_model, path, _ = saved("dinov3")
    model, cfg = fgjax.hf.load(path, keep_prefix=True, feature_layer=(-1, 1))
    assert cfg.num_features == 16 + 5 and cfg.feature_dim == 64
    ours_in, theirs_in = pixels(32, 32, seed=7)
    with torch.no_grad():
        hidden = hf_model(pixel_values=theirs_in, output_hidden_states=True).hidden_states
    ref = torch.cat([hidden[-1], hidden[1]], dim=-1)
    ht.check("dinov3 features keep_prefix, layers (-1, 1)", nnx.jit(type(model).features)(
        model, ours_in), ref)  # fmt: skip


@pytest.mark.parametrize("name", list(CASES))
def test_dinov3_save_round_trip(saved, name, tmp_path):
    hf_model, path, _ = saved(name)
    model, cfg = fgjax.hf.load(path)
    fgjax.hf.save(model, tmp_path / "out")
    again = tf.DINOv3ViTModel.from_pretrained(tmp_path / "out")
    assert ht.state_dicts_equal(hf_model, again) == []
    assert fgjax.hf.load(tmp_path / "out")[1] == cfg


def test_dinov3_in_memory_key_names(saved, tmp_path):
    """A raw state_dict dump has transformers 5's in-memory names (model.layer.{i}), the
    published checkpoints layer.{i}: both load to the same parameters."""
    hf_model, path, _ = saved("dinov3")
    state = hf_model.state_dict()
    assert any(k.startswith("model.layer.0.") for k in state)
    model, _ = fgjax.hf.load(ht.save_state_dict(hf_model, path, tmp_path))
    reference, _ = fgjax.hf.load(path)
    np.testing.assert_array_equal(
        model.stack.blocks.attn.q.kernel[...], reference.stack.blocks.attn.q.kernel[...]
    )


def test_dinov3_preset_as_hf_config():
    """The ViT-L/16 preset written as config.json builds a transformers model of the same size
    (and reads back as the preset, which to_hf checks)."""
    cfg = presets.encoder("dinov3_l16")
    hf = config_export.to_hf(cfg)
    assert hf["architectures"] == ["DINOv3ViTModel"] and hf["key_bias"] is False
    hf.pop("architectures")
    with torch.device("meta"):
        model = tf.DINOv3ViTModel(tf.AutoConfig.for_model(**hf))
    assert sum(p.numel() for p in model.parameters()) == param_count(cfg) == 303_129_600


def test_dinov3_preprocessing():
    """DINOv3's eval transform: squash to S x S (bilinear), ImageNet mean / std; the exported
    preprocessor_config.json reproduces it in transformers (its PIL processors)."""
    cfg = presets.encoder("dinov3_b16")
    pre = image_ops.preprocess_config_for(cfg)
    assert (pre.size, pre.mode, pre.resample) == (224, "resize_naive", "bilinear")
    assert (pre.mean, pre.std) == (image_ops.IMAGENET_MEAN, image_ops.IMAGENET_STD)
    hf = image_ops.hf_preprocessor_config(pre)
    processor = tf.SiglipImageProcessorPil(
        **{k: v for k, v in hf.items() if k != "image_processor_type"}
    )
    image = np.random.default_rng(0).integers(0, 256, (300, 200, 3), dtype=np.uint8)
    ref = processor(image, return_tensors="np")["pixel_values"][0].transpose(1, 2, 0)
    np.testing.assert_allclose(image_ops.preprocess(image, pre), ref, atol=1e-5, rtol=0)
    # a RoPE tower takes any input size: preprocessing follows input_size
    assert image_ops.preprocess_config_for(dataclasses.replace(cfg, input_size=512)).size == 512


def test_siglip2_fixed_resolution_loads_as_siglip(tmp_path):
    """A SiglipModel config with SigLIP 2's published vision values (so400m/14-384's
    gelu_pytorch_tanh, 1e-6 LayerNorm, MAP head; here tiny widths, a patch 14 that does not
    divide the 42 px image, as 14 does not divide 384) loads at parity as the siglip family."""
    torch.manual_seed(0)
    vision = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                  num_attention_heads=4, image_size=42, patch_size=14,
                  hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6)  # fmt: skip
    text = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                num_attention_heads=4, bos_token_id=1, eos_token_id=2, pad_token_id=0)  # fmt: skip
    dual = ht.randomize(tf.SiglipModel(tf.SiglipConfig(vision_config=vision, text_config=text)))
    model, cfg = fgjax.hf.load(ht.save_pretrained(dual, tmp_path))
    want = presets.encoder("siglip2_so400m384", width=32, mlp_dim=48, depth=2, num_heads=4,
                           image_size=42)  # fmt: skip
    assert config_export.resolved(cfg) == config_export.resolved(want)
    ours_in, theirs_in = ht.images(2, 42, seed=3)
    with torch.no_grad():
        ref = dual.vision_model(pixel_values=theirs_in)
    out = nnx.jit(lambda m, x: m(x))(model, ours_in)
    ht.check(
        "siglip2 (SiglipModel) last_hidden_state", out.last_hidden_state, ref.last_hidden_state
    )
    ht.check("siglip2 (SiglipModel) pooled", out.pooled, ref.pooler_output)


def test_dinov3_tower_in_llava(tmp_path):
    """LlavaForConditionalGeneration with a DINOv3 tower (strategy "full": CLS and registers
    kept, as keep_prefix): logits at parity, and fgjax.hf.save writes the tower's keys where
    transformers has them (vision_tower.*: a DINO tower has no vision_model submodule)."""
    from safetensors.torch import load_file

    torch.manual_seed(0)
    config = tf.LlavaConfig(
        vision_config=tf.DINOv3ViTConfig(**TINY, num_register_tokens=2),
        text_config=tf.LlamaConfig(**ht.TEXT), image_token_index=255,
        vision_feature_select_strategy="full", vision_feature_layer=-2,
    )  # fmt: skip
    hf_model = ht.randomize(tf.LlavaForConditionalGeneration(config))
    path = ht.save_pretrained(hf_model, tmp_path / "hf")
    model, cfg = fgjax.hf.load(path)
    assert cfg.encoder.keep_prefix and cfg.num_image_tokens == 16 + 3
    rng = np.random.default_rng(3)
    tokens = np.concatenate(
        [rng.integers(0, 255, (2, 4)), np.full((2, 19), 255), rng.integers(0, 255, (2, 6))], 1
    )
    ours_in, theirs_in = pixels(32, 32, seed=5)
    with torch.no_grad():
        ref = hf_model(input_ids=torch.from_numpy(tokens), pixel_values=theirs_in).logits
    logits = nnx.jit(lambda m, t, x: m(t, x).logits)(model, jnp.asarray(tokens, jnp.int32), ours_in)
    ht.check("llava with a dinov3 tower, logits", logits, ref)
    fgjax.hf.save(model, tmp_path / "out")
    keys = load_file(tmp_path / "out" / "model.safetensors").keys()
    assert "vision_tower.layer.0.attention.q_proj.weight" in keys
    again = tf.LlavaForConditionalGeneration.from_pretrained(tmp_path / "out")
    assert ht.state_dicts_equal(hf_model, again) == []


def test_dinov3_config_round_trip_and_refusals():
    from fgjax.hf.configs import UnsupportedModelError, from_hf
    from fgjax.hf.export import unsupported_reason

    tiny = presets.encoder("tiny_dinov3")
    gated = dataclasses.replace(tiny, mlp="gated", act="silu", qkv_bias=False, key_bias=True)
    for cfg in (tiny, gated, dataclasses.replace(tiny, key_bias=None)):
        _, back = from_hf(config_export.to_hf(cfg))
        assert config_export.resolved(back) == config_export.resolved(cfg)
    # a RoPE tower runs at any size in transformers too: exportable at another input size
    assert unsupported_reason(dataclasses.replace(tiny, input_size=48)) is None
    with pytest.raises(UnsupportedModelError, match="query_bias=True but value_bias=False"):
        from_hf({"model_type": "dinov3_vit", "value_bias": False})
    with pytest.raises(UnsupportedModelError, match="set rope"):
        config_export.to_hf(dataclasses.replace(tiny, rope=None))
    with pytest.raises(ValueError, match="head_dim divisible by 4"):
        dataclasses.replace(tiny, num_heads=16).validate()  # head_dim 2
