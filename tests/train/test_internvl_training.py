"""Training InternVL through the real trainer (config.model.vlm = "tiny_internvl": each image
squashed to one 32 px tile, 16 image tokens between <img> and </img>): a tiny transformers
InternVLForConditionalGeneration with random weights is saved, loaded as the run's
initialization (init "hf:DIR") and instruction-tuned on LLaVA-format rows in ChatML without a
system message (InternVL's published chat template).

The tokenizer's vocabulary is exactly the model's (320 ids), as InternVL 3's is (151674): the
trainer must not add LLaVA's <image> (conversation.needs_image_token), or the encoder's check
of the vocabulary fails.

Checked: the trainer's first batches' loss equals transformers' loss with labels on the same
tokens and tiles (1e-5 relative: both float32; zeroing the tiles moves transformers' by
4.6e-4), and so does the trainer's logged loss of step 1; a few steps lower the loss on that batch; the pipeline's tile of an image is
InternVLProcessor's (GotOcr2ImageProcessorPil with max_patches=1) and its prompt ids are the
published chat template's, expanded by the processor."""

from __future__ import annotations

import ml_collections
import numpy as np
import pytest
import torch
import transformers as tf
from PIL import Image

import fgjax.hf
from fgjax.data import images as image_ops
from fgjax.data import templates
from fgjax.data.conversation import INTERNVL_IMAGE_TOKENS
from fgjax.data.tokenizer import tokenizer_for
from fgjax.data.tokenizer_train import _TINY_CORPUS, train_bpe
from fgjax.hf import config_export
from fgjax.models import presets
from fgjax.train import inputs as train_inputs
from fgjax.train import schema, trainer
from tests.hf import hf_testing as ht
from tests.train import helpers

PRESET = presets.whole_vlm("tiny_internvl")
STEPS = 6  # 8 rows in batches of 4: every row is seen three times
SPECIALS = ("<|endoftext|>", templates.IM_START, templates.IM_END, *INTERNVL_IMAGE_TOKENS[::2],
            INTERNVL_IMAGE_TOKENS[1], "<video>")  # fmt: skip
# OpenGVLab/InternVL3-1B-hf's chat template (transformers' convert_internvl_weights_to_hf.py)
CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n'}}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}{% if content['type'] == 'image' %}"
    "{{ '<IMG_CONTEXT>\\n' }}{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{'<|im_end|>\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{'<|im_start|>assistant\\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> str:
    """A byte-level BPE tokenizer of exactly the preset's 320 ids whose special tokens take
    its ids (train_bpe gives them the lowest, in order; <video> 6, which InternVLProcessor
    reads): no BOS, EOS <|im_end|>, padding <|endoftext|>."""
    corpus = [templates.QWEN2_SYSTEM, "Describe it.", "And the colour?", "Say something.",
              " ".join(helpers.WORDS), *_TINY_CORPUS] * 4  # fmt: skip
    tok = train_bpe(corpus, 320, bos_token=None, eos_token=SPECIALS[0], special_tokens=SPECIALS[1:])
    tok.eos_token, tok.pad_token = templates.IM_END, SPECIALS[0]
    assert [tok.token_to_id(t) for t in SPECIALS] == [0, 1, 2, 3, 4, PRESET.image_token_id, 6]
    assert tok.vocab_size == PRESET.decoder.vocab_size  # no room for an added <image>
    path = tmp_path_factory.mktemp("internvl_tokenizer")
    tok.save(str(path))
    return str(path)


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory):
    """(transformers InternVLForConditionalGeneration of the tiny preset's shapes with random
    weights, its directory)."""
    torch.manual_seed(0)
    config = tf.InternVLConfig(**config_export.to_hf(PRESET))
    model = ht.randomize(tf.InternVLForConditionalGeneration(config))
    return model, ht.save_pretrained(model, tmp_path_factory.mktemp("internvl_hf"))


def internvl_config(data: dict, tokenizer: str, init: str):
    c = ml_collections.ConfigDict()
    c.job, c.task, c.seed, c.stage = "train", "vlm", 0, "finetune"
    c.model = dict(vlm="tiny_internvl")
    c.init = {"vlm": f"hf:{init}"}
    c.data = dict(
        sources=[{"name": "llava_json", "path": data["json"], "image_root": data["images"]}],
        tokenizer=tokenizer, template="chatml", system=None, max_length=64,
    )  # fmt: skip
    c.batch_size, c.num_steps = 4, STEPS
    c.optim = dict(lr=3e-3, schedule="constant", clip_norm=1.0)
    c.checkpoint = dict(every_steps=STEPS, keep=1, asynchronous=False)
    c.log_every = 1
    return c


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return helpers.write_dataset(tmp_path_factory.mktemp("internvl_data"), num_rows=8)


