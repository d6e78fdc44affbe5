"""Evaluation data sources: the built-in specimens (classes and general questions), JSONL
classification and question files with their errors, seeded subsets."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from fgjax.data import specimens
from fgjax.evaluate import datasets, vqa


def test_specimens_classes_and_general_questions():
    dataset = datasets.from_spec({"name": "specimens", "size": 6, "resolution": 32})
    assert dataset.class_names == tuple(specimens.class_names()) and len(dataset) == 6
    record = dataset[3]
    assert record["image"].shape == (32, 32, 3) and 0 <= record["label"] < 100
    assert dataset.ids()[3] == record["id"] == specimens.example_id(0, "test", 3)
    train = datasets.from_spec({"name": "specimens", "train_size": 4, "resolution": 32}, "train")
    assert train.split == "train" and len(train) == 4
    questions = vqa.load_questions({"source": "specimens", "size": 2, "resolution": 32})
    short = [q for q in questions if "answers" in q]
    choice = [q for q in questions if "options" in q]
    assert len(short) == len(choice) == 10  # five questions per example, in both forms
    for s, c in zip(short, choice):
        assert s["question"] == c["question"] and c["options"][c["answer"]] == s["answers"][0]


def test_jsonl_files_and_their_errors(tmp_path):
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "a.png")
    rows = [{"image": "a.png", "label": "tulip"}, {"image": "a.png", "label": "rose", "id": "x"}]
    (tmp_path / "c.jsonl").write_text("\n".join(map(json.dumps, rows)))
    dataset = datasets.from_spec(
        {"name": "mine", "source": "jsonl", "path": str(tmp_path / "c.jsonl")}
    )
    assert dataset.class_names == ("rose", "tulip") and dataset.labels().tolist() == [1, 0]
    assert dataset.ids() == ["mine/0", "x"]
    assert datasets.read_image(dataset[0]["image"]) == (tmp_path / "a.png").read_bytes()
    (tmp_path / "bad.jsonl").write_text(json.dumps({"image": "a.png", "label": "lily"}))
    with pytest.raises(ValueError, match="bad.jsonl:1: label 'lily' is not a class name"):
        datasets.from_spec({"name": "m", "source": "jsonl", "path": str(tmp_path / "bad.jsonl"),
                            "class_names": ["rose"]})  # fmt: skip
    (tmp_path / "q.jsonl").write_text(
        json.dumps({"image": "a.png", "question": "Q?", "options": ["a", "b"], "answer": "c"})
    )
    with pytest.raises(ValueError, match="q.jsonl:1: need >= 2 options and an answer among them"):
        vqa.load_questions({"source": "jsonl", "path": str(tmp_path / "q.jsonl")})
    with pytest.raises(ValueError, match="unknown question source"):
        vqa.load_questions({"source": "vqav2"})


def test_seeded_subsets_keep_dataset_order():
    full = datasets.ClassificationSet("d", "test", ("a", "b"), datasets.ArraySource(
        np.zeros((50, 2, 2, 3), np.uint8), np.arange(50) % 2))  # fmt: skip
    first = datasets.subset(full, 10, seed=1)
    again = datasets.subset(full, 10, seed=1)
    assert first.ids() == again.ids() and len(first) == 10
    indices = [int(i.split("-")[1]) for i in first.ids()]
    assert indices == sorted(indices) and first.ids() != datasets.subset(full, 10, seed=2).ids()
    assert datasets.subset(full, None) is full


def write_rows(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return {"name": "mine", "source": "jsonl", "path": str(path), "class_names": ["a", "b"]}


@pytest.mark.parametrize(
    "rows, message",
    [
        ([{"image": "a.png", "label": 2}], r"c.jsonl:1: label 2 is outside the 2 classes"),
        ([{"image": "a.png", "label": -1}], r"c.jsonl:1: label -1 is outside the 2 classes"),
        ([{"image": "a.png", "label": 1.7}], r"c.jsonl:1: label 1.7 must be a class name or an int"),
        ([{"image": "a.png", "label": True}], r"c.jsonl:1: label True must be a class name or an"),
        (
            [{"image": "a.png", "label": 0, "id": "x"}, {"image": "a.png", "label": 1, "id": "x"}],
            r"c.jsonl:2: id 'x' is also the id of .*c.jsonl:1",
        ),
        ([{"image": "a.png", "label": 0}, {"image": "gone.png", "label": 1}], r"c.jsonl:2: .*gone"),
        ([{"image": "a.png"}], r"c.jsonl:1: missing \['label'\]"),
    ],
    ids=["label_too_large", "label_negative", "fractional_label", "bool_label", "duplicate_id",
         "missing_image", "missing_label"],  # fmt: skip
)
def test_bad_jsonl_rows_fail_when_the_file_is_read(tmp_path, rows, message):
    """Defect 12: these used to fail after the whole protocol ran (IndexError), or pass
    silently (1.7 became 1, duplicate ids were accepted)."""
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "a.png")
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        datasets.from_spec(write_rows(tmp_path / "c.jsonl", rows))


def test_a_corrupt_evaluation_image_names_its_file_and_id(tmp_path):
    """Defect 12: the error used to name neither."""
    from fgjax.data.images import PreprocessConfig
    from fgjax.evaluate.evaluator import DatasetRunner

    (tmp_path / "a.png").write_bytes(b"not a png")
    dataset = datasets.from_spec(
        write_rows(tmp_path / "c.jsonl", [{"image": "a.png", "label": 0, "id": "r7"}])
    )
    runner = DatasetRunner(PreprocessConfig(size=8), batch_size=1, progress=False)
    with pytest.raises(ValueError, match=r"example 'r7': cannot read its image \(file .*a.png\)"):
        runner.run(dataset, lambda batch: {})


def test_an_image_folder_is_a_dataset_named_by_its_folders(tmp_path):
    rng = np.random.default_rng(0)
    for name, count in (("oak leaf", 3), ("maple leaf", 2)):
        (tmp_path / "test" / name).mkdir(parents=True)
        for i in range(count):
            pixels = (rng.random((20 + i, 30, 3)) * 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "test" / name / f"{i}.{'png' if i else 'jpg'}")
    (tmp_path / "test" / "oak leaf" / "notes.txt").write_text("not an image")
    spec = {"name": "leaves", "source": "folder", "path": str(tmp_path / "test")}
    ds = datasets.from_spec(spec)
    assert ds.class_names == ("maple leaf", "oak leaf") and len(ds) == 5
    assert ds.labels().tolist() == [0, 0, 1, 1, 1]
    assert ds.ids()[0] == "leaves/maple leaf/0.jpg"
    assert Image.open(io.BytesIO(datasets.read_image(ds[4]["image"]))).size == (30, 22)
    ordered = datasets.from_spec({**spec, "class_names": ["oak leaf", "maple leaf"]})
    assert ordered.labels().tolist() == [0, 0, 0, 1, 1]
    (tmp_path / "test" / "birch leaf").mkdir()
    with pytest.raises(ValueError, match="birch leaf holds no images"):
        datasets.from_spec(spec)
    with pytest.raises(ValueError, match="no folder .*/elm for class 'elm'"):
        datasets.from_spec({**spec, "class_names": ["elm"]})
    with pytest.raises(ValueError, match="unknown classification dataset 'digits'.*\"source\": \"folder\""):
        datasets.from_spec("digits")
