"""Prompt templates and conversation encoding: for every template and both tokenizer kinds the
trained tokens decode to exactly the assistant turns plus their end tokens; image tokens are
exact and never cut; prompts are prefixes of training rows; mismatches fail early."""

import numpy as np
import pytest
import transformers

from fgjax.data.conversation import ConversationEncoder, SampleError
from fgjax.data.templates import LLAVA_LLAMA2_SYSTEM, LLAVA_SYSTEM, TEMPLATES, get_template
from fgjax.data.tokenizer import HFTokenizer, add_image_token
from fgjax.data.tokenizer_train import tiny_tokenizer, train_bpe
from fgjax.models.config import DecoderConfig, VitConfig, VLMConfig

N = 5  # image tokens per image
QUESTION_1 = "What is in the photo?\n<image>"
ANSWERS = ["A small red bird on a branch.", "The left side."]
CONVERSATION = [
    {"from": "human", "value": QUESTION_1},
    {"from": "gpt", "value": ANSWERS[0]},
    {"from": "human", "value": "Which side is it on?"},
    {"from": "gpt", "value": ANSWERS[1]},
]
TEXT_ONLY = [
    {"from": "human", "value": "Say hello."},
    {"from": "gpt", "value": "Hello there!"},
    {"from": "user", "value": "Count to 3, please."},
    {"from": "assistant", "value": "1, 2, 3."},
]
# the text just before the image in the "inline" layout
IMAGE_FOLLOWS = {
    "plain": "<s>",
    "vicuna_v1": "USER: ",
    "llama2": "<</SYS>>\n\n",
    "mistral": "[INST] ",
    "chatml": "user\n",
    "gemma": "user\n",
    "paligemma": "<s>",
}


@pytest.fixture(scope="module", params=["bpe", "sentencepiece"])
def tok(request):
    return tiny_tokenizer(request.param)


def conversation_for(name, conversation):
    return conversation[:2] if get_template(name).single_turn else conversation


def trained_runs(sample):
    """Lists of token ids, one per contiguous run of trained tokens."""
    runs, current = [], []
    for token, trained in zip(sample.tokens.tolist(), sample.loss_mask.tolist()):
        if trained:
            current.append(token)
        elif current:
            runs, current = [*runs, current], []
    return runs + ([current] if current else [])


def expected_reply(tok, template, answer):
    if template.name == "plain":  # the caption starts the text: the model's own start applies
        return (" " if tok.prefix_space else "") + answer
    return template.reply_prefix + answer + template.reply_suffix


def end_id(tok, template):
    return tok.eos_id if template.end == "eos" else tok.token_to_id(template.end)


@pytest.mark.parametrize("name", sorted(TEMPLATES))
@pytest.mark.parametrize("layout", ["inline", "after_bos"])
@pytest.mark.parametrize("has_image", [True, False])
def test_trained_tokens_decode_to_the_assistant_turns(tok, name, layout, has_image):
    template = get_template(name)
    encoder = ConversationEncoder(tok, name, num_image_tokens=N, image_layout=layout)
    conversation = conversation_for(name, CONVERSATION if has_image else TEXT_ONLY)
    sample = encoder.encode(conversation, has_image=has_image)
    assert sample.tokens.dtype == np.int32 and sample.loss_mask.dtype == bool
    assert sample.tokens.shape == sample.loss_mask.shape and sample.num_images == int(has_image)
    answers = [turn["value"] for turn in conversation[1::2]]
    runs = trained_runs(sample)
    assert len(runs) == len(answers)
    for run, answer in zip(runs, answers):
        assert run[-1] == end_id(tok, template)
        assert tok.decode(run[:-1]) == expected_reply(tok, template, answer)
    is_image = sample.tokens == encoder.image_token_id
    assert is_image.sum() == (N if has_image else 0)
    assert not (is_image & sample.loss_mask).any()
    if has_image:
        start = int(np.flatnonzero(is_image)[0])
        assert is_image[start : start + N].all()  # one contiguous run
        before, after = sample.tokens[:start], sample.tokens[start + N :]
        if layout == "after_bos":
            assert start == (1 if encoder.uses_bos else 0)
            assert "<image>" not in tok.decode(after)
        else:
            assert tok.decode(before).endswith(IMAGE_FOLLOWS[name])
            if name != "plain":  # LLaVA: "<image>\n" + the turn's text without the placeholder
                text = tok.decode(after)
                if name == "paligemma" and tok.prefix_space:  # the text starts after the image
                    text = text.removeprefix(" ")
                assert text.startswith("\nWhat is in the photo?")


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_prompt_is_a_prefix_of_the_training_row(tok, name):
    encoder = ConversationEncoder(tok, name, num_image_tokens=N)
    template = get_template(name)
    conversation = conversation_for(name, CONVERSATION)
    full = encoder.encode(conversation, has_image=True).tokens
    first_reply = int(np.argmax(encoder.encode(conversation, has_image=True).loss_mask))
    prompt = encoder.encode_prompt(conversation[:1], has_image=True)
    assert prompt.dtype == np.int32 and np.array_equal(prompt, full[: len(prompt)])
    assert len(prompt) == first_reply
    lead = encoder.encode_prompt(conversation[:1], has_image=True, lead_in="The photo features a")
    assert np.array_equal(lead[: len(prompt)], prompt)
    expected = expected_reply(tok, template, "The photo features a").rstrip(" ")
    assert tok.decode(lead[len(prompt) :]).rstrip(" ") == expected.rstrip(" ")
    if not template.single_turn:  # multi-turn history, then the new question
        history = encoder.encode_prompt(conversation[:3], has_image=True)
        assert np.array_equal(history, full[: len(history)])
        assert history.size < full.size and full[len(history)] != end_id(tok, template)


