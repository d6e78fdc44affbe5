"""HF CLIP and SigLIP dual encoders (CLIPModel, SiglipModel) loaded whole as fgjax
ContrastiveModels (`fgjax.hf.load(path, dual_encoder=True)`): image embeddings, text
embeddings and the image-text logits at parity with transformers on real photographs through
each family's own image processor; prompts tokenized as each family's HF tokenizer does; and
an "hf:DIR" zero-shot reference of the comparison job, scored end to end."""

import collections
import dataclasses
import json

import hf_testing as ht
import jax
import ml_collections
import numpy as np
import pytest
import torch
import transformers as tf
from flax import nnx
from PIL import Image
from sklearn.datasets import load_sample_images
from tokenizers import pre_tokenizers as pre

import fgjax.hf
from fgjax.data.tokenizer import load_tokenizer, text_tower_ids
from fgjax.data.tokenizer_train import train_sentencepiece
from fgjax.evaluate import compare, datasets, loading, negatives

VIT = ht.VISION  # 32 px, patch 8
TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=16)  # fmt: skip
LENGTH = TEXT["max_position_embeddings"]
CORPUS = [
    "a photo of a temple.", "a photo of a flower.", "a photo of the sky.", "a photo of a leaf.",
    "A red flower with yellow petals on a green stem, in bright sunlight.",
    "An old temple with a tiled roof between trees, under a blue sky with clouds.",
    "The quick brown fox jumps over the lazy dog, 0123456789 times!",
] * 4  # fmt: skip
CLASSES = ("temple", "sky", "flower", "leaf")
PROMPT = "a photo of a {}."


def clip_tokenizer(directory) -> tf.CLIPTokenizer:
    """A CLIPTokenizer (byte-level BPE with "</w>" word ends, lower case) learned on CORPUS
    as CLIP's pipeline splits it: <|startoftext|> = 0, <|endoftext|> = 1, then the byte
    symbols, then up to 150 merges. Learned here, greedily with ties broken by the pair's text,
    because the tokenizers trainer breaks ties differently from run to run."""
    base = tf.CLIPTokenizer().backend_tokenizer
    words = collections.Counter(
        word for text in CORPUS
        for word, _ in base.pre_tokenizer.pre_tokenize_str(base.normalizer.normalize_str(text))
    )  # fmt: skip
    pieces = {word: [*word[:-1], word[-1] + "</w>"] for word in words}
    merges = []
    for _ in range(150):
        pairs = collections.Counter()
        for word, seq in pieces.items():
            for pair in zip(seq, seq[1:]):
                pairs[pair] += words[word]
        if not pairs:  # every word is one piece
            break
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        merges.append(best)
        for word, seq in pieces.items():
            merged = []
            for piece in seq:
                if merged and (merged[-1], piece) == best:
                    merged[-1] += piece
                else:
                    merged.append(piece)
            pieces[word] = merged
    alphabet = sorted(pre.ByteLevel.alphabet())
    names = ["<|startoftext|>", "<|endoftext|>", *alphabet, *[a + "</w>" for a in alphabet]]
    names += list(dict.fromkeys(a + b for a, b in merges))
    tokenizer = tf.CLIPTokenizer(vocab={n: i for i, n in enumerate(names)}, merges=merges)
    tokenizer.save_pretrained(directory)
    return tokenizer


def siglip_tokenizer(directory, tmp) -> tf.SiglipTokenizer:
    """A SiglipTokenizer over a sentencepiece model trained on CORPUS (<unk> = 0, </s> = 2:
    EOS and pad), inputs as the published checkpoints' tokenizer_config.json lists them (no
    attention mask)."""
    model = tmp / "spiece.model"
    model.write_bytes(train_sentencepiece(CORPUS, 400)._proto.SerializeToString())
    tokenizer = tf.SiglipTokenizer(vocab_file=str(model), model_input_names=["input_ids"])
    tokenizer.save_pretrained(directory)
    return tokenizer


