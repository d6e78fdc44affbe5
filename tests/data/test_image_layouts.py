"""The Gemma 3, PaliGemma, Qwen2.5-VL and InternVL prompt layouts: fgjax's span-by-span token ids equal
what transformers' tokenizer gives for the strings those models' processors build, and the
encoders check their image-token ids against the model config."""

import dataclasses

import numpy as np
import pytest
import transformers

from fgjax.data.conversation import (
    GEMMA3_IMAGE_TOKENS,
    INTERNVL_IMAGE_TOKENS,
    QWEN_VL_IMAGE_TOKENS,
    ConversationEncoder,
)
from fgjax.data.templates import get_template
from fgjax.data.tokenizer_train import tiny_tokenizer
from fgjax.models import presets

N = 4  # image tokens per image
QUESTION = [{"from": "human", "value": "<image>What is in the photo?"}]
ANSWER = {"from": "gpt", "value": "A small red bird."}


@pytest.fixture()
def tok():
    tokenizer = tiny_tokenizer("bpe")  # no prefix space: ids are the strings' own
    tokenizer.add_special_tokens(list(GEMMA3_IMAGE_TOKENS))
    return tokenizer


def hf_ids(tok, text, tmp_path) -> list[int]:
    """transformers' ids for `text` (special tokens split out, nothing added)."""
    tok.save(str(tmp_path))
    hf = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"))
    return hf(text, add_special_tokens=False).input_ids


def test_gemma3_layout_is_gemma3s_chat_template_expanded_by_its_processor(tok, tmp_path):
    """Gemma 3's chat template writes <start_of_image> where the image goes; Gemma3Processor
    replaces it by "\\n\\n<start_of_image>" + N x <image_soft_token> + "<end_of_image>\\n\\n"."""
    begin, image, end = GEMMA3_IMAGE_TOKENS
    encoder = ConversationEncoder(tok, "gemma", num_image_tokens=N, image_layout="gemma3")
    prompt = encoder.encode_prompt(QUESTION, has_image=True)
    expanded = f"\n\n{begin}{image * N}{end}\n\n"
    text = (
        f"<s><start_of_turn>user\n{expanded}What is in the photo?<end_of_turn>\n"
        "<start_of_turn>model\n"
    )
    assert prompt.tolist() == hf_ids(tok, text, tmp_path)
    assert encoder.image_token_id == tok.token_to_id(image)
    sample = encoder.encode([*QUESTION, ANSWER], has_image=True)
    assert np.array_equal(sample.tokens[: len(prompt)], prompt)
    assert tok.decode(sample.tokens[sample.loss_mask]) == "A small red bird.<end_of_turn>"


def test_gemma3_encoder_checks_the_models_image_ids(tok):
    begin, image, end = (tok.token_to_id(t) for t in GEMMA3_IMAGE_TOKENS)
    cfg = dataclasses.replace(
        presets.gemma3_vlm(), image_token_id=image, image_boundary_ids=(begin, end)
    )
    cfg = dataclasses.replace(cfg, projector=dataclasses.replace(cfg.projector, tokens=N))
    ConversationEncoder.for_model(tok, "gemma", cfg)
    wrong = dataclasses.replace(cfg, image_boundary_ids=(end, begin))
    with pytest.raises(ValueError, match="image_boundary_ids"):
        ConversationEncoder.for_model(tok, "gemma", wrong)


def test_paligemma_layout_is_paligemmas_processor(tok, tmp_path):
    """PaliGemmaProcessor: N x <image>, BOS, the prompt, "\\n"; the answer then EOS is the
    causal suffix (the only trained tokens)."""
    encoder = ConversationEncoder(tok, "paligemma", num_image_tokens=N, image_layout="before_bos")
    prompt = encoder.encode_prompt(QUESTION, has_image=True)
    assert prompt.tolist() == hf_ids(tok, "<image>" * N + "<s>What is in the photo?\n", tmp_path)
    sample = encoder.encode([*QUESTION, ANSWER], has_image=True)
    assert np.array_equal(sample.tokens[: len(prompt)], prompt)
    assert tok.decode(sample.tokens[sample.loss_mask]) == "A small red bird.</s>"
    assert not sample.loss_mask[: len(prompt)].any()


