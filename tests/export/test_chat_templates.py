"""The exported tokenizer and chat template, loaded by transformers' AutoTokenizer, render
every fgjax prompt template exactly and tokenize the result to the ids fgjax trains on: for
generation prompts and whole conversations, with and without an image or a system message,
for a byte-level BPE tokenizer.json and a sentencepiece model (where transformers adds BOS)."""

from __future__ import annotations

import pytest
import transformers as tf

from fgjax.data.conversation import ConversationEncoder
from fgjax.data.templates import TEMPLATES, get_template
from fgjax.data.tokenizer_train import tiny_tokenizer
from fgjax.hf import processor_files

IMAGE_TOKENS = 3
CONVERSATIONS = {
    "image": [{"from": "human", "value": "<image>\nWhat is it?"}],
    "image_mid_text": [
        {"from": "human", "value": "What <image> is it? "},
        {"from": "gpt", "value": "A bird."},
        {"from": "human", "value": "Colour?"},
    ],
    "system_text_only": [
        {"from": "system", "value": "Be short."},
        {"from": "human", "value": "Hi there"},
        {"from": "gpt", "value": "Hello."},
        {"from": "human", "value": "And now?"},
    ],
    "image_second_turn": [
        {"from": "human", "value": "Hi"},
        {"from": "gpt", "value": "Hello."},
        {"from": "human", "value": "<image>Describe."},
    ],
}


def hf_messages(conversation) -> list[dict]:
    """The conversation as transformers messages, the image as an {"type": "image"} item."""
    roles = {"human": "user", "gpt": "assistant", "system": "system"}
    out = []
    for turn in conversation:
        text = turn["value"]
        if "<image>" in text:
            content = [{"type": "image"}, {"type": "text", "text": text.replace("<image>", "")}]
            out.append({"role": roles[turn["from"]], "content": content})
        else:
            out.append({"role": roles[turn["from"]], "content": text})
    return out


@pytest.fixture(scope="module")
def tokenizers():
    return {kind: tiny_tokenizer(kind, 400) for kind in ("bpe", "sentencepiece")}


def exported(tokenizer, template, directory):
    processor_files.write_tokenizer(tokenizer, str(directory), template=template, max_length=512)
    return tf.AutoTokenizer.from_pretrained(directory)


@pytest.mark.parametrize("kind", ["bpe", "sentencepiece"])
def test_chat_templates(tokenizers, tmp_path, kind):
    tokenizer = tokenizers[kind]
    checked = 0
    for template in TEMPLATES:
        if kind == "sentencepiece" and template not in ("vicuna_v1", "llama2", "chatml"):
            continue
        hf = exported(tokenizer, template, tmp_path / template)
        encoder = ConversationEncoder(tokenizer, template, num_image_tokens=IMAGE_TOKENS)
        for name, conversation in CONVERSATIONS.items():
            if get_template(template).single_turn and len(conversation) > 1:
                continue  # captions, PaliGemma: one human turn
            has_image = any("<image>" in turn["value"] for turn in conversation)
            prompt = encoder.encode_prompt(conversation, has_image=has_image).tolist()
            full = conversation + [{"from": "gpt", "value": "A red one."}]
            whole = encoder.encode(full, has_image=has_image).tokens.tolist()
            for ids, messages, generation in ((prompt, conversation, True), (whole, full, False)):
                text = hf.apply_chat_template(
                    hf_messages(messages), tokenize=False, add_generation_prompt=generation
                )
                label = f"{kind} {template} {name} generation={generation}"
                want = tokenizer.decode(ids).replace("<image>" * IMAGE_TOKENS, "<image>")
                if hf.bos_token and hf("a").input_ids[0] == hf.bos_token_id:
                    want = want.removeprefix(hf.bos_token)  # the tokenizer adds it
                    if tokenizer.prefix_space:  # and its "▁" prefix, which fgjax decodes
                        want = want.removeprefix(" ")
                assert text == want, label
                expanded = text.replace("<image>", "<image>" * IMAGE_TOKENS)
                assert hf(expanded).input_ids == ids, label
                checked += 1
    assert checked == (44 if kind == "bpe" else 24)
