"""Tokenizer wrappers: exact continuation round trips, special tokens, saving, and parity with
the tokenizers transformers builds from the same files."""

import io
import json
import pickle

import cloudpickle
import pytest
import transformers
from sentencepiece import SentencePieceTrainer

from fgjax.data.tokenizer import (
    HFTokenizer,
    SentencePieceTokenizer,
    add_image_token,
    load_tokenizer,
)
from fgjax.data.tokenizer_train import (
    CHAT_SPECIAL_TOKENS,
    tiny_tokenizer,
    train_bpe,
    train_sentencepiece,
)

KINDS = ("bpe", "sentencepiece")
TEXTS = [
    "hello world",
    " leading space",
    "two  spaces and a\nnewline\n",
    "  ",
    "unicode: café, 日本語, 🙂",
    "digits 12345 and punctuation!?",
    "",
]
SPECIALS = ["<s>", "</s>", "<image>", "<pad>", *CHAT_SPECIAL_TOKENS]


@pytest.fixture(params=KINDS)
def tok(request):
    return tiny_tokenizer(request.param)


def test_continuation_round_trips_exactly(tok):
    for text in TEXTS:
        assert tok.decode(tok.encode_continuation(text)) == text


def test_encode_adds_the_models_own_start(tok):
    for text in TEXTS[:3]:
        expected = tok.encode_continuation((" " if tok.prefix_space else "") + text)
        assert tok.encode(text) == expected
        assert tok.encode(text, add_bos=True) == [tok.bos_id, *expected]
    assert tok.prefix_space == isinstance(tok, SentencePieceTokenizer)  # Llama-style "▁"


def test_special_tokens_never_come_from_text(tok):
    ids = {tok.token_to_id(t) for t in SPECIALS}
    assert None not in ids and all(tok.is_special(i) for i in ids)
    text = "a " + " b ".join(SPECIALS) + " c"
    assert not ids & set(tok.encode(text)) and not ids & set(tok.encode_continuation(text))
    assert tok.decode(tok.encode_continuation(text)) == text
    for token in SPECIALS:  # a special id decodes to its string, in one piece
        assert tok.decode([tok.token_to_id(token)]) == token
    assert not tok.is_special(tok.encode_continuation("hello")[0])


def test_image_and_pad_are_appended_like_llava():
    for kind in KINDS:
        trainer = train_bpe if kind == "bpe" else train_sentencepiece
        tok = trainer(["some text to learn from"] * 8, 300)
        size = tok.vocab_size
        assert tok.pad_token is None
        assert add_image_token(tok) == size
        assert (tok.pad_id, tok.pad_token, tok.vocab_size) == (size + 1, "<pad>", size + 2)
        assert add_image_token(tok) == size and tok.vocab_size == size + 2  # idempotent


def test_save_and_load_keep_ids_and_roles(tok, tmp_path):
    tok.save(str(tmp_path))
    loaded = load_tokenizer(str(tmp_path))
    assert type(loaded) is type(tok) and loaded.vocab_size == tok.vocab_size
    for role in ("bos_token", "eos_token", "pad_token", "unk_token"):
        assert getattr(loaded, role) == getattr(tok, role)
    for text in TEXTS:
        assert loaded.encode(text) == tok.encode(text)
        assert loaded.encode_continuation(text) == tok.encode_continuation(text)
    assert loaded.token_to_id("<image>") == tok.token_to_id("<image>")
    assert load_tokenizer(str(tmp_path), pad_token=None).pad_token is None


def test_a_pickled_copy_encodes_alike(tok):
    """Grain worker processes (data.worker_processes) get the tokenizer pickled: special
    strings in text stay text there too."""
    copy = pickle.loads(cloudpickle.dumps(tok))
    text = "a " + " b ".join(SPECIALS) + " c"
    for sample in [*TEXTS, text]:
        assert copy.encode(sample, add_bos=True) == tok.encode(sample, add_bos=True)
        assert copy.encode_continuation(sample) == tok.encode_continuation(sample)
    assert copy.decode(copy.encode_continuation(text)) == text
    assert copy.token_to_id("<image>") == tok.token_to_id("<image>")


def test_bpe_matches_transformers_fast_tokenizer(tmp_path):
    tok = tiny_tokenizer("bpe")
    tok.save(str(tmp_path))
    hf = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"))
    for text in TEXTS:
        assert hf(text, add_special_tokens=False).input_ids == tok.encode(text)
    assert hf.convert_tokens_to_ids("<image>") == tok.token_to_id("<image>")