@pytest.mark.parametrize("name", ["vicuna_v1", "llama2", "mistral", "chatml", "gemma"])
def test_span_tokens_equal_transformers_tokenizing_the_whole_string(tok, name, tmp_path):
    """Per-span tokenization reproduces what transformers gives for the rendered prompt string
    (text-only rows; the image placeholder has no string form in the model)."""
    tok.save(str(tmp_path))
    if isinstance(tok, HFTokenizer):
        hf = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"))
    else:
        hf = transformers.LlamaTokenizer.from_pretrained(str(tmp_path), legacy=False)
    encoder = ConversationEncoder(tok, name, num_image_tokens=N)
    tokens = encoder.encode(TEXT_ONLY, has_image=False).tokens.tolist()
    assert hf(tok.decode(tokens), add_special_tokens=False).input_ids == tokens


def test_truncation_keeps_image_tokens_and_never_empties_the_mask(tok):
    encoder = ConversationEncoder(tok, "vicuna_v1", num_image_tokens=N)
    full = encoder.encode(CONVERSATION, has_image=True)
    first_reply = int(np.argmax(full.loss_mask))
    for length in (first_reply + 1, first_reply + 4, len(full.tokens) - 1):
        cut = ConversationEncoder(tok, "vicuna_v1", num_image_tokens=N, max_length=length)
        sample = cut.encode(CONVERSATION, has_image=True)
        assert len(sample.tokens) == length and sample.loss_mask.any()
        assert np.array_equal(sample.tokens, full.tokens[:length])
        assert (sample.tokens == cut.image_token_id).sum() == N
    short = ConversationEncoder(tok, "vicuna_v1", num_image_tokens=N, max_length=first_reply)
    with pytest.raises(SampleError, match="first reply starts after max_length"):
        short.encode(CONVERSATION, has_image=True)
    image_start = int(np.argmax(full.tokens == encoder.image_token_id))
    tiny = ConversationEncoder(
        tok, "vicuna_v1", num_image_tokens=N, max_length=max(image_start + 2, N + 2)
    )
    with pytest.raises(SampleError, match="image tokens end at"):
        tiny.encode(CONVERSATION, has_image=True)


@pytest.mark.parametrize(
    "conversation, has_image, message",
    [
        ([], False, "non-empty list"),
        ([{"from": "gpt", "value": "hi"}], False, "turn 0 is from 'gpt'"),
        ([{"from": "human", "value": "a"}, {"from": "human", "value": "b"}], False, "alternate"),
        ([{"from": "human", "value": 3}], False, "malformed turn"),
        ([{"from": "human", "value": "hi"}], False, "no assistant turn"),
        (CONVERSATION, False, "row has no image"),
        ([{"from": "human", "value": "<image><image>"}, CONVERSATION[1]], True, "2 <image>"),
        ([CONVERSATION[0], {"from": "gpt", "value": "<image>"}], True, "reply 1 holds"),
    ],
)
def test_malformed_conversations_raise_sample_errors(conversation, has_image, message):
    encoder = ConversationEncoder(tiny_tokenizer("bpe"), "vicuna_v1", num_image_tokens=N)
    with pytest.raises(SampleError, match=message):
        encoder.encode(conversation, has_image=has_image)


def test_system_turn_and_missing_placeholder(tok):
    encoder = ConversationEncoder(tok, "vicuna_v1", num_image_tokens=N)
    system = [{"from": "system", "value": "Be brief."}, *TEXT_ONLY]
    text = tok.decode(encoder.encode(system, has_image=False).tokens)
    assert text.startswith("<s>") and "Be brief. USER: Say hello." in text
    no_placeholder = [{"from": "human", "value": "Describe it."}, CONVERSATION[1]]
    sample = encoder.encode(no_placeholder, has_image=True)  # image goes first in turn 0
    assert "USER: " + "<image>" * N + "\nDescribe it." in tok.decode(sample.tokens)
    plain = ConversationEncoder(tok, "plain", num_image_tokens=N)
    with pytest.raises(SampleError, match="one human and one gpt turn"):
        plain.encode(CONVERSATION, has_image=True)
    bare = get_template("vicuna_v1").with_system(None)
    sample = ConversationEncoder(tok, bare, num_image_tokens=N).encode(TEXT_ONLY, has_image=False)
    assert tok.decode(sample.tokens).startswith("<s>" + (" " if tok.prefix_space else "") + "USER")