# Qwen/Qwen2.5-VL-7B-Instruct's chat_template, as published (images and text only)
QWEN25_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\n"
    "You are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_qwen_vl_layout_is_qwen25_vls_chat_template_expanded_by_its_processor(tok, tmp_path):
    """Qwen2.5-VL's chat template writes <|vision_start|><|image_pad|><|vision_end|> before
    the turn's text; Qwen2_5_VLProcessor repeats <|image_pad|> once per merged image token.
    fgjax's ChatML prompt and training sample are that string's ids (the sample without the
    template's "\\n" after the last <|im_end|>, which no loss reads); only the reply and its
    <|im_end|> train."""
    tok.add_special_tokens(list(QWEN_VL_IMAGE_TOKENS))
    encoder = ConversationEncoder(tok, "chatml", num_image_tokens=N, image_layout="qwen_vl")
    question = [{"from": "human", "value": "<image>\nWhat is in the photo?"}]
    tok.save(str(tmp_path))
    hf = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"))
    messages = [{"role": "user", "content": [{"type": "image"},
                                             {"type": "text", "text": "What is in the photo?"}]}]  # fmt: skip

    def hf_ids(messages, **kwargs):
        text = hf.apply_chat_template(
            messages, chat_template=QWEN25_VL_CHAT_TEMPLATE, tokenize=False, **kwargs
        )
        expanded = text.replace("<|image_pad|>", "<|image_pad|>" * N)
        return hf(expanded, add_special_tokens=False).input_ids

    prompt = encoder.encode_prompt(question, has_image=True)
    assert prompt.tolist() == hf_ids(messages, add_generation_prompt=True)
    assert encoder.image_token_id == tok.token_to_id("<|image_pad|>")
    sample = encoder.encode([*question, ANSWER], has_image=True)
    reply = {"role": "assistant", "content": [{"type": "text", "text": ANSWER["value"]}]}
    assert sample.tokens.tolist() + tok.encode_continuation("\n") == hf_ids([*messages, reply])
    assert tok.decode(sample.tokens[sample.loss_mask]) == "A small red bird.<|im_end|>"


# OpenGVLab/InternVL3-1B-hf's chat_template, as published (images and text)
INTERNVL_CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n'}}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}{% if content['type'] == 'image' %}"
    "{{ '<IMG_CONTEXT>\n' }}{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{'<|im_end|>\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{'<|im_start|>assistant\n' }}{% endif %}"
)


@pytest.mark.parametrize("text", ["What is in the photo?", ""])
def test_internvl_layout_is_internvls_chat_template_expanded_by_its_processor(tok, tmp_path, text):
    """InternVL's chat template writes <IMG_CONTEXT>\\n before the turn's text (also when there
    is none); InternVLProcessor replaces <IMG_CONTEXT> by <img>, tiles x N <IMG_CONTEXT>,
    </img>. fgjax's ChatML prompt without a system message and its training sample are that
    string's ids; only the reply and its <|im_end|> train. The model config does not name
    <img> and </img> (the tokenizer does): for_model checks the image id and count only."""
    tok.add_special_tokens(list(INTERNVL_IMAGE_TOKENS))
    tiles = 3
    template = get_template("chatml").with_system(None)
    encoder = ConversationEncoder(
        tok, template, num_image_tokens=tiles * N, image_layout="internvl"
    )
    question = [{"from": "human", "value": f"<image>\n{text}"}]
    tok.save(str(tmp_path))
    hf = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"))
    content = [{"type": "image"}, *([{"type": "text", "text": text}] if text else [])]
    messages = [{"role": "user", "content": content}]

    def hf_ids(messages, **kwargs):
        rendered = hf.apply_chat_template(
            messages, chat_template=INTERNVL_CHAT_TEMPLATE, tokenize=False, **kwargs
        )
        expanded = rendered.replace(
            "<IMG_CONTEXT>", "<img>" + "<IMG_CONTEXT>" * tiles * N + "</img>"
        )
        return hf(expanded, add_special_tokens=False).input_ids

    prompt = encoder.encode_prompt(question, has_image=True)
    assert prompt.tolist() == hf_ids(messages, add_generation_prompt=True)
    assert encoder.image_token_id == tok.token_to_id("<IMG_CONTEXT>")
    sample = encoder.encode([*question, ANSWER], has_image=True)
    reply = {"role": "assistant", "content": [{"type": "text", "text": ANSWER["value"]}]}
    assert sample.tokens.tolist() + tok.encode_continuation("\n") == hf_ids([*messages, reply])
    assert tok.decode(sample.tokens[sample.loss_mask]) == "A small red bird.<|im_end|>"
    cfg = presets.tiny_internvl()
    cfg = dataclasses.replace(
        cfg, image_token_id=tok.token_to_id("<IMG_CONTEXT>"),
        decoder=dataclasses.replace(cfg.decoder, vocab_size=tok.vocab_size),
    )  # fmt: skip
    ConversationEncoder.for_model(tok, template, cfg)  # one tile: N tokens
    with pytest.raises(ValueError, match="image tokens"):
        encoder.check_model(cfg)  # three tiles' tokens in the prompt, one tile's in the model
