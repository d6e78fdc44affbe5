"""FGVC-Aircraft builder: builds from a tiny fake archive in the official layout."""

import io
import os
import tarfile

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from fgjax.data import aircraft, classification

VARIANTS = aircraft.read_lines(aircraft.CLASS_NAMES_FILE)
# image id -> (split file suffix, variant, family, manufacturer, (width, height))
IMAGES = {
    "0034309": ("train", "707-320", "Boeing 707", "Boeing", (64, 48)),
    "0034958": ("train", "BAE 146-200", "BAE 146", "British Aerospace", (50, 70)),
    "0037511": ("val", "F-16A/B", "F-16", "Lockheed Martin", (40, 40)),
    "0041377": ("test", "Yak-42", "Yak-42", "Yakovlev", (80, 36)),
    "0043003": ("test", "A380", "A380", "Airbus", (33, 57)),
}


def write_archive(manual_dir, variants=VARIANTS, drop_image=None):
    """Writes fgvc-aircraft-2013b.tar.gz with the official file names and line formats."""
    files = {"data/variants.txt": "\n".join(variants) + "\n"}
    boxes = []
    rng = np.random.default_rng(0)
    for image_id, (suffix, variant, family, maker, (w, h)) in IMAGES.items():
        for kind, value in (("variant", variant), ("family", family), ("manufacturer", maker)):
            key = f"data/images_{kind}_{suffix}.txt"
            files[key] = files.get(key, "") + f"{image_id} {value}\n"
        boxes.append(f"{image_id} 3 2 {w - 5} {h - 1}\n")
        if image_id != drop_image:
            buffer = io.BytesIO()
            pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(buffer, format="JPEG")
            files[f"data/images/{image_id}.jpg"] = buffer.getvalue()
    files["data/images_box.txt"] = "".join(boxes)
    os.makedirs(manual_dir, exist_ok=True)
    with tarfile.open(os.path.join(manual_dir, aircraft.ARCHIVE), "w:gz") as tar:
        for name, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            entry = tarfile.TarInfo(f"{aircraft.FOLDER}/{name}")
            entry.size = len(data)
            tar.addfile(entry, io.BytesIO(data))


def build(tmp_path, **archive_kwargs):
    manual_dir = tmp_path / "manual"
    write_archive(manual_dir, **archive_kwargs)
    builder = tfds.builder("fgvc_aircraft", data_dir=str(tmp_path / "tfds"))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir))
    )
    return builder


def test_builds_from_official_archive_layout(tmp_path):
    builder = build(tmp_path)
    assert {s: builder.info.splits[s].num_examples for s in ("train", "validation", "test")} == {
        "train": 2,
        "validation": 1,
        "test": 2,
    }
    assert builder.info.features["label"].names == list(VARIANTS)
    for split, suffix in aircraft.SPLITS.items():
        for example in tfds.as_numpy(builder.as_dataset(split=split)):
            image_id = example["file_name"].decode().removesuffix(".jpg")
            want_suffix, variant, family, maker, (w, h) = IMAGES[image_id]
            assert want_suffix == suffix
            assert VARIANTS[example["label"]] == variant
            assert example["family"].decode() == family
            assert example["manufacturer"].decode() == maker
            assert example["image"].shape == (h, w, 3)
            np.testing.assert_allclose(
                example["bbox"], [1 / h, 2 / w, (h - 1) / h, (w - 5) / w], rtol=1e-6
            )
    # the registry's loader reads the prepared data: {image, label} of the eval split
    loaded = list(
        classification.as_numpy("fgvc_aircraft", data_dir=str(tmp_path / "tfds"), download=False)
    )
    assert sorted(VARIANTS[ex["label"]] for ex in loaded) == ["A380", "Yak-42"]


def test_rejects_an_archive_with_other_variants(tmp_path):
    with pytest.raises(ValueError, match="variants.txt"):
        build(tmp_path, variants=VARIANTS[::-1])


def test_missing_image_is_an_error_not_a_skip(tmp_path):
    with pytest.raises(FileNotFoundError, match="image 0041377 of split .test. is missing"):
        build(tmp_path, drop_image="0041377")


def test_missing_archive_says_where_to_get_it(tmp_path):
    builder = tfds.builder("fgvc_aircraft", data_dir=str(tmp_path / "tfds"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "unrelated.txt").write_text("x")
    config = tfds.download.DownloadConfig(manual_dir=str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="robots.ox.ac.uk"):
        builder.download_and_prepare(download_config=config)
