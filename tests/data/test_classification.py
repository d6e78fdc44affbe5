"""The classification-dataset registry: every dataset loads through TFDS mock data with as many
class names as TFDS has labels; names line up with TFDS's own label names; ImageNet's repeats
are resolved."""

import io

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from fgjax.data import classification, images

BUILTIN = (
    "caltech_birds2011",
    "cars196",
    "dtd",
    "fgvc_aircraft",
    "food101",
    "imagenet2012",
    "oxford_flowers102",
    "oxford_iiit_pet",
    "stanford_dogs",
)
NO_DATA = "/nonexistent/tfds"  # mock data never reads it; a real read would fail loudly


def normalized(name: str) -> str:
    return name.lower().replace("_", " ")


@pytest.mark.parametrize("name", BUILTIN)
def test_loads_through_mock_data_with_one_name_per_label(name):
    dataset = classification.info(name)
    with tfds.testing.mock_data(num_examples=5):
        tfds_labels = classification.builder(name, NO_DATA).info.features["label"]
        for split in (dataset.eval_split, dataset.train_split):
            examples = list(classification.as_numpy(name, split, NO_DATA))
            assert len(examples) >= 5
            for example in examples:
                assert set(example) == {"image", "label"}
                assert example["image"].dtype == np.uint8 and example["image"].shape[-1] == 3
                assert 0 <= example["label"] < dataset.num_classes
    assert dataset.num_classes == tfds_labels.num_classes
    assert len(set(dataset.class_names)) == dataset.num_classes
    assert all(n.strip() == n and n for n in dataset.class_names)


# Curated names that differ from TFDS's on purpose (index: (TFDS name, ours)).
CURATED_RENAMES = {
    "oxford_flowers102": {
        15: ("globe-flower", "globe flower"),
        59: ("pink-yellow dahlia?", "pink and yellow dahlia"),
        92: ("ball moss", "air plant"),
    }
}


@pytest.mark.parametrize(
    "name", ["cars196", "dtd", "food101", "oxford_flowers102", "oxford_iiit_pet", "fgvc_aircraft"]
)
def test_class_names_are_in_tfds_label_order(name):
    """Where TFDS carries readable label names, ours must be the same classes, same order."""
    with tfds.testing.mock_data(num_examples=1):
        tfds_names = classification.builder(name, NO_DATA).info.features["label"].names
    ours = classification.info(name).class_names
    renames = CURATED_RENAMES.get(name, {})
    for index, (theirs, mine) in enumerate(zip(tfds_names, ours, strict=True)):
        if index in renames:
            assert (theirs, mine) == renames[index]
        else:
            assert normalized(theirs) == normalized(mine), index


def test_imagenet_names_are_clips_with_repeats_resolved():
    names = classification.info("imagenet2012").class_names
    verbatim = classification.read_class_names("imagenet.txt")
    wnids = classification.imagenet_wnids()
    assert len(names) == len(verbatim) == len(wnids) == 1000 == len(set(names))
    changed = {i: (verbatim[i], names[i]) for i in range(1000) if verbatim[i] != names[i]}
    assert changed == {
        744: ("missile", "projectile"),
        836: ("sunglasses", "sunglass"),
    }
    assert [wnids[i] for i in (657, 744, 836, 837)] == [
        "n03773504",
        "n04008634",
        "n04355933",
        "n04356056",
    ]
    assert names[657] == "missile" and names[837] == "sunglasses"
    assert (names[134], names[517]) == ("crane bird", "construction crane")
    assert (names[638], names[639]) == ("tights", "one-piece bathing suit")
    assert (names[0], names[151], names[999]) == ("tench", "Chihuahua", "toilet paper")


def test_disambiguation_refuses_unresolved_repeats():
    with pytest.raises(ValueError, match="'crane' .n2. repeats"):
        classification.disambiguate(["crane", "crane"], ["n1", "n2"], {"n1": "crane bird"})


def test_stanford_dogs_uses_the_imagenet_names_of_its_synsets():
    dogs = classification.info("stanford_dogs").class_names
    by_wnid = dict(
        zip(classification.imagenet_wnids(), classification.info("imagenet2012").class_names)
    )
    wnids = sorted(classification.read_class_names("stanford_dogs_wnids.txt"))
    assert len(dogs) == len(wnids) == 120
    assert list(dogs) == [by_wnid[w] for w in wnids]
    assert (dogs[0], dogs[-3], dogs[-1]) == ("Chihuahua", "dingo", "African wild dog")


def test_aircraft_and_birds_names():
    aircraft = classification.info("fgvc_aircraft")
    assert aircraft.num_classes == 100 and aircraft.manual_download
    assert (aircraft.class_names[0], aircraft.class_names[-1]) == ("707-320", "Yak-42")
    birds = classification.info("caltech_birds2011").class_names
    assert (birds[0], birds[199]) == ("Black footed Albatross", "Common Yellowthroat")


def test_unknown_names_and_splits_are_actionable_errors():
    with pytest.raises(
        ValueError, match="unknown classification dataset 'cub'; available: .*caltech_birds2011"
    ):
        classification.info("cub")
    with pytest.raises(ValueError, match="cars196 has no split 'validation'.*train, test"):
        classification.load("cars196", "validation", NO_DATA)
    assert classification.check_split(classification.info("dtd"), "train[:10%]+validation")


def test_register_hook_adds_a_dataset_and_refuses_silent_replacement():
    digits = classification.ClassificationInfo(
        name="test_digits",
        tfds_name="mnist",
        class_names=tuple(str(d) for d in range(10)),
        splits=("train", "test"),
        eval_split="test",
        train_split="train",
    )
    classification.register(digits)
    try:
        assert "test_digits" in classification.names()
        with pytest.raises(ValueError, match="already registered"):
            classification.register(digits)
        with tfds.testing.mock_data(num_examples=3):
            example = next(iter(classification.as_numpy("test_digits", data_dir=NO_DATA)))
        assert example["image"].shape[-1] == 1 and 0 <= example["label"] < 10
    finally:
        classification._REGISTRY.pop("test_digits")
    with pytest.raises(ValueError, match="class names repeat"):
        classification.ClassificationInfo("x", "mnist", ("a", "a"), ("test",), "test", "test")


def test_encoded_images_and_random_access_for_the_pipeline():
    config = images.PreprocessConfig(32, "resize_crop")
    with tfds.testing.mock_data(num_examples=3):
        encoded = next(
            iter(classification.as_numpy("imagenet2012", data_dir=NO_DATA, decode=False))
        )
        source = classification.DataSource("imagenet2012", "train", NO_DATA)
        item = source[1]
    assert isinstance(encoded["image"], bytes)
    decoded = Image.open(io.BytesIO(encoded["image"]))
    np.testing.assert_array_equal(
        images.preprocess(encoded["image"], config), images.preprocess(decoded, config)
    )
    assert len(source) == 3
    assert item["image"].dtype == np.uint8 and isinstance(item["label"], int)
