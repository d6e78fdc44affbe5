"""Training Qwen2.5-VL at a fixed image size through the real trainer (config.model.vlm =
"tiny_qwen25vl", 112 px images, 16 image tokens): a tiny transformers
Qwen2_5_VLForConditionalGeneration with random weights is saved, loaded as the run's
initialization (init "hf:DIR") and instruction-tuned on LLaVA-format rows in ChatML.

Checked: the training loss of the trainer's first batches equals transformers' loss with
labels on the same tokens, patches and grids (1e-5 relative: both float32), and so does the
trainer's logged loss of step 1; a few steps lower the loss on that batch; under stage
"finetune" the tower stays bit-identical while its patch merger (the projector group) and the
LLM train, and every stage assigns the groups so; the run exports as a
Qwen2_5_VLForConditionalGeneration whose logits equal fgjax's, with a tokenizer, chat template
and image processor that give fgjax's prompt ids and patches; the tower's analytic FLOPs (for
MFU) agree with XLA's count."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import torch
import transformers as tf
from flax import nnx
from PIL import Image

import fgjax.hf
from fgjax import native, trees
from fgjax.data import qwen_patches, templates
from fgjax.data.conversation import QWEN_VL_IMAGE_TOKENS, ConversationEncoder
from fgjax.data.tokenizer import tokenizer_for
from fgjax.data.tokenizer_train import train_bpe
from fgjax.hf import config_export
from fgjax.hf.export import export_run
from fgjax.models import presets
from fgjax.train import experiment, flops, trainer
from tests.hf import hf_testing as ht
from tests.train import helpers

PRESET = presets.whole_vlm("tiny_qwen25vl")
STEPS = 6  # 8 rows in batches of 4: every row is seen three times
QUESTION = "What is striped here?"


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> str:
    """A byte-level BPE tokenizer whose Qwen special tokens take the tiny preset's ids
    (train_bpe gives its special tokens the lowest ids, in order), no BOS, EOS <|im_end|>,
    padding <|endoftext|> (as Qwen2.5-VL-Instruct's)."""
    specials = ("<|endoftext|>", templates.IM_START, templates.IM_END, *QWEN_VL_IMAGE_TOKENS[::2],
                QWEN_VL_IMAGE_TOKENS[1], "<|video_pad|>")  # fmt: skip
    corpus = [templates.QWEN2_SYSTEM, QUESTION, "Describe it.", " ".join(helpers.WORDS)] * 4
    tok = train_bpe(corpus, 300, bos_token=None, eos_token=specials[0], special_tokens=specials[1:])
    tok.eos_token, tok.pad_token = templates.IM_END, specials[0]
    ids = [tok.token_to_id(t) for t in specials]
    assert ids == [0, 1, 2, PRESET.vision_start_token_id, PRESET.vision_end_token_id,
                   PRESET.image_token_id, PRESET.video_token_id]  # fmt: skip
    path = tmp_path_factory.mktemp("qwen_tokenizer")
    tok.save(str(path))
    return str(path)


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory):
    """(transformers Qwen2_5_VLForConditionalGeneration of the tiny preset's shapes with
    random weights, its directory)."""
    hf_config = config_export.to_hf(PRESET)
    torch.manual_seed(0)
    model = ht.randomize(tf.Qwen2_5_VLForConditionalGeneration(tf.Qwen2_5_VLConfig(**hf_config)))
    return model, ht.save_pretrained(model, tmp_path_factory.mktemp("qwen_hf"))


def qwen_config(data: dict, tokenizer: str, init: str, stage: str = "finetune"):
    c = ml_collections.ConfigDict()
    c.job, c.task, c.seed, c.stage = "train", "vlm", 0, stage
    c.model = dict(vlm="tiny_qwen25vl")
    c.init = {"vlm": f"hf:{init}"}
    c.data = dict(
        sources=[{"name": "llava_json", "path": data["json"], "image_root": data["images"]}],
        tokenizer=tokenizer, template="chatml", max_length=80,
    )  # fmt: skip
    c.batch_size, c.num_steps = 4, STEPS
    c.optim = dict(lr=3e-3, schedule="constant", clip_norm=1.0)
    c.checkpoint = dict(every_steps=STEPS, keep=1, asynchronous=False)
    c.log_every = 1
    return c


