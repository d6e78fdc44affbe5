"""FGVC-Aircraft (2013b) as a TFDS dataset: 100 aircraft variants, from the official archive.

TFDS 4.9.10 has no builder for it, so this one reads the archive the user downloads:
`fgvc-aircraft-2013b.tar.gz` from https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/ placed
in the manual directory (or already extracted there as `fgvc-aircraft-2013b/`). Importing this
module registers the builder as "fgvc_aircraft":

    builder = tfds.builder("fgvc_aircraft", data_dir=...)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir="/path/with/archive"))

Splits are the official ones: train (3,334), validation (3,333), test (3,333). Labels are the
100 variants in `data/variants.txt` order; the builder checks that file against
fgjax/data/classnames/fgvc_aircraft.txt. Images are kept whole, including the 20-pixel
copyright banner at the bottom of each (crop it in preprocessing if you want it gone).
"""

from __future__ import annotations

import os

import tensorflow_datasets as tfds
from PIL import Image

ARCHIVE = "fgvc-aircraft-2013b.tar.gz"
FOLDER = "fgvc-aircraft-2013b"
CLASS_NAMES_FILE = os.path.join(os.path.dirname(__file__), "classnames", "fgvc_aircraft.txt")
SPLITS = {"train": "train", "validation": "val", "test": "test"}  # TFDS name -> file suffix


def read_lines(path: str) -> list[str]:
    """Non-empty lines of a text file; lines starting with '#' are comments."""
    with open(path, encoding="utf-8") as f:
        lines = (line.rstrip("\n") for line in f)
        return [line for line in lines if line.strip() and not line.startswith("#")]


def read_id_table(path: str) -> dict[str, str]:
    """The official "<image id> <value with spaces>" files -> {image id: value}."""
    table = {}
    for number, line in enumerate(read_lines(path), start=1):
        image_id, _, value = line.partition(" ")
        if not value:
            raise ValueError(f"{path}:{number}: expected '<image id> <value>', got {line!r}")
        table[image_id] = value
    return table


class FgvcAircraft(tfds.core.GeneratorBasedBuilder):
    """FGVC-Aircraft 2013b at the variant level (100 classes)."""

    name = "fgvc_aircraft"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Variant labels, official train/val/test splits, boxes."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
    Download {ARCHIVE} from https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/ and put it
    (or the extracted {FOLDER}/ folder) in the manual directory, e.g.
    download_config=tfds.download.DownloadConfig(manual_dir="/path/to/that/directory").
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 3)),
                    "label": tfds.features.ClassLabel(names=read_lines(CLASS_NAMES_FILE)),
                    "family": tfds.features.Text(),
                    "manufacturer": tfds.features.Text(),
                    "bbox": tfds.features.BBoxFeature(),
                    "file_name": tfds.features.Text(),
                }
            ),
            supervised_keys=("image", "label"),
            homepage="https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        data_dir = self._find_data_dir(dl_manager)
        archive_variants = read_lines(os.path.join(data_dir, "variants.txt"))
        expected = self.info.features["label"].names
        if archive_variants != expected:
            raise ValueError(
                f"{data_dir}/variants.txt does not list the 100 variants of "
                f"{CLASS_NAMES_FILE} in the same order; is this the 2013b release?"
            )
        return {
            split: self._generate_examples(data_dir, suffix) for split, suffix in SPLITS.items()
        }

    def _find_data_dir(self, dl_manager) -> str:
        manual_dir = os.fspath(dl_manager.manual_dir)
        extracted = os.path.join(manual_dir, FOLDER)
        if not os.path.isdir(extracted):
            archive = os.path.join(manual_dir, ARCHIVE)
            if not os.path.exists(archive):
                raise FileNotFoundError(
                    f"neither {archive} nor {extracted}/ exists. {self.MANUAL_DOWNLOAD_INSTRUCTIONS}"
                )
            extracted = os.path.join(os.fspath(dl_manager.extract(archive)), FOLDER)
        data_dir = os.path.join(extracted, "data")
        if not os.path.isfile(os.path.join(data_dir, "variants.txt")):
            raise FileNotFoundError(f"{data_dir}/variants.txt is missing: not the official layout")
        return data_dir

    def _generate_examples(self, data_dir: str, suffix: str):
        variants = read_id_table(os.path.join(data_dir, f"images_variant_{suffix}.txt"))
        families = read_id_table(os.path.join(data_dir, f"images_family_{suffix}.txt"))
        makers = read_id_table(os.path.join(data_dir, f"images_manufacturer_{suffix}.txt"))
        boxes = read_id_table(os.path.join(data_dir, "images_box.txt"))
        for image_id, variant in variants.items():
            for table, what in ((families, "family"), (makers, "manufacturer"), (boxes, "box")):
                if image_id not in table:
                    raise ValueError(f"image {image_id} ({suffix}) has no {what} annotation")
            path = os.path.join(data_dir, "images", f"{image_id}.jpg")
            if not os.path.isfile(path):
                raise FileNotFoundError(f"image {image_id} of split {suffix!r} is missing: {path}")
            yield (
                image_id,
                {
                    "image": path,
                    "label": variant,
                    "family": families[image_id],
                    "manufacturer": makers[image_id],
                    "bbox": _normalized_box(path, boxes[image_id]),
                    "file_name": f"{image_id}.jpg",
                },
            )


def _normalized_box(path: str, box: str) -> tfds.features.BBox:
    """The official 1-based inclusive pixel box "xmin ymin xmax ymax" -> TFDS's [0, 1] BBox."""
    with Image.open(path) as image:  # reads the header only
        width, height = image.size
    xmin, ymin, xmax, ymax = (float(v) for v in box.split())
    clip = lambda v: min(max(v, 0.0), 1.0)
    return tfds.features.BBox(
        ymin=clip((ymin - 1) / height),
        xmin=clip((xmin - 1) / width),
        ymax=clip(ymax / height),
        xmax=clip(xmax / width),
    )