def test_sentencepiece_matches_transformers_llama_tokenizer(tmp_path):
    """transformers converts the same sentencepiece model into a Llama tokenizer.json
    (Metaspace prepend + Strip decoder); our HFTokenizer on that file, our sentencepiece
    wrapper and transformers must all agree, for starts and continuations."""
    sp = tiny_tokenizer("sentencepiece")
    sp.save(str(tmp_path / "sp"))
    llama = transformers.LlamaTokenizer.from_pretrained(str(tmp_path / "sp"), legacy=False)
    llama.save_pretrained(str(tmp_path / "fast"))
    spec = json.loads((tmp_path / "fast" / "tokenizer.json").read_text())
    assert spec["pre_tokenizer"]["type"] == "Metaspace"  # the pipeline we must undo
    fast = load_tokenizer(str(tmp_path / "fast" / "tokenizer.json"))
    assert isinstance(fast, HFTokenizer) and fast.prefix_space
    assert (fast.bos_id, fast.eos_id) == (sp.bos_id, sp.eos_id)
    for text in TEXTS:
        assert sp.encode_continuation(text) == fast.encode_continuation(text)
        assert fast.decode(fast.encode_continuation(text)) == text
        if text[:1].isspace() or not text:
            continue  # sentencepiece prepends "▁" to " x" too, HF's Metaspace does not
        assert sp.encode(text) == fast.encode(text)
        assert llama(text, add_special_tokens=False).input_ids == sp.encode(text)


def test_older_prefix_space_pipelines(tmp_path):
    """Llama-2's hub tokenizer.json prepends with a Prepend("▁") normalizer (no
    pre-tokenizer); RoBERTa-style ones with ByteLevel(add_prefix_space=True). Both are
    undone for continuations and kept for starts."""
    sp = tiny_tokenizer("sentencepiece")
    sp.save(str(tmp_path / "sp"))
    llama = transformers.LlamaTokenizer.from_pretrained(str(tmp_path / "sp"), legacy=False)
    spec = json.loads(llama.backend_tokenizer.to_str())
    spec["pre_tokenizer"] = None
    spec["normalizer"] = {
        "type": "Sequence",
        "normalizers": [
            {"type": "Prepend", "prepend": "▁"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "▁"},
        ],
    }
    legacy = HFTokenizer(json.dumps(spec), bos_token="<s>", eos_token="</s>")
    assert legacy.prefix_space
    for text in TEXTS[:3] + TEXTS[4:6]:
        assert legacy.encode(text) == sp.encode(text)
        assert legacy.encode_continuation(text) == sp.encode_continuation(text)
        assert legacy.decode(legacy.encode_continuation(text)) == text
    bpe = tiny_tokenizer("bpe")
    bpe.save(str(tmp_path / "bpe"))
    spec = json.loads((tmp_path / "bpe" / "tokenizer.json").read_text())
    spec["pre_tokenizer"]["add_prefix_space"] = True
    spaced = HFTokenizer(json.dumps(spec))
    assert spaced.prefix_space and not bpe.prefix_space
    assert spaced.encode("hello") == bpe.encode_continuation(" hello")
    assert spaced.encode_continuation("hello") == bpe.encode_continuation("hello")


def test_user_defined_piece_becomes_special():
    model = io.BytesIO()  # a model with a USER_DEFINED piece, which sentencepiece matches in text
    SentencePieceTrainer.train(
        sentence_iterator=iter(["a <mark> b"] * 20),
        model_writer=model,
        vocab_size=300,
        user_defined_symbols=["<mark>"],
        byte_fallback=True,
        minloglevel=2,
        hard_vocab_limit=False,
    )
    tok = SentencePieceTokenizer(model.getvalue())
    mark = tok.token_to_id("<mark>")
    assert mark in tok.encode_continuation("x<mark>") and not tok.is_special(mark)
    assert tok.add_special_tokens(["<mark>"]) == [mark]  # same id, now never from text
    assert tok.is_special(mark) and mark not in tok.encode_continuation("x<mark>")


def test_errors_name_the_problem(tmp_path):
    tok = tiny_tokenizer("bpe")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([tok.vocab_size])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tiny_tokenizer("sentencepiece").decode([10**6])
    tok.eos_token = "<nope>"
    with pytest.raises(ValueError, match="eos_token='<nope>' is not in the vocabulary"):
        _ = tok.eos_id
    with pytest.raises(ValueError, match="has no bos_token"):
        train_bpe(["x"] * 4, 300, bos_token=None).encode("x", add_bos=True)
    with pytest.raises(FileNotFoundError, match="no tokenizer.json or tokenizer.model"):
        load_tokenizer(str(tmp_path))
    with pytest.raises(ValueError, match="kind='wordpiece'"):
        tiny_tokenizer("wordpiece")
