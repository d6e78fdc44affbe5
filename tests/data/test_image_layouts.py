"""The Gemma 3 and PaliGemma prompt layouts: fgjax's span-by-span token ids equal what
transformers' tokenizer gives for the strings those models' processors build, and the
encoders check their image-token ids against the model config."""

import dataclasses

import numpy as np
import pytest
import transformers

from fgjax.data.conversation import GEMMA3_IMAGE_TOKENS, ConversationEncoder
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
