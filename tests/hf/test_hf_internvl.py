"""InternVL as an fgjax VLM (transformers' InternVLForConditionalGeneration, loaded with
fgjax.hf.load) against transformers 5.24 in float32.

Inputs come from InternVLProcessor itself (GotOcr2ImageProcessorPil with crop_to_patches, on
a word-level tokenizer holding <img>, </img> and <IMG_CONTEXT>) on two real photographs of
different aspect ratios: with 32 px tiles and at most 6 tiles, the landscape one becomes a
3 x 2 grid plus its thumbnail (7 tiles, 112 image tokens), the portrait one 1 x 2 plus its
thumbnail (3 tiles, 48 tokens). Each tile is 8 x 8 patches of 4 px, pixel-shuffled 2 x 2 to
16 tokens.

Two tiny models cover both InternViT variants: InternVL 3's (LayerNorm blocks, q/k/v biases,
no qk-norm, last block's output, Qwen2 with tied embeddings and InternVL 3's dynamic NTK RoPE
scaling, inactive at these lengths) and InternViT-6B's (RMSNorm blocks, qk-norm over all
heads, no biases) with a mask token, features from hidden_states[-2] and an untied Qwen3
(InternVL 3.5's text model).
Checked: logits (right-padded batch, and two images in one row), greedy generation, class
log-likelihoods, fgjax's own tiling, the export, the in-memory key layout, the real sizes;
negative controls for the pixel-shuffle order and the layer scale.
"""

import json

import hf_testing as ht
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers as tf
import vlm_testing as vt
from flax import nnx
from safetensors import safe_open
from tokenizers import Tokenizer, models, pre_tokenizers

import fgjax.hf
from fgjax.data import internvl as internvl_data
from fgjax.evaluate import inference
from fgjax.evaluate.prompts import pad_prompts
from fgjax.hf import config_export, configs
from fgjax.models import VLM, param_count, presets
from fgjax.models import projector as projector_lib
from fgjax.models.config import from_dict, to_dict

datasets = pytest.importorskip("sklearn.datasets")

IMAGE, START, END, VIDEO = 250, 251, 252, 253
TILE, TOKENS_PER_TILE, MAX_TILES = 32, 16, 6
IMAGENET = dict(image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
PROMPTS = ["w1 w2 w3 <IMG_CONTEXT> w4 w5 w6", "w7 <IMG_CONTEXT> w8 w9"]


def photos() -> list[np.ndarray]:
    """scikit-learn's 427 x 640 "china" (landscape) and a 380 x 160 crop of its "flower"
    (portrait), uint8 HWC."""
    china, flower = datasets.load_sample_images().images
    return [china, np.ascontiguousarray(flower[0:380, 100:260])]


def word_tokenizer() -> tf.PreTrainedTokenizerFast:
    """w1..w249 -> 1..249 and InternVL's image tokens, named as its tokenizer names them."""
    special = {"<IMG_CONTEXT>": IMAGE, "<img>": START, "</img>": END, "<video>": VIDEO}
    tok = Tokenizer(models.WordLevel({"[UNK]": 0, **{f"w{i}": i for i in range(1, 250)},
                                      **special}, unk_token="[UNK]"))  # fmt: skip
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(list(special))
    names = {"context_image_token": "<IMG_CONTEXT>", "start_image_token": "<img>",
             "end_image_token": "</img>", "video_token": "<video>"}  # fmt: skip
    return tf.PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[UNK]", extra_special_tokens=names
    )


class InternVLImageProcessor(tf.InternVLProcessor):
    """transformers' InternVLProcessor without its video processor (torchvision only): its
    own token expansion and image processor."""

    def __init__(self, image_processor=None, tokenizer=None, **kwargs):
        super().__init__(image_processor=image_processor, tokenizer=tokenizer, **kwargs)


def processor() -> InternVLImageProcessor:
    images = tf.GotOcr2ImageProcessorPil(
        size={"height": TILE, "width": TILE}, crop_to_patches=True, max_patches=MAX_TILES,
        **IMAGENET,
    )  # fmt: skip
    return InternVLImageProcessor(
        image_processor=images, tokenizer=word_tokenizer(), image_seq_length=TOKENS_PER_TILE
    )


VISION = {**ht.VISION, "num_hidden_layers": 2, "patch_size": 4}
# InternVL 3's text RoPE (Qwen2.5's): dynamic NTK scaling, inactive up to max_position_embeddings
DYNAMIC_NTK = {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1_000_000.0}
KINDS = ["internvl3", "internvit6b_qwen3"]
# features from the post-normed last_hidden_state (use_mean_pooling=false): logits only
NORMED = "internvl3_final_norm"


