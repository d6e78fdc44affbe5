"""LLaVA-NeXT and LLaVA-OneVision as fgjax VLMs (fgjax/models/llava_next.py, loaded with
fgjax.hf.load) against transformers 5.24 in float32.

Inputs come from each family's own processor (its PIL image processor and its token
expansion, on a word-level tokenizer) on two real photographs of different aspect ratios,
so that the two images get different tile grids and image-token counts in one right-padded
batch. The tiny models keep 32 px tiles of 4 x 4 patches: LLaVA-NeXT's five pinpoints scaled
to them (CLIP tower, CLS dropped, hidden_states[-2], Llama) and OneVision's 1-3 x 1-3 tile
grids with "anyres_max_4" (SigLIP, hidden_states[-1], Qwen2), so that one image's packed
grid is shrunk bilinearly and the other's is not. Checked: logits, OneVision's multi-image
rows, greedy generation, the export, fgjax's own tiling, the real 7B sizes; negative controls
for the unpadding offset and the newline.
"""

import json

import hf_testing as ht
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers as tf
from flax import nnx
from safetensors.numpy import load_file
from tokenizers import Tokenizer, models, pre_tokenizers

import fgjax.hf
from fgjax.data import anyres as anyres_data
from fgjax.evaluate import inference
from fgjax.hf import config_export, configs
from fgjax.models import llava_next as lnx
from fgjax.models import param_count
from fgjax.models.anyres import select_best_resolution
from fgjax.models.config import from_dict, to_dict
from fgjax.models.llava_next import AnyresImages, LlavaNext

datasets = pytest.importorskip("sklearn.datasets")

IMAGE, VIDEO = 254, 255
TILE = ht.VISION["image_size"]  # 32 px tiles, 8 px patches: 4 x 4 features per tile
NEXT_PINPOINTS = [[32, 64], [64, 32], [64, 64], [96, 32], [32, 96]]
OV_PINPOINTS = [[32 * i, 32 * j] for i in range(1, 4) for j in range(1, 4)]
OV_ASPECT = "anyres_max_4"
PROMPTS = ["w1 w2 w3 <image> w4 w5 w6", "w7 <image> w8 w9"]


def photos() -> list[np.ndarray]:
    """scikit-learn's 427 x 640 "china" (landscape) and a 380 x 160 crop of its "flower"
    (portrait), uint8 HWC."""
    china, flower = datasets.load_sample_images().images
    return [china, np.ascontiguousarray(flower[0:380, 100:260])]


def word_tokenizer() -> tf.PreTrainedTokenizerFast:
    """w1..w249 -> 1..249, <image> and <video> special; no BOS, padding with id 0."""
    vocab = {"[UNK]": 0, **{f"w{i}": i for i in range(1, 250)}, "<image>": IMAGE, "<video>": VIDEO}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(["<image>", "<video>"])
    return tf.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[UNK]")


class OnevisionImageProcessor(tf.LlavaOnevisionProcessor):
    """transformers' LlavaOnevisionProcessor without its video processor (torchvision only):
    its own image token expansion and image processor."""

    def __init__(self, image_processor=None, tokenizer=None, **kwargs):
        super().__init__(image_processor=image_processor, tokenizer=tokenizer, **kwargs)


def processor(kind):
    if kind == "llava_next":
        images = tf.LlavaNextImageProcessorPil(
            size={"shortest_edge": TILE}, crop_size={"height": TILE, "width": TILE},
            image_grid_pinpoints=NEXT_PINPOINTS,
        )  # fmt: skip
        # num_additional_image_tokens=1: the CLS, as the published processors count it
        return tf.LlavaNextProcessor(
            image_processor=images, tokenizer=word_tokenizer(), patch_size=8,
            vision_feature_select_strategy="default", num_additional_image_tokens=1,
        )  # fmt: skip
    images = tf.LlavaOnevisionImageProcessorPil(
        size={"height": TILE, "width": TILE}, image_grid_pinpoints=OV_PINPOINTS,
        image_mean=[0.5] * 3, image_std=[0.5] * 3,
    )  # fmt: skip
    return OnevisionImageProcessor(
        image_processor=images, tokenizer=word_tokenizer(), num_image_tokens=16,
        vision_feature_select_strategy="full", vision_aspect_ratio=OV_ASPECT,
    )  # fmt: skip


