"""The procedural specimens dataset: taxonomy, determinism, TFDS build, text, QA, difficulty."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
import tensorflow_datasets as tfds

from fgjax.data import specimens
from fgjax.data.specimens import draw, scenes, text

TINY_SIZES = dict(train=60, validation=12, test=12)


# -- taxonomy -------------------------------------------------------------------------------------


def test_taxonomy_has_many_fine_classes_with_unique_multiword_names():
    names, families = specimens.class_names(), specimens.family_names()
    assert len(names) >= 100 and len(families) >= 10
    assert len(set(names)) == len(names) and len(set(families)) == len(families)
    assert all(len(name.split()) >= 2 for name in names)
    assert not set(names) & set(families)
    # Classes of a family share a silhouette and hue; they differ in shade, pattern or form.
    for f in range(len(families)):
        cues = [(c.shade, c.pattern, c.form) for c in specimens.classes() if c.family == f]
        assert len(cues) == len(set(cues)) >= 10


def test_descriptions_name_family_and_cues():
    descriptions = specimens.descriptions()
    assert set(descriptions) == set(specimens.class_names())
    for cls in specimens.classes():
        fam = specimens.FAMILIES[cls.family]
        desc = descriptions[cls.name]
        assert desc.startswith(f"The {cls.name} is a {fam.noun}")
        assert fam.shade_words[cls.shade] in desc and 2 <= desc.count(". ") + 1 <= 3
    assert len(set(descriptions.values())) == len(descriptions)


# -- determinism ----------------------------------------------------------------------------------


def test_same_seed_is_byte_identical_whatever_the_batching():
    whole = specimens.generate("validation", 24, resolution=32, seed=5, batch_size=24)
    batched = specimens.generate("validation", 24, resolution=32, seed=5, batch_size=5)
    tail = specimens.generate("validation", 8, resolution=32, seed=5, start=16, batch_size=3)
    assert whole["image"].tobytes() == batched["image"].tobytes()
    assert whole["image"][16:].tobytes() == tail["image"].tobytes()
    for key in ("id", "label", "caption", "questions", "answers", "options"):
        assert list(whole[key]) == list(batched[key])
        assert list(whole[key][16:]) == list(tail[key])


def test_different_seed_or_split_differs():
    a = specimens.generate("train", 16, resolution=32, seed=0)
    b = specimens.generate("train", 16, resolution=32, seed=1)
    c = specimens.generate("test", 16, resolution=32, seed=0)
    assert not np.array_equal(a["image"], b["image"]) and a["label"].tolist() != b["label"].tolist()
    assert not np.array_equal(a["image"], c["image"]) and a["id"] != c["id"]


def test_labels_are_balanced_per_block():
    labels = specimens.generate("train", 200, resolution=16)["label"]
    assert np.bincount(labels, minlength=100).tolist() == [2] * 100


def test_bad_arguments_say_what_to_change():
    with pytest.raises(ValueError, match="unknown split 'val'"):
        specimens.generate("val", 4)
    with pytest.raises(ValueError, match="multiple of 8"):
        specimens.generate("train", 4, resolution=30)


# -- TFDS -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tfds_builder(tmp_path_factory):
    config = specimens.config(resolution=32, seed=7, **TINY_SIZES)
    builder = tfds.builder("specimens", config=config, data_dir=tmp_path_factory.mktemp("tfds"))
    builder.download_and_prepare(file_format="array_record")  # offline: nothing to download
    return builder


def test_tfds_builds_offline_with_the_fast_path_examples(tfds_builder):
    assert isinstance(tfds_builder, specimens.Specimens)
    info = tfds_builder.info
    assert {s: info.splits[s].num_examples for s in info.splits} == TINY_SIZES
    assert info.features["label"].names == specimens.class_names()
    assert info.features["family"].names == specimens.family_names()
    source = tfds_builder.as_data_source()["validation"]
    expected = specimens.generate("validation", TINY_SIZES["validation"], resolution=32, seed=7)
    for i in range(len(source)):
        ex = source[i]
        assert ex["image"].dtype == np.uint8 and ex["image"].shape == (32, 32, 3)
        assert ex["image"].tobytes() == expected["image"][i].tobytes()
        assert ex["id"].decode() == expected["id"][i]
        assert ex["label"] == expected["label"][i] and ex["family"] == expected["family"][i]
        assert ex["class_name"].decode() == specimens.class_names()[ex["label"]]
        assert ex["caption"].decode() == expected["caption"][i]
        assert ex["caption_kind"].decode() == expected["caption_kind"][i]
        for key in ("questions", "answers", "options"):
            assert [s.decode() for s in ex[key]] == expected[key][i]


def test_registered_configs():
    builder_configs = {c.name: c for c in specimens.Specimens.BUILDER_CONFIGS}
    assert builder_configs["64"].resolution == 64 and builder_configs["32"].resolution == 32
    assert specimens.config(resolution=32) is builder_configs["32"]
    assert specimens.config(seed=3, train=10).name == "64px_seed3_10-2000-5000"


# -- captions and questions -----------------------------------------------------------------------


def test_some_but_not_all_captions_name_the_class():
    data = specimens.generate("train", 600, resolution=16)
    # "two crimson banded whorlshells" names the class too: match all words but the noun
    named = [
        name.rsplit(" ", 1)[0] + " " in caption.lower()
        for caption, name in zip(data["caption"], data["class_name"])
    ]
    fraction = np.mean(named)
    print(f"captions naming the class: {fraction:.1%}")
    assert 0.3 < fraction < 0.5
    # the recorded kind says which captions name the class (what a caption filter keys on)
    np.testing.assert_array_equal(named, np.asarray(data["caption_kind"]) == "name")
    assert set(data["caption_kind"]) == set(specimens.CAPTION_KINDS)
    assert len(set(data["caption"])) > 300  # varied templates


def test_questions_and_options_are_well_formed():
    data = specimens.generate("test", 50, resolution=16)
    for qs, answers, options in zip(data["questions"], data["answers"], data["options"]):
        assert len(qs) == len(answers) == len(options) == 5
        for answer, opts in zip(answers, options):
            assert answer in specimens.split_options(opts)


@pytest.fixture(scope="module")
def rendered():
    indices = range(80)
    batch = scenes.sample(11, "train", indices, 64)
    images, mask = draw.render(batch, 64, with_mask=True)
    data = specimens.generate("train", 80, resolution=64, seed=11)
    assert images.tobytes() == data["image"].tobytes()
    return batch, images.astype(np.float32) / 255, mask, data


def _answer(data, i, kind):
    question_kinds = ["count", "background", "border", "colour", "side_or_texture"]
    return data["answers"][i][question_kinds.index(kind)]


def test_count_and_side_answers_match_the_pixels(rendered):
    _, _, mask, data = rendered
    for i in range(len(mask)):
        blobs, _ = scipy.ndimage.label(mask[i] > 0.5)
        sizes = np.bincount(blobs.ravel())[1:]
        assert text.NUMBER_WORDS[int((sizes >= 6).sum())] == _answer(data, i, "count")
        if _answer(data, i, "count") == "one":
            x_centre = np.average(np.arange(64) + 0.5, weights=mask[i].sum(0)) / 64
            side = scenes.SIDES[np.argmin(np.abs(np.array(scenes.SIDE_X) - x_centre))]
            assert side == _answer(data, i, "side_or_texture")


def test_background_and_border_answers_match_the_pixels(rendered):
    batch, images, mask, data = rendered
    width = round(0.04 * 64)
    inner = np.zeros((64, 64), bool)
    inner[width + 1 : -width - 1, width + 1 : -width - 1] = True
    ring = np.ones((64, 64), bool)
    ring[width:-width, width:-width] = False
    palette = np.array(list(scenes.BACKGROUNDS.values()))
    for i in range(len(images)):
        unlit = images[i] / batch.illumination[i]
        background = np.median(unlit[inner & (mask[i] == 0)], axis=0)
        nearest = list(scenes.BACKGROUNDS)[np.argmin(np.linalg.norm(palette - background, axis=1))]
        assert nearest == _answer(data, i, "background")
        ring_colour = np.median(unlit[ring], axis=0)
        framed = np.linalg.norm(ring_colour - background) > 0.2
        assert ("yes" if framed else "no") == _answer(data, i, "border")


# -- difficulty: fine classes are harder than families -------------------------------------------


def _softmax_probe(x_train, y_train, x_test, y_test, num_classes, steps=200, lr=0.05, l2=1e-4):
    """Multinomial logistic regression on standardized features, full-batch Adam in numpy
    (fast and deterministic here); returns the test accuracy."""
    mean, std = x_train.mean(0), x_train.std(0) + 1e-3
    with_bias = lambda x: np.concatenate([(x - mean) / std, np.ones((len(x), 1), x.dtype)], 1)
    x_train, x_test = with_bias(x_train), with_bias(x_test)
    onehot = np.eye(num_classes, dtype=np.float32)[y_train]
    w = np.zeros((x_train.shape[1], num_classes), np.float32)
    m, v = np.zeros_like(w), np.zeros_like(w)
    for t in range(1, steps + 1):
        logits = x_train @ w
        probs = np.exp(logits - logits.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        grad = x_train.T @ (probs - onehot) / len(x_train) + 2 * l2 * w
        m, v = 0.9 * m + 0.1 * grad, 0.999 * v + 0.001 * grad**2
        w -= lr * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
    return float(((x_test @ w).argmax(1) == y_test).mean())


def test_raw_pixel_probe_finds_families_much_easier_than_fine_classes():
    res, pool = 32, 4  # raw pixels, average-pooled to 8 x 8 x 3 to keep the probe fast
    train = specimens.generate("train", 3000, resolution=res)
    test = specimens.generate("test", 1000, resolution=res)
    features = lambda images: (
        (
            images.astype(np.float32)
            .reshape(-1, res // pool, pool, res // pool, pool, 3)
            .mean((2, 4))
        ).reshape(len(images), -1)
        / 255
    )
    x_train, x_test = features(train["image"]), features(test["image"])
    family = _softmax_probe(x_train, train["family"], x_test, test["family"], 10)
    fine = _softmax_probe(x_train, train["label"], x_test, test["label"], 100)
    print(
        f"raw-pixel linear probe: family {family:.3f} (chance 0.1), fine {fine:.3f} (chance 0.01)"
    )
    assert family > 0.5 and family > 2.5 * fine and fine > 0.05