def hf_model(name: str, vocab_size: int):
    text = {**TEXT, "vocab_size": vocab_size}
    if name == "siglip":
        text |= dict(bos_token_id=None, eos_token_id=2, pad_token_id=2)
        return tf.SiglipModel(tf.SiglipConfig(vision_config=VIT, text_config=text))
    # "clip": a current config (pooled at the first eos_token_id); "clip_legacy": the
    # eos_token_id=2 of configs written before transformers 4.31 (pooled at the highest id)
    eos = 2 if name == "clip_legacy" else 1
    text |= dict(bos_token_id=0, eos_token_id=eos, pad_token_id=1)
    return tf.CLIPModel(tf.CLIPConfig(vision_config=VIT, text_config=text, projection_dim=24))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """saved(name) -> (transformers model with random weights, its directory holding the
    family's tokenizer too, that HF tokenizer), built once."""
    cache = {}

    def get(name):
        if name not in cache:
            directory = tmp_path_factory.mktemp(name)
            if name == "siglip":
                tokenizer = siglip_tokenizer(directory, tmp_path_factory.mktemp("spm"))
            else:
                tokenizer = clip_tokenizer(directory)
            torch.manual_seed(0)
            model = ht.randomize(hf_model(name, len(tokenizer)))
            cache[name] = model, ht.save_pretrained(model, directory), tokenizer
        return cache[name]

    return get


def image_processor(name: str):
    """The family's HF processor at 32 px (the PIL backend: the default one needs torchvision,
    which is not installed)."""
    if name == "siglip":
        return tf.SiglipImageProcessorPil(size={"height": 32, "width": 32})
    return tf.CLIPImageProcessorPil(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )


def photos() -> list:
    """The two sklearn sample photographs (427 x 640) and a non-square crop of each."""
    china, flower = load_sample_images().images
    return [Image.fromarray(a) for a in (china, flower, china[40:300, 100:300], flower[:, 320:])]


def hand_made_ids(name: str, vocab_size: int):
    """(i64[4, LENGTH] ids, bool mask) of 4 prompts of 1 to LENGTH - 2 words, padded as each
    family's tokenizer pads: CLIP BOS, words, EOS, then the pad id (= EOS for the legacy
    config, as the OpenAI checkpoints pad with <|endoftext|>, their highest id); SigLIP words,
    EOS (2), then EOS as padding, every row LENGTH long, all of it attended."""
    rng = np.random.default_rng(7)
    ids, mask = np.zeros((4, LENGTH), np.int64), np.zeros((4, LENGTH), bool)
    for row, words in enumerate((1, 5, 9, LENGTH - 2)):
        if name == "siglip":
            seq = [*rng.integers(3, vocab_size, words), 2]
            ids[row], mask[row] = 2, True
        else:
            eos = vocab_size - 1 if name == "clip_legacy" else 1
            seq = [0, *rng.integers(2, vocab_size - 1, words), eos]
            ids[row], mask[row, : len(seq)] = eos, True
        ids[row, : len(seq)] = seq
    return ids, mask


@nnx.jit
def forward(model, images, tokens, mask):
    image_emb, text_emb = model.embed_images(images), model.embed_texts(tokens, mask)
    return image_emb, text_emb, model.logits(image_emb, text_emb)


def references(hf, name, pixels, ids, mask):
    """transformers' unit-norm image and text features and logits_per_image."""
    text_kwargs = {} if name == "siglip" else {"attention_mask": torch.from_numpy(mask).long()}
    ids = torch.from_numpy(ids)
    with torch.no_grad():
        image = hf.get_image_features(pixel_values=pixels).pooler_output
        text = hf.get_text_features(input_ids=ids, **text_kwargs).pooler_output
        logits = hf(input_ids=ids, pixel_values=pixels, **text_kwargs).logits_per_image
    unit = [x / x.norm(dim=-1, keepdim=True) for x in (image, text)]
    return *unit, logits