def hf_config(kind):
    if kind == "llava_next":
        return tf.LlavaNextConfig(
            vision_config=tf.CLIPVisionConfig(**ht.VISION), text_config=tf.LlamaConfig(**ht.TEXT),
            image_token_index=IMAGE, image_grid_pinpoints=NEXT_PINPOINTS,
        )  # fmt: skip
    return tf.LlavaOnevisionConfig(
        vision_config=tf.SiglipVisionConfig(**ht.VISION, vision_use_head=False),
        text_config=tf.Qwen2Config(**ht.TEXT), image_token_index=IMAGE, video_token_index=VIDEO,
        image_grid_pinpoints=OV_PINPOINTS, vision_aspect_ratio=OV_ASPECT,
    )  # fmt: skip


KINDS = ["llava_next", "llava_onevision"]
MODEL_CLASSES = {
    "llava_next": tf.LlavaNextForConditionalGeneration,
    "llava_onevision": tf.LlavaOnevisionForConditionalGeneration,
}


@pytest.fixture(scope="module")
def inputs():
    """kind -> the processor's batch (two rows, one photograph each, right-padded)."""
    return {
        k: processor(k)(images=photos(), text=PROMPTS, return_tensors="pt", padding=True)
        for k in KINDS
    }


@pytest.fixture(scope="module")
def saved(tmp_path_factory, inputs):
    """saved(kind) -> (transformers model, its directory, its logits on inputs[kind])."""
    cases = {k: lambda k=k: MODEL_CLASSES[k](hf_config(k)) for k in KINDS}
    kind_of = {cls: k for k, cls in MODEL_CLASSES.items()}
    return ht.saved_models(
        tmp_path_factory, cases, lambda model: model(**inputs[kind_of[type(model)]]).logits.numpy()
    )


def fgjax_inputs(batch):
    """A processor batch -> (tokens i32[B, T], mask bool[B, T], AnyresImages)."""
    pixels = np.ascontiguousarray(batch["pixel_values"].numpy().transpose(0, 1, 3, 4, 2))
    tiled = None
    if "batch_num_images" in batch:
        tiled = AnyresImages.tiled_for(batch["batch_num_images"].tolist())
    images = AnyresImages(jnp.asarray(pixels), batch["image_sizes"].numpy(), tiled)
    tokens = jnp.asarray(batch["input_ids"].numpy(), jnp.int32)
    return tokens, jnp.asarray(batch["attention_mask"].numpy(), bool), images


@nnx.jit
def forward(model, tokens, mask, images):
    return model(tokens, images, input_mask=mask).logits


@nnx.jit
def forward_features(model, tokens, mask, features):
    return model(tokens, input_mask=mask, image_features=features).logits


def real(logits, mask):
    """The logits at real (not padding) tokens: transformers computes padding's differently."""
    return np.asarray(logits)[np.asarray(mask)]


@pytest.mark.parametrize("kind", KINDS)
def test_logits_parity_two_sizes(saved, inputs, kind):
    _, path, reference = saved(kind)
    model, cfg = fgjax.hf.load(path)
    assert isinstance(model, LlavaNext) and cfg.max_tiles == (None if kind == "llava_next" else 4)
    tokens, mask, images = fgjax_inputs(inputs[kind])
    layouts = images.layouts(cfg)
    # the processor's expansion is fgjax's count, and the two images differ in grid and count
    assert np.sum(np.asarray(tokens) == IMAGE, axis=1).tolist() == [t.num_tokens for t in layouts]
    assert layouts[0].grid != layouts[1].grid and layouts[0].num_tokens != layouts[1].num_tokens
    if kind == "llava_onevision":  # one packed grid shrunk bilinearly, one kept
        assert [t.pooled is None for t in layouts] == [False, True]
    print(f"[layout] {kind}: {layouts}")
    ht.check(f"{kind} logits, two sizes", real(forward(model, tokens, mask, images), mask),
             real(reference, mask))  # fmt: skip