@pytest.fixture(scope="module")
def run(tmp_path_factory, tokenizer_dir, hf_model):
    """(config, workdir) of the finished run."""
    root = tmp_path_factory.mktemp("qwen_run")
    data = helpers.write_dataset(root / "data", num_rows=8)  # row 3 two turns, row 5 text only
    config = qwen_config(data, tokenizer_dir, hf_model[1])
    trainer.train(config, str(root / "workdir"))
    return config, root / "workdir"


def hf_inputs(batch: dict) -> dict:
    """The batch as transformers takes it: the patches of the rows that hold an image,
    concatenated, one (1, 8, 8) grid each; labels at the loss positions (-100 elsewhere:
    transformers shifts them as fgjax's next-token loss does)."""
    with_image = (batch["tokens"] == PRESET.image_token_id).any(axis=1)
    pixels = batch["images"][with_image].reshape(-1, PRESET.encoder.patch_dim)
    tokens = torch.from_numpy(batch["tokens"].astype(np.int64))
    return dict(
        input_ids=tokens,
        attention_mask=torch.from_numpy(batch["input_mask"].astype(np.int64)),
        pixel_values=torch.from_numpy(pixels),
        image_grid_thw=torch.tensor([PRESET.encoder.fixed_grid] * int(with_image.sum())),
        mm_token_type_ids=(tokens == PRESET.image_token_id).long(),
        labels=torch.where(torch.from_numpy(batch["loss_mask"]), tokens, -100),
    )


def at_training_size(model):
    """A model fgjax.hf.load read (native resolution) with the preset's config: its fixed
    training size (the same parameters)."""
    return nnx.merge(nnx.graphdef(fgjax.models.abstract(PRESET)), nnx.state(model))


def test_training_loss_equals_transformers_and_training_lowers_it(run, hf_model):
    """On the first two batches (every row once: with and without an image, one or two
    turns), the task's loss of the imported weights equals transformers' loss with labels,
    and so does the trainer's logged loss of step 1 (the initial weights on batch 1); the
    exported weights' loss on batch 1 is lower."""
    config, workdir = run
    batches = helpers.first_batches(config, image_token=True)
    has_image = np.concatenate([(b["tokens"] == PRESET.image_token_id).any(1) for b in batches])
    assert has_image.any() and not has_image.all()
    model = at_training_size(fgjax.hf.load(hf_model[1])[0])

    def reference_loss(batch):
        with torch.no_grad():
            return float(hf_model[0](**hf_inputs(batch)).loss)

    helpers.check_vlm_training("qwen2.5-vl", model, reference_loss, batches, workdir, STEPS)


def test_finetune_trains_the_merger_and_llm_not_the_tower(run, hf_model):
    _, workdir = run
    model, _ = fgjax.hf.load(hf_model[1])
    before = trees.flatten(jax.device_get(nnx.to_pure_dict(nnx.state(model, nnx.Param))))
    after = helpers.exported(workdir)
    assert before.keys() == after.keys()
    changed = {p for p in before if not np.array_equal(before[p], after[p])}
    tower = {p for p in before if p.startswith("encoder/") and "/merger/" not in f"/{p}"}
    assert tower and not tower & changed
    assert all(p in changed for p in before if p.startswith("encoder/merger/"))
    assert any(p.startswith("decoder/") for p in changed)


@pytest.mark.parametrize(
    "stage,trained",
    [("align", {"projector"}), ("finetune", {"projector", "decoder"}),
     ("full", {"encoder", "projector", "decoder"})],
)  # fmt: skip
def test_stages_group_the_tower_merger_and_llm(tokenizer_dir, stage, trained):
    """The merger is the projector group, the rest of the tower the encoder's: each stage's
    trainable parameters (without compiling anything)."""
    config = qwen_config({"json": "x.json", "images": "."}, tokenizer_dir, "unused", stage)
    exp = experiment.build(config)
    groups = {exp.path_groups[p] for p in trees.flatten(exp.abstract_state().trainable)}
    assert groups == trained
    assert exp.path_groups["encoder/merger/fc1/kernel"] == "projector"
    assert exp.path_groups["encoder/patch_embed"] == "encoder"