def nhwc(pixels) -> jax.Array:
    return jax.numpy.asarray(pixels.numpy().transpose(0, 2, 3, 1))


@pytest.mark.parametrize("name", ["clip", "clip_legacy", "siglip"])
def test_dual_encoder_parity(saved, name):
    hf, path, tokenizer = saved(name)
    model, cfg = fgjax.hf.load(path, dual_encoder=True)
    want = {"clip": ("eos", True), "clip_legacy": ("argmax", True), "siglip": ("final", False)}
    assert (cfg.text.pool, cfg.text.causal) == want[name]
    assert cfg.text.family == name.removesuffix("_legacy")
    pixels = image_processor(name)(photos(), return_tensors="pt")["pixel_values"]
    ids, mask = hand_made_ids(name, len(tokenizer))
    image, text, logits = references(hf, name, pixels, ids, mask)
    ours = forward(model, nhwc(pixels), jax.numpy.asarray(ids, jax.numpy.int32), mask)
    ht.check(f"{name} image embeddings", ours[0], image)
    ht.check(f"{name} text embeddings", ours[1], text)
    ht.check(f"{name} logits_per_image", ours[2], logits)


def variant(model, cfg, **text_fields):
    """The same weights under a text tower with other `text_fields`."""
    other = dataclasses.replace(cfg, text=dataclasses.replace(cfg.text, **text_fields))
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: fgjax.models.build(other)))
    return nnx.merge(graphdef, nnx.state(model))


@pytest.mark.parametrize(
    "name, fields",
    [("clip", dict(pool="final")), ("clip", dict(causal=False)), ("siglip", dict(pool="last"))],
)
def test_wrong_text_tower_rules_break_parity(saved, name, fields):
    """Negative controls: CLIP pooled at the final (padding) position or without its causal
    mask, and SigLIP pooled at the last real token (fgjax's own rule, with the padding masked
    out) miss the reference by far more than TOL."""
    hf, path, tokenizer = saved(name)
    model, cfg = fgjax.hf.load(path, dual_encoder=True)
    pixels = image_processor(name)(photos(), return_tensors="pt")["pixel_values"]
    ids, mask = hand_made_ids(name, len(tokenizer))
    _, text, _ = references(hf, name, pixels, ids, mask)
    if name == "siglip":
        mask = np.arange(LENGTH)[None] <= np.argmax(ids == 2, axis=1)[:, None]
    wrong = variant(model, cfg, **fields)
    emb = nnx.jit(lambda m, t, k: m.embed_texts(t, k))(wrong, jax.numpy.asarray(ids), mask)
    err = ht.rel_err(emb, text)
    print(f"[control] {name} text embeddings with {fields}: {err:.2e}")
    assert err > 100 * ht.TOL


PROMPTS = [
    "a photo of a temple.",
    "A photo of a  Bright-Banded flower!",  # case, punctuation, a double space
    "an old temple with a tiled roof between trees under a blue sky with clouds, in bright "
    "sunlight",  # longer than LENGTH
]


@pytest.mark.parametrize("name", ["clip", "siglip"])
def test_prompts_tokenized_as_the_family_tokenizer(saved, name):
    """text_tower_ids over fgjax's tokenizer read from the HF directory = transformers' own
    tokenizer loaded from it: CLIP BOS + text + EOS cut at max_length; SigLIP canonicalized
    text + EOS, padded with the pad token to max_length."""
    _, path, _ = saved(name)
    theirs = tf.AutoTokenizer.from_pretrained(path)
    assert type(theirs).__name__ == ("SiglipTokenizer" if name == "siglip" else "CLIPTokenizer")
    ours = load_tokenizer(path)
    padding = "max_length" if name == "siglip" else False
    want = theirs(PROMPTS, padding=padding, truncation=True, max_length=LENGTH)["input_ids"]
    got = [text_tower_ids(ours, p, family=name, max_length=LENGTH) for p in PROMPTS]
    assert got == want
    assert len(want[2]) == LENGTH  # the long prompt was cut, its EOS kept
    eos = 1 if name == "clip" else 2
    assert want[2][-1] == eos