def test_onevision_multi_image_row(saved):
    """A row with two images: each a base tile alone (padded to a square) and one newline."""
    hf_model, path, _ = saved("llava_onevision")
    batch = processor("llava_onevision")(
        images=[photos()], text=["w1 <image> w2 w3 <image> w4"], return_tensors="pt"
    )
    with torch.no_grad():
        reference = hf_model(**batch).logits.numpy()
    model, cfg = fgjax.hf.load(path)
    tokens, mask, images = fgjax_inputs(batch)
    assert images.tiled == (False, False) and int(np.sum(np.asarray(tokens) == IMAGE)) == 34
    ht.check("onevision logits, two images in one row", forward(model, tokens, mask, images),
             reference)  # fmt: skip


@pytest.mark.parametrize("kind", KINDS)
def test_greedy_generation_equals_transformers_generate(saved, inputs, kind):
    """20 tokens for both rows of the right-padded batch through fgjax's KV cache and
    evaluation loop; transformers generates each row on its own (no padding)."""
    hf_model, path, _ = saved(kind)
    batch = inputs[kind]
    settings = tf.GenerationConfig(
        max_new_tokens=20, do_sample=False, eos_token_id=None, pad_token_id=0
    )
    theirs = []
    for row in range(2):
        length = int(batch["attention_mask"][row].sum())
        one = {k: v[row : row + 1] for k, v in batch.items()}
        one["input_ids"], one["attention_mask"] = (
            one["input_ids"][:, :length], one["attention_mask"][:, :length],
        )  # fmt: skip
        with torch.no_grad():
            theirs.append(hf_model.generate(**one, generation_config=settings)[0, length:])
    model, cfg = fgjax.hf.load(path)
    tokens, mask, images = fgjax_inputs(batch)
    graphdef, state = nnx.split(model)
    never = jnp.asarray([cfg.decoder.vocab_size])  # no stop token: 20 tokens, as generate
    ours = inference.greedy_generate(graphdef, state, tokens, mask, images, never,
                                     max_new_tokens=20)  # fmt: skip
    np.testing.assert_array_equal(np.asarray(ours), torch.stack(theirs).numpy())


@pytest.mark.parametrize("kind", KINDS)
def test_the_unpadding_and_the_newline_matter(saved, inputs, kind, monkeypatch):
    """Negative controls, each far beyond TOL: the unpadded grid taken from the top-left
    corner instead of centred (same token count), and a zero image_newline."""
    _, path, reference = saved(kind)
    model, cfg = fgjax.hf.load(path)
    tokens, mask, images = fgjax_inputs(inputs[kind])
    good = AnyresImages.layouts

    def corner(self, cfg):
        return [
            t._replace(rows=(0, t.rows[1] - t.rows[0]), cols=(0, t.cols[1] - t.cols[0]))
            for t in good(self, cfg)
        ]

    assert any(t.rows[0] or t.cols[0] for t in good(images, cfg))  # something to shift
    with monkeypatch.context() as patch:  # eager: a jitted function would keep its trace
        patch.setattr(AnyresImages, "layouts", corner)
        shifted = model.image_features(images)
    err = ht.rel_err(
        real(forward_features(model, tokens, mask, shifted), mask), real(reference, mask)
    )
    print(f"[control] {kind}, unpadding at the corner: {err:.2e}")
    assert err > 10 * ht.TOL
    model.image_newline[...] = jnp.zeros_like(model.image_newline[...])
    err = ht.rel_err(real(forward(model, tokens, mask, images), mask), real(reference, mask))
    print(f"[control] {kind}, zero image_newline: {err:.2e}")
    assert err > 10 * ht.TOL


@pytest.mark.parametrize("kind", KINDS)
def test_fgjax_tiling_equals_the_processor(inputs, saved, kind):
    """fgjax.data.anyres tiles the photographs as the family's PIL processor does."""
    _, path, _ = saved(kind)
    _, cfg = fgjax.hf.load(path)
    mean = {"llava_onevision": dict(mean=(0.5,) * 3, std=(0.5,) * 3)}.get(kind, {})
    ours = anyres_data.tile_batch(photos(), cfg, preprocess=anyres_data.tile_config(cfg, **mean))
    _, _, theirs = fgjax_inputs(inputs[kind])
    assert ours.image_sizes == theirs.image_sizes
    np.testing.assert_allclose(
        ours.pixel_values, np.asarray(theirs.pixel_values), atol=1e-6, rtol=0
    )
    if kind == "llava_onevision":  # a multi-image row: base tiles padded to squares
        batch = processor(kind).image_processor([photos()], return_tensors="pt")
        ours = anyres_data.tile_batch(photos(), cfg, tiled=(False, False),
                                      preprocess=anyres_data.tile_config(cfg, **mean))  # fmt: skip
        np.testing.assert_allclose(
            ours.pixel_values, batch["pixel_values"].numpy().transpose(0, 1, 3, 4, 2), atol=1e-6,
            rtol=0,
        )  # fmt: skip