def test_export_loads_in_transformers_with_fgjax_logits(run, tmp_path):
    """The exported directory: transformers' model gives the run's logits on the first batch;
    its tokenizer's chat template (<|image_pad|> repeated as Qwen2_5_VLProcessor does) gives
    fgjax's prompt ids, and its image processor fgjax's patches of a 112 x 112 image."""
    config, workdir = run
    out = tmp_path / "hf"
    result = export_run(workdir, out, dtype="float32")
    assert result.architecture == "Qwen2_5_VLForConditionalGeneration"
    hf = tf.Qwen2_5_VLForConditionalGeneration.from_pretrained(out).eval()
    batch = helpers.first_batches(config, image_token=True, count=1)[0]
    inputs = {k: v for k, v in hf_inputs(batch).items() if k != "labels"}
    with torch.no_grad():
        reference = hf(**inputs).logits.numpy()
    model, cfg = native.load(workdir / "params_export")
    assert cfg == PRESET
    ours = nnx.jit(lambda m, t, x, k: m(t, x, input_mask=k).logits)(
        model, jnp.asarray(batch["tokens"]), jnp.asarray(batch["images"]),
        jnp.asarray(batch["input_mask"]),
    )  # fmt: skip
    mask = batch["input_mask"]
    err = ht.rel_err(np.asarray(ours)[mask], reference[mask])
    print(f"[qwen2.5-vl export] logits max|diff|/max|ref| = {err:.2e}")
    assert err <= ht.TOL

    tokenizer = tokenizer_for(config.data.tokenizer, image_token=True)
    encoder = ConversationEncoder.for_model(tokenizer, "chatml", PRESET)
    prompt = encoder.encode_prompt("<image>\n" + QUESTION, has_image=True)
    hf_tok = tf.AutoTokenizer.from_pretrained(out)
    content = [{"type": "image"}, {"type": "text", "text": QUESTION}]
    text = hf_tok.apply_chat_template([{"role": "user", "content": content}],
                                      add_generation_prompt=True, tokenize=False)  # fmt: skip
    text = text.replace("<|image_pad|>", "<|image_pad|>" * PRESET.num_image_tokens)
    assert hf_tok(text, add_special_tokens=False).input_ids == prompt.tolist()
    image = np.asarray(Image.fromarray(raw_image()).resize((112, 112), Image.BICUBIC))
    pixels = tf.AutoImageProcessor.from_pretrained(out)(images=[image], return_tensors="np")
    patches = qwen_patches.preprocess(image, qwen_patches.patch_config_for(PRESET.encoder))
    np.testing.assert_array_equal(pixels["pixel_values"], patches)


def raw_image() -> np.ndarray:
    """A non-square photo-like uint8 image."""
    rng = np.random.default_rng(0)
    pixels = np.cumsum(rng.integers(-20, 21, (45, 70, 3)), axis=1) + 128
    return np.clip(pixels, 0, 255).astype(np.uint8)


def test_tower_flops_match_the_compiled_count():
    """The analytic count of the tower at its fixed size (windowed and full blocks) and of the
    merger (the MFU's) against XLA's count of the compiled run_rows, unrolled (XLA counts a
    scanned loop's body once), within 25% as tests/train/test_flops.py's towers."""
    cfg = dataclasses.replace(PRESET.encoder, scan_layers=False)
    graphdef, state = nnx.split(fgjax.models.build(cfg))
    pixels = np.zeros((2, *qwen_patches.patch_config_for(cfg).shape), np.float32)
    compiled = jax.jit(lambda s, x: nnx.merge(graphdef, s).run_rows(x)).lower(state, pixels)
    cost = compiled.compile().cost_analysis()
    counted = (cost[0] if isinstance(cost, list) else cost)["flops"]
    analytic = 2 * sum(flops.qwen25_vision_flops(cfg))
    print(f"[qwen2.5-vl flops] analytic {analytic:.3e}, compiled {counted:.3e}")
    assert abs(counted - analytic) / analytic < 0.25