def test_plain_captions_need_no_bos():
    no_bos = train_bpe(["a dog on the grass"] * 8, 300, bos_token=None)
    add_image_token(no_bos)
    encoder = ConversationEncoder(no_bos, "plain", num_image_tokens=N)
    sample = encoder.encode(conversation_for("plain", CONVERSATION), has_image=True)
    assert not encoder.uses_bos and (sample.tokens[:N] == encoder.image_token_id).all()
    assert no_bos.decode(sample.tokens[N:]) == ANSWERS[0] + "</s>"
    with pytest.raises(ValueError, match="starts with BOS but"):
        ConversationEncoder(no_bos, "vicuna_v1", num_image_tokens=N)


def test_tokenizer_template_mismatch_fails_at_construction():
    plain_bpe = train_bpe(["USER: hi ASSISTANT: hello"] * 8, 300)
    with pytest.raises(ValueError, match="add_image_token"):
        ConversationEncoder(plain_bpe, "vicuna_v1", num_image_tokens=N)
    tok = tiny_tokenizer("bpe")
    no_chat = train_bpe(["x"] * 8, 300)
    no_chat.add_special_tokens(["<image>"])
    with pytest.raises(ValueError, match="needs the token '<\\|im_start\\|>'"):
        ConversationEncoder(no_chat, "chatml", num_image_tokens=N)
    no_eos = train_bpe(["x"] * 8, 300, eos_token="</s>")
    no_eos.add_special_tokens(["<image>"])
    no_eos.eos_token = None
    with pytest.raises(ValueError, match="ends replies with EOS"):
        ConversationEncoder(no_eos, "vicuna_v1", num_image_tokens=N)
    mistral_v3 = tiny_tokenizer("bpe")
    mistral_v3.add_special_tokens(["[INST]", "[/INST]"])
    with pytest.raises(ValueError, match="'\\[INST\\]' as a special token"):
        ConversationEncoder(mistral_v3, "mistral", num_image_tokens=N)
    with pytest.raises(ValueError, match="unknown prompt template 'alpaca'.*chatml"):
        ConversationEncoder(tok, "alpaca", num_image_tokens=N)
    with pytest.raises(ValueError, match="image_layout"):
        ConversationEncoder(tok, "chatml", num_image_tokens=N, image_layout="prefix")
    with pytest.raises(ValueError, match="leaves no room"):
        ConversationEncoder(tok, "chatml", num_image_tokens=N, max_length=N)


def test_encoder_checks_the_model_config(tok):
    image_id = tok.token_to_id("<image>")
    vit = VitConfig(image_size=16, patch_size=8)  # 4 image tokens
    cfg = VLMConfig(
        encoder=vit, decoder=DecoderConfig(vocab_size=tok.vocab_size), image_token_id=image_id
    )
    encoder = ConversationEncoder.for_model(tok, "vicuna_v1", cfg)
    assert encoder.num_image_tokens == 4
    sample = encoder.encode(CONVERSATION, has_image=True)
    assert (sample.tokens == cfg.image_token_id).sum() == cfg.num_image_tokens
    small = VLMConfig(encoder=vit, decoder=DecoderConfig(vocab_size=image_id + 1))
    with pytest.raises(ValueError, match="image_token_id=255.*vocab_size=.* is smaller"):
        ConversationEncoder.for_model(tok, "vicuna_v1", small)


GOLDEN = {  # the chat formats of the model families, written out (tiny tokenizer: BOS is <s>)
    "plain": "<s>Hello there!</s>",
    "vicuna_v1": f"<s>{LLAVA_SYSTEM} USER: Say hello. ASSISTANT: Hello there!</s>"
    "USER: Count to 3, please. ASSISTANT: 1, 2, 3.</s>",
    "llama2": f"<s>[INST] <<SYS>>\n{LLAVA_LLAMA2_SYSTEM}\n<</SYS>>\n\nSay hello. [/INST] Hello "
    "there! </s><s>[INST] Count to 3, please. [/INST] 1, 2, 3. </s>",
    "mistral": "<s>[INST] Say hello. [/INST] Hello there!</s>"
    "[INST] Count to 3, please. [/INST] 1, 2, 3.</s>",
    "chatml": "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\nSay hello.<|im_end|>\n<|im_start|>assistant\nHello there!<|im_end|>\n"
    "<|im_start|>user\nCount to 3, please.<|im_end|>\n<|im_start|>assistant\n1, 2, 3.<|im_end|>",
    "gemma": "<s><start_of_turn>user\nSay hello.<end_of_turn>\n<start_of_turn>model\n"
    "Hello there!<end_of_turn>\n<start_of_turn>user\nCount to 3, please.<end_of_turn>\n"
    "<start_of_turn>model\n1, 2, 3.<end_of_turn>",
    "paligemma": "<s>Say hello.\nHello there!</s>",
}


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_rendered_conversation_matches_the_model_familys_format(name):
    tok = tiny_tokenizer("bpe")  # no prefix space: the decoded text is the rendered string
    encoder = ConversationEncoder(tok, name, num_image_tokens=N)
    sample = encoder.encode(conversation_for(name, TEXT_ONLY), has_image=False)
    assert tok.decode(sample.tokens) == GOLDEN[name]