@pytest.mark.parametrize("kind", KINDS)
def test_new_key_layout(saved, inputs, kind, tmp_path):
    """The 4.52+ layout (model.vision_tower.vision_model.*, model.language_model.*,
    model.image_newline, lm_head), loaded with unrolled layers."""
    _, path, reference = saved(kind)
    renames = [
        ("language_model.lm_head.", "lm_head."), ("language_model.model.", "model.language_model."),
        ("vision_tower.", "model.vision_tower."),
        ("multi_modal_projector.", "model.multi_modal_projector."),
        ("image_newline", "model.image_newline"),
    ]  # fmt: skip

    assert "image_newline" in load_file(f"{path}/model.safetensors")
    model, _ = fgjax.hf.load(ht.resave_renamed(path, tmp_path, renames), scan_layers=False)
    tokens, mask, images = fgjax_inputs(inputs[kind])
    ht.check(f"{kind} logits, new key layout, unrolled", real(forward(model, tokens, mask, images), mask),
             real(reference, mask))  # fmt: skip


@pytest.mark.parametrize("kind", KINDS)
def test_save_round_trip(saved, inputs, kind, tmp_path):
    """fgjax.hf.save writes a directory transformers loads back bit-exactly, as the same
    architecture, and fgjax reads the same config from it."""
    hf_model, path, _ = saved(kind)
    model, cfg = fgjax.hf.load(path)
    fgjax.hf.save(model, tmp_path / "out")
    again = MODEL_CLASSES[kind].from_pretrained(tmp_path / "out")
    assert ht.state_dicts_equal(hf_model, again) == []
    assert fgjax.hf.load(tmp_path / "out")[1] == cfg
    assert from_dict(json.loads(json.dumps(to_dict(cfg)))) == cfg  # fgjax's own run configs


def test_text_only_rows(saved):
    """Without images the model is its decoder: transformers' text-only forward."""
    hf_model, path, _ = saved("llava_next")
    text = np.random.default_rng(6).integers(1, 250, (2, 12)).astype(np.int32)
    with torch.no_grad():
        theirs = hf_model(input_ids=torch.from_numpy(text.astype(np.int64))).logits.numpy()
    model, _ = fgjax.hf.load(path)
    ones = jnp.ones(text.shape, bool)
    ht.check("llava_next, text only", model(jnp.asarray(text), input_mask=ones).logits, theirs)


# -- the real sizes ------------------------------------------------------------------------

CLIP_L336 = dict(hidden_size=1024, image_size=336, intermediate_size=4096,
                 model_type="clip_vision_model", num_attention_heads=16, num_hidden_layers=24,
                 patch_size=14, projection_dim=768, vocab_size=32000)  # fmt: skip
