"""fgjax's evaluation protocols on imported HF VLMs give transformers' own class scores.

For every family fgjax imports, a tiny random model is saved with save_pretrained beside its
processor files, as a real HF directory holds them: a tokenizer in the family's format
(trained here), the published chat template, the PIL image processor. fgjax's evaluation
(fgjax.evaluate.runner on "hf:DIR" with the fgjax template of that chat format and the
protocol options of fgjax/evaluate/configs.py) runs likelihood ranking and lettered multiple
choice on four real photographs and five class names. The reference comes from transformers
alone, in float64: the chat template applied by the processor to the same question and
options, the processor on the same image, one forward per (image, continuation), the
continuation's token log-probs summed, with the texts fgjax/evaluate/prompts.py documents:

  likelihood       generation prompt + reply prefix + "The photo features a",
                   continuation " <class name>"
  multiple choice  generation prompt of the lettered question (the option sets fgjax wrote),
                   continuation reply prefix + "A", "B", ...

Checked: every class's sum (likelihood's predictions.jsonl), every letter's log-prob
(multiple_choice_letters' predictions.jsonl) and the predicted classes and letters equal
transformers' to 1e-4 relative (float32 against float64: ~2e-7 measured). Negative control:
the reference with another lead-in ("This is a") misses fgjax's sums by 4e-3 or more. So
that the scores hang on the prompt, the models' next-token distributions are sharpened (the
output embedding and the blocks' output projections scaled by SHARPEN).

Variable-resolution families (LLaVA-NeXT, OneVision, Qwen2.5-VL, Qwen3-VL) are evaluated at
one image size (the evaluation's image_size, fgjax/evaluate/image_inputs.py); their reference
gets the photographs resized to it. OneVision's directory carries its own code's chat format
(ChatML), not llava-hf's published template, which no fgjax template reproduces
(LLAVA_ONEVISION). InternVL is evaluated at one size too: each 64 x 64 image tiled by
InternVLProcessor's GotOcr2ImageProcessorPil (crop_to_patches, its default 1 to 12 tiles) as
2 x 2 tiles of 32 px and the thumbnail, 5 tiles of 16 tokens between <img> and </img>, in
the published ChatML template without a system message.

Adding a family is one entry of FAMILIES: a builder of its model and processor and the
fgjax template of its chat format.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable

import hf_testing as ht
import numpy as np
import pytest
import test_hf_gemma3_vlm
import test_hf_internvl
import test_hf_llava_next
import test_hf_paligemma
import test_hf_qwen3_vl
import test_hf_qwen25_vl
import torch
import transformers as tf
import vlm_testing as vt
from PIL import Image

from fgjax.data import templates
from fgjax.data import tokenizer_train as tt
from fgjax.evaluate import configs, runner
from fgjax.hf import chat_templates

datasets = pytest.importorskip("sklearn.datasets")

QUESTION = "What type of object is in this photo?"  # fgjax/evaluate/prompts.py's defaults
LEAD_IN = "The photo features a"
OTHER_LEAD_IN = "This is a"  # the negative control's
MULTIPLE_CHOICE = (
    "{question}\n{options}\nAnswer with the option's letter from the given choices directly."
)
CLASSES = ["pagoda", "temple roof", "flower", "sunflower", "rose"]
LETTERS = "ABCD"  # K = 4 options per question
SHARPEN = 10.0
CORPUS = [
    *tt._TINY_CORPUS,
    f"{QUESTION} A. pagoda B. temple roof C. flower D. sunflower E. rose",
    "Answer with the option's letter from the given choices directly. This is a red rose.",
] * 4

# -- the published chat templates (processor chat_template of the HF repositories) ----------

LLAVA_15 = (  # llava-hf/llava-1.5-7b-hf
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}{% endif %}"
    "{# Render all images first #}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{# Render all text next #}{% if message['role'] != 'assistant' %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}{% endfor %}"
    "{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)  # fmt: skip
LLAVA_NEXT_MISTRAL = (  # llava-hf/llava-v1.6-mistral-7b-hf
    "{% for message in messages %}{% if message['role'] == 'system' %}{{ '<<SYS>>\n' + message['content'][0]['text'] + '\n<</SYS>>\n\n' }}"
    "{% elif message['role'] == 'user' %}{{ '[INST] ' }}{# Render all images first #}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{# Render all text next #}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor%}{{' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'][0]['text'] + '<\\s> '}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)  # fmt: skip
# LLaVA-OneVision's own format (its code's conv "qwen_1_5": ChatML with Qwen2's system message,
# "<image>\n" before the question), as fgjax's export writes it for template "chatml".
# llava-hf's published OneVision template renders another one ("<|im_start|>user <image>\n
# ...<|im_end|><|im_start|>assistant\n": no system message, a space after the role, no newline
# between turns), which no fgjax template reproduces.
LLAVA_ONEVISION = chat_templates.chat_template("chatml", bos=False)
QWEN25_VL = (  # Qwen/Qwen2.5-VL-7B-Instruct
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)  # fmt: skip
QWEN3_VL = (  # Qwen/Qwen3-VL-8B-Instruct, less its tool-calling branches (unused here)
    "{%- set image_count = namespace(value=0) %}{%- set video_count = namespace(value=0) %}"
    "{%- macro render_content(content, do_vision_count) %}{%- if content is string %}{{- content }}{%- else %}"
    "{%- for item in content %}{%- if 'image' in item or 'image_url' in item or item.type == 'image' %}"
    "{%- if do_vision_count %}{%- set image_count.value = image_count.value + 1 %}{%- endif %}"
    "{%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}<|vision_start|><|image_pad|><|vision_end|>"
    "{%- elif 'video' in item or item.type == 'video' %}{%- if do_vision_count %}{%- set video_count.value = video_count.value + 1 %}{%- endif %}"
    "{%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}<|vision_start|><|video_pad|><|vision_end|>"
    "{%- elif 'text' in item %}{{- item.text }}{%- endif %}{%- endfor %}{%- endif %}{%- endmacro %}"
    "{%- if messages[0].role == 'system' %}{{- '<|im_start|>system\n' + render_content(messages[0].content, false) + '<|im_end|>\n' }}{%- endif %}"
    "{%- for message in messages %}{%- set content = render_content(message.content, True) %}"
    "{%- if (message.role == 'user') or (message.role == 'system' and not loop.first) %}{{- '<|im_start|>' + message.role + '\n' + content + '<|im_end|>' + '\n' }}"
    "{%- elif message.role == 'assistant' %}{{- '<|im_start|>' + message.role + '\n' + content + '<|im_end|>\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)  # fmt: skip
INTERNVL = (  # OpenGVLab/InternVL3-1B-hf (transformers' convert_internvl_weights_to_hf.py)
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n'}}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{{ '<IMG_CONTEXT>\n' }}{% elif content['type'] == 'video' %}{{ '<video>\n' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}{{'<|im_end|>\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{'<|im_start|>assistant\n' }}{% endif %}"
)  # fmt: skip
GEMMA_3 = (  # google/gemma-3-4b-it
    "{{ bos_token }}\n"
    "{%- if messages[0]['role'] == 'system' -%}\n"
    "    {%- if messages[0]['content'] is string -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}\n"
    "    {%- else -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}\n"
    "    {%- endif -%}\n"
    "    {%- set loop_messages = messages[1:] -%}\n"
    "{%- else -%}\n"
    '    {%- set first_user_prefix = "" -%}\n'
    "    {%- set loop_messages = messages -%}\n"
    "{%- endif -%}\n"
    "{%- for message in loop_messages -%}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
    '        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}\n'
    "    {%- endif -%}\n"
    "    {%- if (message['role'] == 'assistant') -%}\n"
    '        {%- set role = "model" -%}\n'
    "    {%- else -%}\n"
    "        {%- set role = message['role'] -%}\n"
    "    {%- endif -%}\n"
    "    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}\n"
    "    {%- if message['content'] is string -%}\n"
    "        {{ message['content'] | trim }}\n"
    "    {%- elif message['content'] is iterable -%}\n"
    "        {%- for item in message['content'] -%}\n"
    "            {%- if item['type'] == 'image' -%}\n"
    "                {{ '<start_of_image>' }}\n"
    "            {%- elif item['type'] == 'text' -%}\n"
    "                {{ item['text'] | trim }}\n"
    "            {%- endif -%}\n"
    "        {%- endfor -%}\n"
    "    {%- else -%}\n"
    '        {{ raise_exception("Invalid content type") }}\n'
    "    {%- endif -%}\n"
    "    {{ '<end_of_turn>\n' }}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "    {{'<start_of_turn>model\n'}}\n"
    "{%- endif -%}\n"
)  # fmt: skip


# -- tokenizers in each family's format, trained here --------------------------------------


def sentencepiece_tokenizer(directory, tokenizer_class: str, *, prefix_space: bool, specials,
                            named=None):  # fmt: skip
    """A Llama-2 / Gemma style tokenizer (sentencepiece BPE with byte fallback, BOS added)
    converted by transformers, with `specials` added as special tokens."""
    sp = tt.train_sentencepiece(CORPUS, 400, add_dummy_prefix=prefix_space)
    sp.save(str(directory))
    config = {"tokenizer_class": tokenizer_class, "legacy": False, "add_bos_token": True,
              "add_prefix_space": prefix_space, "bos_token": "<s>", "eos_token": "</s>",
              "unk_token": "<unk>", "extra_special_tokens": named or {}}  # fmt: skip
    with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
        json.dump(config, f)
    tok = tf.AutoTokenizer.from_pretrained(directory)
    tok.add_special_tokens({"additional_special_tokens": list(specials)})
    return tok


def llama_tokenizer(directory):
    tok = sentencepiece_tokenizer(
        directory, "LlamaTokenizer", prefix_space=True, specials=["<image>"]
    )
    tok.add_special_tokens({"pad_token": "<pad>"})
    return tok


def qwen2_tokenizer(specials, named=None):
    """Qwen2's format (byte-level BPE, no BOS) with `specials` added as special tokens;
    `named`: special tokens the processor reads as tokenizer attributes."""
    trained = json.loads(tt.train_bpe(CORPUS, 400, bos_token=None, eos_token="<|endoftext|>")
                         ._native.to_str())["model"]  # fmt: skip
    tok = tf.Qwen2Tokenizer(vocab=trained["vocab"], merges=[tuple(m) for m in trained["merges"]],
                            extra_special_tokens=named or {})  # fmt: skip
    tok.add_special_tokens({"additional_special_tokens": list(specials)})
    return tok


GEMMA3_TOKENS = {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                 "image_token": "<image_soft_token>"}  # fmt: skip


def gemma_tokenizer(directory, specials=(), named=None):
    """Gemma's format: no "▁" before the text, BOS added; `named`: special tokens the
    processor reads as tokenizer attributes (Gemma 3's boi_token, ...)."""
    return sentencepiece_tokenizer(
        directory, "GemmaTokenizer", prefix_space=False, specials=specials, named=named
    )


# -- the families ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Family:
    """build(directory) -> (a transformers model, its processor), to be saved to `directory`
    (tokenizer files may be written there first); template: the fgjax template of its chat
    format; reply_prefix: what an answer starts with after the generation prompt (the
    template's); system: the conversation's system message on both sides (None: none;
    ...: the chat template's and the fgjax template's own defaults); size: the side
    every image is brought to (the evaluation's image_size, variable-resolution families);
    suffix: PaliGemma, no chat template: the question is the processor's text, the answer
    its suffix."""

    build: Callable
    template: str
    reply_prefix: str = ""
    system: str | None = ...
    size: int | None = None
    suffix: bool = False


def llava15(directory):
    tok = llama_tokenizer(directory)
    config = tf.LlavaConfig(
        vision_config=tf.CLIPVisionConfig(**ht.VISION),
        text_config=tf.LlamaConfig(**{**ht.TEXT, "vocab_size": len(tok) + 8, "max_position_embeddings": 256}),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
    )  # fmt: skip
    images = tf.CLIPImageProcessorPil(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    processor = tf.LlavaProcessor(
        image_processor=images, tokenizer=tok, chat_template=LLAVA_15, patch_size=8,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
    )  # fmt: skip
    return tf.LlavaForConditionalGeneration(config), processor


def llava_next(kind, template):
    def build(directory):
        if kind == "llava_next":
            tok = llama_tokenizer(directory)
        else:
            tok = qwen2_tokenizer(["<|im_start|>", "<|im_end|>", "<image>", "<video>"])
        config = test_hf_llava_next.hf_config(kind)
        config.text_config.vocab_size = len(tok) + 8
        config.image_token_index = tok.convert_tokens_to_ids("<image>")
        if kind == "llava_onevision":
            config.video_token_index = tok.convert_tokens_to_ids("<video>")
        reference = test_hf_llava_next.processor(kind)  # its image processor and settings
        settings = {k: getattr(reference, k) for k in ("patch_size", "num_image_tokens",
                    "vision_feature_select_strategy", "num_additional_image_tokens",
                    "vision_aspect_ratio") if hasattr(reference, k)}  # fmt: skip
        processor = type(reference)(
            image_processor=reference.image_processor, tokenizer=tok, chat_template=template,
            **settings,
        )  # fmt: skip
        return test_hf_llava_next.MODEL_CLASSES[kind](config), processor

    return build


QWEN_TOKENS = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
               "<|image_pad|>", "<|video_pad|>"]  # fmt: skip


class QwenImageProcessor(tf.Qwen2_5_VLProcessor):
    """transformers' Qwen2_5_VLProcessor without its video processor (torchvision only): its
    own <|image_pad|> expansion and image processor."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor=image_processor, tokenizer=tokenizer,
                         chat_template=chat_template, **kwargs)  # fmt: skip


def qwen25_vl(directory):
    tok = qwen2_tokenizer(QWEN_TOKENS)
    start, end, image, video = tok.convert_tokens_to_ids(QWEN_TOKENS[2:])
    config = tf.Qwen2_5_VLConfig(
        text_config={**test_hf_qwen25_vl.TEXT, "vocab_size": len(tok) + 8},
        vision_config=test_hf_qwen25_vl.VISION, image_token_id=image, video_token_id=video,
        vision_start_token_id=start, vision_end_token_id=end,
    )  # fmt: skip
    images = tf.Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=400 * 400)
    processor = QwenImageProcessor(image_processor=images, tokenizer=tok, chat_template=QWEN25_VL)
    return tf.Qwen2_5_VLForConditionalGeneration(config), processor


def qwen3_vl(directory):
    tok = qwen2_tokenizer(QWEN_TOKENS)
    start, end, image, video = tok.convert_tokens_to_ids(QWEN_TOKENS[2:])
    config = tf.Qwen3VLConfig(
        text_config={**test_hf_qwen3_vl.TEXT, "vocab_size": len(tok) + 8},
        vision_config=test_hf_qwen3_vl.VISION, image_token_id=image, video_token_id=video,
        vision_start_token_id=start, vision_end_token_id=end, tie_word_embeddings=True,
    )  # fmt: skip
    processor = test_hf_qwen3_vl.ImageProcessor(
        image_processor=test_hf_qwen3_vl.PROCESSOR.image_processor, tokenizer=tok,
        chat_template=QWEN3_VL,
    )  # fmt: skip
    return tf.Qwen3VLForConditionalGeneration(config), processor


def gemma3(directory):
    tok = gemma_tokenizer(directory, ["<start_of_turn>", "<end_of_turn>"], named=GEMMA3_TOKENS)
    config = test_hf_gemma3_vlm.hf_config()
    config.text_config.vocab_size = len(tok) + 8
    config.boi_token_index, config.eoi_token_index, config.image_token_index = (
        tok.convert_tokens_to_ids(list(GEMMA3_TOKENS.values()))
    )
    processor = tf.Gemma3Processor(
        image_processor=test_hf_gemma3_vlm.PROCESSOR, tokenizer=tok, chat_template=GEMMA_3,
        image_seq_length=test_hf_gemma3_vlm.TOKENS_PER_IMAGE,
    )  # fmt: skip
    return tf.Gemma3ForConditionalGeneration(config), processor


INTERNVL_TOKENS = {"start_image_token": "<img>", "end_image_token": "</img>",
                   "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"}  # fmt: skip


def internvl(directory):
    tok = qwen2_tokenizer(["<|im_start|>", "<|im_end|>", *INTERNVL_TOKENS.values()],
                          named=INTERNVL_TOKENS)  # fmt: skip
    config = test_hf_internvl.hf_config("internvl3")
    config.text_config.vocab_size = len(tok) + 8
    config.image_token_id = tok.convert_tokens_to_ids("<IMG_CONTEXT>")
    images = tf.GotOcr2ImageProcessorPil(
        size={"height": test_hf_internvl.TILE, "width": test_hf_internvl.TILE},
        crop_to_patches=True, **test_hf_internvl.IMAGENET,
    )  # fmt: skip
    processor = test_hf_internvl.InternVLImageProcessor(
        image_processor=images, tokenizer=tok, chat_template=INTERNVL,
        image_seq_length=test_hf_internvl.TOKENS_PER_TILE,
    )  # fmt: skip
    return tf.InternVLForConditionalGeneration(config), processor


def paligemma(version):
    def build(directory):
        tok = gemma_tokenizer(directory)
        images = tf.SiglipImageProcessorPil(
            size={"height": 32, "width": 32}, image_seq_length=test_hf_paligemma.TOKENS_PER_IMAGE
        )
        processor = tf.PaliGemmaProcessor(image_processor=images, tokenizer=tok)  # adds <image>
        config = test_hf_paligemma.hf_config(version)
        config.text_config.vocab_size = len(tok) + 8
        config.image_token_index = tok.convert_tokens_to_ids("<image>")
        return tf.PaliGemmaForConditionalGeneration(config), processor

    return build


FAMILIES = {
    "llava15": Family(llava15, "vicuna_v1", reply_prefix=" ", system=templates.LLAVA_SYSTEM),
    "llava_next": Family(
        llava_next("llava_next", LLAVA_NEXT_MISTRAL), "mistral", reply_prefix=" ", size=64
    ),
    "llava_onevision": Family(llava_next("llava_onevision", LLAVA_ONEVISION), "chatml", size=64),
    "qwen25_vl": Family(qwen25_vl, "chatml", size=112),
    "qwen3_vl": Family(qwen3_vl, "chatml", system=None, size=128),
    "gemma3": Family(gemma3, "gemma"),
    "paligemma1": Family(paligemma("paligemma1"), "paligemma", suffix=True),
    "paligemma2": Family(paligemma("paligemma2"), "paligemma", suffix=True),
    "internvl": Family(internvl, "chatml", system=None, size=64),
}


# -- the data -------------------------------------------------------------------------------


def photographs() -> list[np.ndarray]:
    """Four real photographs (uint8 HWC): scikit-learn's two, a mirrored crop of each."""
    china, flower = vt.photos()
    return [china, flower, np.ascontiguousarray(china[50:350, ::-1]), flower[:, 60:260]]


LABELS = [0, 2, 1, 4]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A JSONL dataset spec over the photographs (PNG files)."""
    root = tmp_path_factory.mktemp("photos")
    lines = []
    for i, (photo, label) in enumerate(zip(photographs(), LABELS)):
        Image.fromarray(photo).save(root / f"{i}.png")
        lines.append(json.dumps({"image": str(root / f"{i}.png"), "label": CLASSES[label]}))
    (root / "data.jsonl").write_text("\n".join(lines) + "\n")
    return {"name": "photos", "source": "jsonl", "path": str(root / "data.jsonl"),
            "class_names": CLASSES}  # fmt: skip


# -- fgjax's evaluation ---------------------------------------------------------------------


def evaluate(family: Family, path, dataset, workdir) -> dict:
    """fgjax's likelihood and lettered multiple choice on the dataset; their per-example
    records (predictions.jsonl) by result name."""
    protocols = {
        "likelihood": {**configs.PROTOCOLS["likelihood"], "top_k": len(CLASSES),
                       "no_image_prior": False},  # the calibrations' inputs are the sums
        "multiple_choice": {**configs.PROTOCOLS["multiple_choice"], "k": len(LETTERS),
                            "answer_modes": ["letters"]},
    }  # fmt: skip
    config = configs.build(
        f"model=hf:{path},template={family.template},batch_size=4", datasets=["photos"],
        protocols=protocols,
    )  # fmt: skip
    config.datasets = [dataset]
    if family.system is not ...:
        config.system = family.system
    if family.size is not None:
        config.image_size = family.size
    runner.evaluate(config, str(workdir))  # writes workdir/photos/<result>/predictions.jsonl
    out = {}
    for result in ("likelihood", "multiple_choice_letters"):
        lines = (workdir / "photos" / result / "predictions.jsonl").read_text().splitlines()
        out[result] = [json.loads(line) for line in lines]
    return out


# -- the transformers reference -------------------------------------------------------------


def prepared(family: Family, photo) -> Image.Image:
    image = Image.fromarray(photo)
    if family.size is not None:  # the evaluation's resize (bicubic, PIL), then the processor's
        image = image.resize((family.size, family.size), Image.Resampling.BICUBIC)
    return image


def chat_prompt(family: Family, processor, question: str) -> str:
    """The chat template's generation prompt for one user turn: the image, then the text."""
    messages = []
    if family.system not in (None, ...):
        messages.append({"role": "system", "content": [{"type": "text", "text": family.system}]})
    content = [{"type": "image"}, {"type": "text", "text": question}]
    messages.append({"role": "user", "content": content})
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def model_inputs(processor, images, texts, suffixes=None) -> dict:
    """The processor's right-padded inputs for rows of (image, text[, suffix]); BOS only
    from the tokenizer or from the template, as apply_chat_template(tokenize=True) does."""
    bos = processor.tokenizer.bos_token
    processor.tokenizer.padding_side = "right"
    kwargs = {"suffix": suffixes} if suffixes is not None else {}
    out = processor(images=images, text=texts, return_tensors="pt", padding=True,
                    padding_side="right",  # InternVLProcessor's default is left
                    add_special_tokens=not (bos and texts[0].startswith(bos)), **kwargs)  # fmt: skip
    return {k: v for k, v in out.items() if k != "labels"}


def continuation_log_probs(model, family: Family, processor, image, question: str, head: str,
                           tails: list[str]) -> np.ndarray:  # fmt: skip
    """f64[len(tails)]: the summed log-probs of the tokens of each tail after the prompt of
    `question` and `head` (the answer's start), from one forward of prompt + tail per tail."""
    rows = len(tails)
    if family.suffix:  # <image>, BOS, question, "\n" as the prefix, the answer as the suffix
        text = processor.image_token + question
        prompt = model_inputs(processor, [[image]], [text], [head] if head else None)
        full = model_inputs(processor, [[image]] * rows, [text] * rows, [head + t for t in tails])
        eos = 1  # the processor ends a suffix with EOS
    else:
        text = chat_prompt(family, processor, question) + head
        prompt = model_inputs(processor, [[image]], [text])
        full = model_inputs(processor, [[image]] * rows, [text + t for t in tails])
        eos = 0
    n = prompt["input_ids"].shape[1] - (eos if head else 0)  # the prompt's tokens
    ids, lengths = full["input_ids"], full["attention_mask"].sum(1) - eos
    assert (ids[:, :n] == prompt["input_ids"][:, :n]).all(), "the prompt is not a prefix"
    if family.suffix:  # the prompt (image, question, lead-in) attends both ways
        full["token_type_ids"] = (torch.arange(ids.shape[1]) >= n).long()[None].repeat(rows, 1)
    out = np.zeros(rows)
    for length in set(lengths.tolist()):  # rows of one length together: no padding
        group = torch.nonzero(lengths == length)[:, 0]
        inputs = {}
        for key, value in full.items():
            if len(value) != rows:  # Qwen2.5-VL's pixel_values: every row's patches, stacked
                value = value[: len(group) * (len(value) // rows)]
            else:
                value = value[group]
                if value.ndim == 2 and value.shape[1] == ids.shape[1]:  # per token
                    value = value[:, :length]
            inputs[key] = value.double() if value.is_floating_point() else value
        with torch.no_grad():
            logp = torch.log_softmax(model(**inputs).logits.double(), dim=-1)
        targets = inputs["input_ids"][:, n:, None]
        out[group.numpy()] = logp[:, n - 1 : -1].gather(-1, targets)[..., 0].sum(-1).numpy()
    return out


def multiple_choice_question(options) -> str:
    lines = "\n".join(f"{letter}. {name}" for letter, name in zip(LETTERS, options))
    return MULTIPLE_CHOICE.format(question=QUESTION, options=lines)


def reference_scores(model, family, processor, option_sets, lead_in=LEAD_IN):
    """transformers' (class sums f64[N, C], letter log-probs f64[N, K], None without
    option_sets) on the photographs; option_sets: each example's option names in letter
    order."""
    classes, letters = [], []
    for i, photo in enumerate(photographs()):
        image = prepared(family, photo)
        head = family.reply_prefix + lead_in
        tails = [" " + name for name in CLASSES]
        classes.append(
            continuation_log_probs(model, family, processor, image, QUESTION, head, tails)
        )
        if option_sets is not None:
            question = multiple_choice_question(option_sets[i])
            tails = [family.reply_prefix + letter for letter in LETTERS]
            letters.append(
                continuation_log_probs(model, family, processor, image, question, "", tails)
            )
    return np.stack(classes), np.stack(letters) if letters else None


def fgjax_scores(records):
    """(class sums f64[N, C] from the likelihood records, letter log-probs f64[N, K])."""
    classes = np.asarray([[next(t["sum"] for t in r["scores"]["top"] if t["class"] == name)
                           for name in CLASSES] for r in records["likelihood"]])  # fmt: skip
    letters = np.asarray([[r["scores"]["letter_logp"][letter] for letter in LETTERS]
                          for r in records["multiple_choice_letters"]])  # fmt: skip
    return classes, letters


def max_rel_err(ours, reference) -> float:
    return float(np.max(np.abs(ours - reference) / np.abs(reference)))


def saved(family: Family, directory):
    """(the family's transformers model with random weights in float64, its processor), both
    saved to `directory` in float32."""
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model, processor = family.build(directory)
    model = ht.randomize(model)
    with torch.no_grad():  # peaked next-token distributions: scores that hang on the prompt
        model.get_output_embeddings().weight.mul_(SHARPEN)
        for key, p in model.named_parameters():
            if key.endswith(("o_proj.weight", "down_proj.weight")):
                p.mul_(SHARPEN)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return model.double(), processor


@pytest.mark.parametrize("name", list(FAMILIES))
def test_protocol_scores_equal_transformers(dataset, tmp_path, name):
    family = FAMILIES[name]
    model, processor = saved(family, tmp_path / "hf")
    records = evaluate(family, tmp_path / "hf", dataset, tmp_path / "eval")
    ours_classes, ours_letters = fgjax_scores(records)
    option_sets = [r["options"] for r in records["multiple_choice_letters"]]
    classes, letters = reference_scores(model, family, processor, option_sets)
    err_classes = max_rel_err(ours_classes, classes)
    err_letters = max_rel_err(ours_letters, letters)
    print(
        f"[parity] {name}: likelihood {err_classes:.2e}, multiple-choice letters {err_letters:.2e}"
    )
    assert err_classes <= ht.TOL and err_letters <= ht.TOL, (err_classes, err_letters)
    predicted = [CLASSES[c] for c in classes.argmax(axis=1)]
    assert [r["prediction"] for r in records["likelihood"]] == predicted
    picked = [LETTERS[j] for j in letters.argmax(axis=1)]
    assert [r["picked"] for r in records["multiple_choice_letters"]] == picked
    # negative control: the reference of another prompt
    other, _ = reference_scores(model, family, processor, None, lead_in=OTHER_LEAD_IN)
    err = max_rel_err(ours_classes, other)
    print(f"[control] {name}: lead-in {OTHER_LEAD_IN!r}: {err:.2e}")
    assert err > 10 * ht.TOL