def hf_config(kind) -> tf.InternVLConfig:
    if kind == NORMED:
        vision = tf.InternVLVisionConfig(**VISION, use_mean_pooling=False)
        return tf.InternVLConfig(vision_config=vision, text_config=tf.Qwen2Config(**ht.TEXT),
                                 image_token_id=IMAGE, image_seq_length=TOKENS_PER_TILE)  # fmt: skip
    if kind == "internvl3":
        vision = tf.InternVLVisionConfig(**VISION, attention_bias=True)
        text = tf.Qwen2Config(**{**ht.TEXT, "max_position_embeddings": 512},
                              rope_parameters=DYNAMIC_NTK)  # fmt: skip
        return tf.InternVLConfig(vision_config=vision, text_config=text, image_token_id=IMAGE,
                                 image_seq_length=TOKENS_PER_TILE)  # fmt: skip
    vision = tf.InternVLVisionConfig(
        **VISION, norm_type="rms_norm", use_qk_norm=True, use_mask_token=True
    )
    text = tf.Qwen3Config(**ht.TEXT, head_dim=16)
    return tf.InternVLConfig(
        vision_config=vision, text_config=text, image_token_id=IMAGE,
        image_seq_length=TOKENS_PER_TILE, vision_feature_layer=-2, tie_word_embeddings=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def inputs():
    """The processor's right-padded batch: one photograph per row."""
    return processor()(images=photos(), text=PROMPTS, return_tensors="pt", padding=True,
                       padding_side="right")  # fmt: skip


@pytest.fixture(scope="module")
def saved(tmp_path_factory, inputs):
    """saved(kind) -> (transformers model, its directory, its logits on `inputs`)."""
    cases = {
        k: lambda k=k: tf.InternVLForConditionalGeneration(hf_config(k)) for k in [*KINDS, NORMED]
    }
    return ht.saved_models(tmp_path_factory, cases, lambda model: model(**inputs).logits.numpy())


def fgjax_inputs(batch):
    """A processor batch -> (tokens i32[B, T], mask bool[B, T], tiles f32[B, M, T, T, 3]):
    pixel_values hold every row's tiles in order, tokens / 16 of them per row."""
    tokens = batch["input_ids"].numpy()
    counts = (tokens == IMAGE).sum(axis=1) // TOKENS_PER_TILE
    tiles = np.split(vt.nchw_to_nhwc(batch["pixel_values"]), np.cumsum(counts)[:-1])
    images = internvl_data.tile_rows([[t] for t in tiles])
    mask = batch["attention_mask"].numpy().astype(bool)
    return jnp.asarray(tokens, jnp.int32), jnp.asarray(mask), jnp.asarray(images)


@nnx.jit
def forward(model, tokens, mask, images):
    return model(tokens, images, input_mask=mask).logits


def real(logits, mask):
    """The logits at real (not padding) tokens."""
    return np.asarray(logits)[np.asarray(mask)]


@pytest.mark.parametrize("kind", [*KINDS, NORMED])
def test_logits_parity_two_sizes(saved, inputs, kind):
    _, path, reference = saved(kind)
    model, cfg = fgjax.hf.load(path)
    assert cfg.encoder.feature_norm == (kind == NORMED)
    assert isinstance(model, VLM) and cfg.projector.kind == "pixel_shuffle"
    assert cfg.num_image_tokens == TOKENS_PER_TILE and cfg.image_layout == "internvl"
    tokens, mask, images = fgjax_inputs(inputs)
    # the processor's tiling is fgjax's count, and the two photographs differ in it
    counts = [internvl_data.num_tiles(*p.shape[:2], TILE, max_tiles=MAX_TILES) for p in photos()]
    assert counts == [7, 3] and images.shape == (2, 7, TILE, TILE, 3)
    assert (np.asarray(tokens) == IMAGE).sum(axis=1).tolist() == [
        TOKENS_PER_TILE * n for n in counts
    ]
    ours = forward(model, tokens, mask, images)
    ht.check(f"{kind} logits, two sizes", real(ours, mask), real(reference, mask))


def test_two_images_in_one_row(saved):
    """Both photographs in one row: 10 tiles, each image between its own <img> and </img>."""
    hf_model, path, _ = saved("internvl3")
    batch = processor()(images=[photos()], text=["w1 <IMG_CONTEXT> w2 w3 <IMG_CONTEXT> w4"],
                        return_tensors="pt")  # fmt: skip
    ids = batch["input_ids"][0].tolist()
    assert ids.count(START) == ids.count(END) == 2 and ids.count(IMAGE) == 160
    with torch.no_grad():
        reference = hf_model(**batch).logits.numpy()
    model, _ = fgjax.hf.load(path)
    tokens, mask, images = fgjax_inputs(batch)
    ht.check("internvl3 logits, two images in one row", forward(model, tokens, mask, images),
             reference)  # fmt: skip


def test_fgjax_tiling_equals_the_processor(saved, inputs):
    """fgjax.data.internvl tiles the photographs as GotOcr2ImageProcessorPil does (tiles row
    after row, then the thumbnail), and a small square image (less than half the area of 2 x 2
    tiles) as one tile without a thumbnail."""
    _, path, _ = saved("internvl3")
    _, cfg = fgjax.hf.load(path)
    preprocess = internvl_data.tile_config(cfg)
    assert (preprocess.mean, preprocess.std) == (tuple(IMAGENET["image_mean"]),
                                                 tuple(IMAGENET["image_std"]))  # fmt: skip
    ours = np.concatenate([internvl_data.tile_image(p, cfg, max_tiles=MAX_TILES) for p in photos()])
    np.testing.assert_allclose(ours, vt.nchw_to_nhwc(inputs["pixel_values"]), atol=1e-6, rtol=0)
    square = photos()[0][100:140, 200:240]
    theirs = processor().image_processor([square], return_tensors="np")["pixel_values"]
    ours = internvl_data.tile_image(square, cfg, max_tiles=MAX_TILES)
    assert ours.shape == (1, TILE, TILE, 3)
    np.testing.assert_allclose(ours, vt.nchw_to_nhwc(theirs), atol=1e-6, rtol=0)


def test_real_size_tile_counts():
    """The tiles of 448 px InternVL at 300 image sizes from 20 to 4000 px (1 to 12 tiles plus
    the thumbnail) are transformers' count (get_number_of_image_patches)."""
    theirs = tf.GotOcr2ImageProcessorPil(size={"height": 448, "width": 448}, crop_to_patches=True)
    sizes = np.random.default_rng(0).integers(20, 4000, (300, 2))
    counts = [internvl_data.num_tiles(int(h), int(w), 448) for h, w in sizes]
    assert counts == [theirs.get_number_of_image_patches(int(h), int(w)) for h, w in sizes]
    assert len(set(counts)) > 5  # the sizes reach many grids


@pytest.mark.parametrize("kind", KINDS)
def test_greedy_generation_equals_transformers_generate(saved, inputs, kind):
    """20 tokens for both rows of the right-padded batch through fgjax's KV cache and
    evaluation loop; transformers generates each row on its own (no padding)."""
    hf_model, path, _ = saved(kind)
    theirs = []
    for row in range(2):
        length = int(inputs["attention_mask"][row].sum())
        tiles = (inputs["input_ids"][row] == IMAGE).sum().item() // TOKENS_PER_TILE
        first = sum((inputs["input_ids"][r] == IMAGE).sum().item() for r in range(row))
        first //= TOKENS_PER_TILE
        theirs.append(vt.hf_generate(
            hf_model, 20, input_ids=inputs["input_ids"][row : row + 1, :length],
            pixel_values=inputs["pixel_values"][first : first + tiles],
        )[0])  # fmt: skip
    model, cfg = fgjax.hf.load(path)
    tokens, mask, images = fgjax_inputs(inputs)
    graphdef, state = nnx.split(model)
    never = jnp.asarray([cfg.decoder.vocab_size])  # no stop token: 20 tokens, as generate
    ours = inference.greedy_generate(graphdef, state, tokens, mask, images, never,
                                     max_new_tokens=20)  # fmt: skip
    np.testing.assert_array_equal(np.asarray(ours), np.stack(theirs))


def test_likelihood_ranking_equals_transformers(saved):
    """score_continuations (each prompt once into the KV cache, the classes packed after it)
    against transformers' summed log-probs of each class after each prompt; prompts of
    different lengths and tile counts, right-padded in fgjax."""
    hf_model, path, _ = saved("internvl3")
    batches = [processor()(images=[p], text=[t], return_tensors="pt")
               for p, t in zip(photos(), PROMPTS)]  # fmt: skip
    prompts = [b["input_ids"][0].numpy().astype(np.int32) for b in batches]
    pixel_rows = [b["pixel_values"] for b in batches]
    rng = np.random.default_rng(5)
    classes = [list(rng.integers(1, 250, n)) for n in (1, 3, 2, 4, 1)]
    theirs = vt.hf_class_log_likelihoods(hf_model, prompts, pixel_rows, classes,
                                         lambda ids, _: {})  # fmt: skip
    model, _ = fgjax.hf.load(path)
    graphdef, state = nnx.split(model)
    tokens, mask = pad_prompts(prompts, bucket=8)
    images = jnp.asarray(internvl_data.tile_rows([[vt.nchw_to_nhwc(p)] for p in pixel_rows]))
    chunks = inference.pack_continuations(classes, 5)
    ours = inference.score_continuations(
        graphdef, state, tokens, mask, images, chunks, num_classes=len(classes)
    )
    print(f"[parity] internvl3 class log-likelihoods: {ht.rel_err(ours, theirs):.2e}")
    np.testing.assert_allclose(np.asarray(ours), theirs, rtol=1e-4, atol=0)


def test_the_pixel_shuffle_order_and_the_layer_scale_matter(saved, inputs, monkeypatch):
    """Negative controls, each far beyond TOL: the 2 x 2 windows' channels in column-major
    order (same shapes and tokens), and LayerScale weights set to 1."""
    _, path, reference = saved("internvl3")
    model, _ = fgjax.hf.load(path)
    tokens, mask, images = fgjax_inputs(inputs)
    good = projector_lib.pixel_shuffle

    def column_major(x, tokens):
        batch, patches, dim = x.shape
        grid, side = round(patches**0.5), round(tokens**0.5)
        k = grid // side
        windows = x.reshape(batch, side, k, side, k, dim).transpose(0, 1, 3, 4, 2, 5)
        return windows.reshape(batch, tokens, k * k * dim)

    with monkeypatch.context() as patch:  # eager: a jitted function would keep its trace
        patch.setattr(projector_lib, "pixel_shuffle", column_major)
        err = ht.rel_err(real(model(tokens, images, input_mask=mask).logits, mask),
                         real(reference, mask))  # fmt: skip
    assert projector_lib.pixel_shuffle is good
    print(f"[control] internvl3, pixel shuffle column-major: {err:.2e}")
    assert err > 10 * ht.TOL
    blocks = model.encoder.stack.blocks
    for scale in (blocks.attn_scale, blocks.mlp_scale):
        scale[...] = jnp.ones_like(scale[...])
    err = ht.rel_err(real(forward(model, tokens, mask, images), mask), real(reference, mask))
    print(f"[control] internvl3, LayerScale 1: {err:.2e}")
    assert err > 10 * ht.TOL


@pytest.mark.parametrize("kind", KINDS)
def test_save_round_trip(saved, inputs, kind, tmp_path):
    """fgjax.hf.save writes a directory transformers loads back bit-exactly, with which it
    reproduces fgjax's logits, and from which fgjax reads the same config."""
    hf_model, path, _ = saved(kind)
    model, cfg = fgjax.hf.load(path)
    fgjax.hf.save(model, tmp_path / "out")
    with safe_open(f"{tmp_path}/out/model.safetensors", "np") as f:
        keys = set(f.keys())
    assert "multi_modal_projector.layer_norm.weight" in keys
    assert all(k.startswith(("vision_tower.encoder.", "vision_tower.embeddings.",
                             "language_model.", "multi_modal_projector.")) for k in keys)  # fmt: skip
    again = tf.InternVLForConditionalGeneration.from_pretrained(tmp_path / "out")
    assert ht.state_dicts_equal(hf_model, again) == []
    assert fgjax.hf.load(tmp_path / "out")[1] == cfg
    assert from_dict(json.loads(json.dumps(to_dict(cfg)))) == cfg  # fgjax's own run configs
    tokens, mask, images = fgjax_inputs(inputs)
    with torch.no_grad():
        theirs = again(**inputs).logits.numpy()
    ht.check(f"{kind}: transformers on fgjax's export",
             real(theirs, mask), real(forward(model, tokens, mask, images), mask))  # fmt: skip


def test_in_memory_key_layout(saved, inputs, tmp_path):
    """A raw state_dict dump (transformers 5's in-memory names: model.vision_tower.*,
    model.multi_modal_projector.*, model.language_model.*, lm_head) loads the same, with
    unrolled layers."""
    hf_model, path, reference = saved("internvit6b_qwen3")
    model, _ = fgjax.hf.load(ht.save_state_dict(hf_model, path, tmp_path), scan_layers=False)
    tokens, mask, images = fgjax_inputs(inputs)
    ht.check("internvit6b_qwen3 logits, in-memory key layout, unrolled",
             real(forward(model, tokens, mask, images), mask), real(reference, mask))  # fmt: skip


# -- the real sizes ------------------------------------------------------------------------

INTERNVIT_300M = dict(
    architectures=["InternVisionModel"], attention_bias=True, hidden_act="gelu",
    hidden_size=1024, image_size=[448, 448], intermediate_size=4096, layer_norm_eps=1e-06,
    layer_scale_init_value=0.1, model_type="internvl_vision", norm_type="layer_norm",
    num_attention_heads=16, num_channels=3, num_hidden_layers=24, patch_size=[14, 14],
    use_absolute_position_embeddings=True, use_mask_token=False, use_mean_pooling=True,
    use_qk_norm=False,
)  # fmt: skip
QWEN25 = dict(
    architectures=["Qwen2ForCausalLM"], bos_token_id=151643, eos_token_id=151645,
    hidden_act="silu", max_position_embeddings=32768, max_window_layers=70, model_type="qwen2",
    rms_norm_eps=1e-06, rope_scaling=dict(factor=2.0, rope_type="dynamic", type="dynamic"),
    rope_theta=1000000.0, sliding_window=None, tie_word_embeddings=False,
    use_sliding_window=False, vocab_size=151674,
)  # fmt: skip
TOP = dict(
    architectures=["InternVLForConditionalGeneration"], downsample_ratio=0.5,
    image_seq_length=256, image_token_id=151667, model_type="internvl",
    projector_hidden_act="gelu", tie_word_embeddings=False, vision_config=INTERNVIT_300M,
    vision_feature_layer=-1, vision_feature_select_strategy="default",
)  # fmt: skip
# OpenGVLab/InternVL3-1B-hf and -8B-hf: their config.json as far as we know it (no copy here
# to check against; the fields follow the original OpenGVLab/InternVL3-1B's llm_config and
# vision_config): InternViT-300M-448px-V2_5 and a Qwen2.5 text config with InternVL's 151674
# tokens, dynamic NTK RoPE and an untied LM head (the original 1B has its own lm_head).
# transformers ties the head by the top-level flag, whose class default is true
PUBLISHED = {
    "1b": dict(**TOP, text_config=dict(**QWEN25, hidden_size=896, intermediate_size=4864,
               num_attention_heads=14, num_hidden_layers=24, num_key_value_heads=2)),
    "8b": dict(**TOP, text_config=dict(**QWEN25, hidden_size=3584, intermediate_size=18944,
               num_attention_heads=28, num_hidden_layers=28, num_key_value_heads=4)),
}  # fmt: skip


@pytest.mark.parametrize("size", list(PUBLISHED))
def test_real_size_parameter_count(size):
    """The preset's parameter count (shapes only) equals transformers' for the published
    config (meta device), the published config reads as the preset, and the preset written
    back as a config.json builds the same transformers model."""
    cfg = presets.internvl3(size)
    ours, theirs = param_count(cfg), ht.transformers_count(PUBLISHED[size])
    print(f"[params] InternVL3-{size.upper()}: fgjax {ours:,} transformers {theirs:,}")
    assert ours == theirs
    _, got = configs.from_hf(PUBLISHED[size])
    want, got = config_export.resolved(cfg), config_export.resolved(got)
    assert got == want, config_export.diff(want, got)
    assert ht.transformers_count(config_export.to_hf(cfg)) == theirs


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("vision_feature_select_strategy", "full", "drops the CLS"),
        ("vision_feature_layer", [-1, -2], "one layer"),
        ("downsample_ratio", 0.3, "1 / an integer"),
        ("projector_hidden_act", "silu", "gelu"),
    ],
)
def test_configs_fgjax_cannot_represent_are_refused(field, value, words):
    hf = {**hf_config("internvl3").to_dict(), "architectures": ["InternVLForConditionalGeneration"]}
    with pytest.raises(configs.UnsupportedModelError, match=words):
        configs.from_hf({**hf, field: value})
    vision = {**hf["vision_config"], "norm_type": "rms_norm", "use_mean_pooling": False}
    with pytest.raises(configs.UnsupportedModelError, match="use_mean_pooling"):
        configs.from_hf({**hf, "vision_config": vision})