PUBLISHED = {
    # llava-hf/llava-v1.6-mistral-7b-hf/config.json (the fields it sets)
    "llava_next_mistral_7b": dict(
        architectures=["LlavaNextForConditionalGeneration"], ignore_index=-100,
        image_grid_pinpoints=[[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]],
        image_token_index=32000, model_type="llava_next", projector_hidden_act="gelu",
        text_config=dict(_name_or_path="mistralai/Mistral-7B-Instruct-v0.2",
                         architectures=["MistralForCausalLM"], intermediate_size=14336,
                         max_position_embeddings=32768, model_type="mistral",
                         num_key_value_heads=8, rms_norm_eps=1e-05, rope_theta=1000000.0,
                         sliding_window=None, torch_dtype="bfloat16", vocab_size=32064),
        torch_dtype="float16", use_image_newline_parameter=True, vision_config=CLIP_L336,
        vision_feature_layer=-2, vision_feature_select_strategy="default", vocab_size=32064,
    ),
    # llava-hf/llava-onevision-qwen2-7b-ov-hf, as transformers' conversion script writes it:
    # Qwen2-7B-Instruct's text config (vocabulary 152064 + <image>, <video>, padded to a
    # multiple of 64: 152128), SigLIP So400m/14-384 with 26 blocks and no head, the rest at
    # LlavaOnevisionConfig's defaults
    "llava_onevision_qwen2_7b": dict(
        architectures=["LlavaOnevisionForConditionalGeneration"], model_type="llava_onevision",
        text_config=dict(architectures=["Qwen2ForCausalLM"], bos_token_id=151643,
                         eos_token_id=151645, hidden_size=3584, intermediate_size=18944,
                         max_position_embeddings=32768, max_window_layers=28,
                         model_type="qwen2", num_attention_heads=28, num_hidden_layers=28,
                         num_key_value_heads=4, rms_norm_eps=1e-06, rope_theta=1000000.0,
                         sliding_window=131072, tie_word_embeddings=False,
                         use_sliding_window=False, vocab_size=152128),
        vision_config=dict(hidden_size=1152, image_size=384, intermediate_size=4304,
                           model_type="siglip_vision_model", num_attention_heads=16,
                           num_hidden_layers=26, patch_size=14, vision_use_head=False),
        use_image_newline_parameter=True,
    ),
}  # fmt: skip
PRESETS = {"llava_next_mistral_7b": lnx.llava_next_mistral_7b,
           "llava_onevision_qwen2_7b": lnx.llava_onevision_qwen2_7b}  # fmt: skip


transformers_count = ht.transformers_count


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_real_size_parameter_count(name):
    """The preset's parameter count (shapes only) equals transformers' for the published
    config (meta device), and the published config reads as the preset."""
    cfg = PRESETS[name]()
    ours, theirs = param_count(cfg), transformers_count(PUBLISHED[name])
    print(f"[params] {name}: fgjax {ours:,} transformers {theirs:,}")
    assert ours == theirs
    _, got = configs.from_hf(PUBLISHED[name])
    want, got = config_export.resolved(cfg), config_export.resolved(got)
    assert got == want, config_export.diff(want, got)


@pytest.mark.parametrize("height, width", [(899, 1024), (480, 640), (1024, 300), (336, 336)])
def test_real_size_token_counts(height, width):
    """The image-token counts of the 7B models at real sizes: transformers' processor
    arithmetic (`_get_number_of_features`) against cfg.image_token_count."""
    next_cfg, ov_cfg = lnx.llava_next_mistral_7b(), lnx.llava_onevision_qwen2_7b()
    ov = OnevisionImageProcessor(
        image_processor=tf.LlavaOnevisionImageProcessorPil(), tokenizer=word_tokenizer(),
        num_image_tokens=729, vision_feature_select_strategy="full",
    )  # fmt: skip
    nxt = tf.LlavaNextProcessor(
        image_processor=tf.LlavaNextImageProcessorPil(
            size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}
        ),
        tokenizer=word_tokenizer(), patch_size=14, vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )  # fmt: skip
    assert ov._get_number_of_features(height, width, 384, 384) == ov_cfg.image_token_count(
        height, width
    )
    assert nxt._get_number_of_features(height, width, 336, 336) - 1 == (
        next_cfg.image_token_count(height, width)
    )


def test_pinpoint_buckets():
    """Images resized to their best pinpoint beforehand (the bucketing fgjax/models/
    llava_next.py describes) keep nothing to unpad and give one layout per pinpoint."""
    rng = np.random.default_rng(0)
    sizes = rng.integers(100, 2000, (200, 2))
    for cfg in (lnx.llava_next_mistral_7b(), lnx.llava_onevision_qwen2_7b()):
        pins = cfg.image_grid_pinpoints
        layouts = {cfg.layout(*select_best_resolution(h, w, pins)) for h, w in sizes}
        assert len(layouts) <= len(pins)
        side = cfg.tile_side
        for t in layouts:
            assert t.rows == (0, t.grid[0] * side) and t.cols == (0, t.grid[1] * side)