@pytest.fixture(scope="module")
def run(tmp_path_factory, data, tokenizer_dir, hf_model):
    """(config, workdir) of the finished run."""
    workdir = tmp_path_factory.mktemp("internvl_run") / "workdir"
    config = internvl_config(data, tokenizer_dir, hf_model[1])
    trainer.train(config, str(workdir))
    return config, workdir


def hf_inputs(batch: dict) -> dict:
    """The batch as transformers takes it: the tiles of the rows that hold an image (NCHW);
    labels at the loss positions (-100 elsewhere: transformers shifts them as fgjax's
    next-token loss does)."""
    with_image = (batch["tokens"] == PRESET.image_token_id).any(axis=1)
    tokens = torch.from_numpy(batch["tokens"].astype(np.int64))
    return dict(
        input_ids=tokens,
        attention_mask=torch.from_numpy(batch["input_mask"].astype(np.int64)),
        pixel_values=torch.from_numpy(batch["images"][with_image].transpose(0, 3, 1, 2).copy()),
        labels=torch.where(torch.from_numpy(batch["loss_mask"]), tokens, -100),
    )


def test_training_loss_equals_transformers_and_training_lowers_it(run, hf_model):
    """On the first two batches (every row once: with and without an image, one or two
    turns), the task's loss of the imported weights equals transformers' loss with labels,
    and so does the trainer's logged loss of step 1; the exported weights' loss on batch 1 is
    lower."""
    config, workdir = run
    batches = helpers.first_batches(config, image_token=False)
    has_image = np.concatenate([(b["tokens"] == PRESET.image_token_id).any(1) for b in batches])
    assert has_image.any() and not has_image.all()
    counts = np.concatenate([(b["tokens"] == PRESET.image_token_id).sum(1) for b in batches])
    assert set(counts.tolist()) == {0, PRESET.num_image_tokens}
    model, _ = fgjax.hf.load(hf_model[1])

    def reference_loss(batch):
        with torch.no_grad():
            return float(hf_model[0](**hf_inputs(batch)).loss)

    references = helpers.check_vlm_training(
        "internvl", model, reference_loss, batches, workdir, STEPS
    )
    # negative control: the tiles matter (transformers' loss without them misses by 4.6e-4)
    blank = hf_inputs(batches[0])
    blank["pixel_values"] = torch.zeros_like(blank["pixel_values"])
    with torch.no_grad():
        miss = abs(float(hf_model[0](**blank).loss) - references[0]) / references[0]
    print(f"[internvl loss] batch 0, transformers with zero tiles: {miss:.1e}")
    assert miss > 10 * 1e-5


class InternVLImageProcessor(tf.InternVLProcessor):
    """transformers' InternVLProcessor without its video processor (torchvision only)."""

    def __init__(self, image_processor=None, tokenizer=None, **kwargs):
        super().__init__(image_processor=image_processor, tokenizer=tokenizer, **kwargs)


def test_pipeline_sample_is_internvl_processors_one_tile_input(data, tokenizer_dir):
    """A training row's tile and prompt: InternVLProcessor (max_patches=1) on the row's image
    and on the published chat template's rendering of its question."""
    config = schema.resolve(internvl_config(data, tokenizer_dir, "unused"))
    tokenizer = tokenizer_for(tokenizer_dir, image_token=False)
    transform = train_inputs.make_transform(config, PRESET, tokenizer)
    image = np.asarray(Image.open(f"{data['images']}/0.png"))
    record = {"image": image, "conversations": [
        {"from": "human", "value": "<image>\nDescribe it."}, {"from": "gpt", "value": "red"}]}  # fmt: skip
    example = transform(record)
    hf_tok = tf.PreTrainedTokenizerFast(
        tokenizer_file=f"{tokenizer_dir}/tokenizer.json",
        extra_special_tokens={"start_image_token": "<img>", "end_image_token": "</img>",
                              "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"},
    )  # fmt: skip
    tile = PRESET.encoder.resolution
    processor = InternVLImageProcessor(
        image_processor=tf.GotOcr2ImageProcessorPil(
            size={"height": tile, "width": tile}, crop_to_patches=True, max_patches=1,
            image_mean=list(image_ops.IMAGENET_MEAN), image_std=list(image_ops.IMAGENET_STD),
        ),
        tokenizer=hf_tok, chat_template=CHAT_TEMPLATE, image_seq_length=PRESET.num_image_tokens,
    )  # fmt: skip
    messages = [{"role": "user", "content": [{"type": "image"},
                                             {"type": "text", "text": "Describe it."}]}]  # fmt: skip
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(images=[[Image.fromarray(image)]], text=[text], return_tensors="np")
    np.testing.assert_allclose(
        example["images"], inputs["pixel_values"][0].transpose(1, 2, 0), atol=1e-6, rtol=0
    )
    prompt = inputs["input_ids"][0].tolist()
    assert example["tokens"][: len(prompt)].tolist() == prompt
    assert not example["loss_mask"][: len(prompt)].any() and example["loss_mask"][len(prompt)]