def write_photos(root) -> list:
    """ROOT/<class>/<i>.png: two crops per class of the sample photographs; the files in
    dataset order (classes in CLASSES order, files sorted)."""
    china, flower = load_sample_images().images
    crops = {
        "temple": [china[100:400, 150:450], china[120:427, 0:250]],
        "sky": [china[0:90, 0:640], china[0:120, 300:600]],
        "flower": [flower[100:350, 150:450], flower[50:400, 200:380]],
        "leaf": [flower[0:150, 0:200], flower[300:427, 450:640]],
    }
    files = []
    for name in CLASSES:
        (root / name).mkdir(parents=True)
        for i, crop in enumerate(crops[name]):
            files.append(root / name / f"{i}.png")
            Image.fromarray(np.ascontiguousarray(crop)).save(files[-1])
    return files


@pytest.mark.parametrize("name", ["clip", "siglip"])
def test_zero_shot_reference_from_hf_directory(saved, name, tmp_path):
    """compare.zero_shot with an "hf:DIR" reference (model, tokenizer and prompts as fgjax
    loads them, images through fgjax's preprocessing) predicts, for every image, the argmax of
    transformers' logits_per_image (its own tokenizer and image processor, from the same
    files); its cosines match transformers' at TOL."""
    hf, path, tokenizer = saved(name)
    files = write_photos(tmp_path / "data")
    spec = {"name": "photos", "source": "folder", "path": str(tmp_path / "data"),
            "class_names": list(CLASSES)}  # fmt: skip
    eval_config = ml_collections.ConfigDict({"datasets": [spec], "batch_size": 4})
    entry = {"name": name, "model": f"hf:{path}", "tokenizer": None, "prompt": PROMPT}
    compare.zero_shot(entry, eval_config, tmp_path / "out")

    texts = [PROMPT.format(c) for c in CLASSES]
    padding = "max_length" if name == "siglip" else True
    inputs = dict(tf.AutoTokenizer.from_pretrained(path)(
        texts, padding=padding, max_length=LENGTH, truncation=True, return_tensors="pt"
    ))  # fmt: skip
    images = [Image.open(f).convert("RGB") for f in files]
    inputs["pixel_values"] = image_processor(name)(images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        logits = hf(**inputs).logits_per_image.numpy().astype(np.float64)
    scale = hf.logit_scale.exp().item()
    cosines = (logits - (hf.logit_bias.item() if name == "siglip" else 0.0)) / scale
    # no near tie: scores that agree to TOL (relative to the largest) agree on the argmax
    top2 = np.sort(cosines, axis=1)[:, -2:]
    margin = (top2[:, 1] - top2[:, 0]).min()
    print(f"[zero-shot] {name}: smallest top-2 cosine margin {margin:.2e}")
    assert margin > 2 * ht.TOL * np.abs(cosines).max()

    out = tmp_path / "out" / "photos" / "zero_shot"
    records = [json.loads(line) for line in (out / "predictions.jsonl").open()]
    labels = np.repeat(np.arange(len(CLASSES)), 2)
    assert [r["label"] for r in records] == labels.tolist()
    assert [r["prediction"] for r in records] == np.argmax(logits, axis=1).tolist()
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert metrics["accuracy"] == pytest.approx(np.mean(np.argmax(logits, axis=1) == labels))

    loaded = loading.load_contrastive(f"hf:{path}")
    miner = negatives.ContrastiveMiner(loaded.model, loaded.tokenizer, prompt=PROMPT,
                                       batch_size=4, progress=False)  # fmt: skip
    ht.check(f"{name} zero-shot cosines", miner.scores(datasets.from_spec(spec)), cosines)
