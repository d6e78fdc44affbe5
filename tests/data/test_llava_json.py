"""LLaVA-558K / 665K JSON readers: rows, images, text-only rows, and bad input skipped,
counted and logged (or raised in strict mode)."""

import json
import logging

import grain
import numpy as np
import pytest
from PIL import Image

from fgjax.data.conversation import ConversationEncoder
from fgjax.data.llava_json import BadInputError, LlavaJsonSource
from fgjax.data.tokenizer_train import tiny_tokenizer


def caption_row(row_id, image, caption):
    return {
        "id": row_id,
        "image": image,
        "conversations": [
            {"from": "human", "value": "Render a clear and concise summary of the photo.\n<image>"},
            {"from": "gpt", "value": caption},
        ],
    }


@pytest.fixture(scope="module")
def image_root(tmp_path_factory):
    """PNG and JPEG images, plus a corrupt file and a truncated JPEG."""
    root = tmp_path_factory.mktemp("images")
    (root / "sub").mkdir()
    rng = np.random.default_rng(0)
    pixels = {
        "sub/a.png": rng.integers(0, 256, (12, 16, 3), np.uint8),
        "b.jpg": np.full((20, 10, 3), (200, 30, 90), np.uint8),
        "gray.png": rng.integers(0, 256, (8, 8), np.uint8),
    }
    for name, array in pixels.items():
        Image.fromarray(array).save(root / name)
    (root / "corrupt.jpg").write_bytes(b"this is not an image")
    jpeg = (root / "b.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    return root, pixels


def write_json(path, rows, jsonl=False):
    text = "\n".join(json.dumps(r) for r in rows) if jsonl else json.dumps(rows)
    path.write_text(text)
    return str(path)


def test_caption_rows_with_png_and_jpeg(image_root, tmp_path):
    root, pixels = image_root
    rows = [caption_row("0001", "sub/a.png", "a cat"), caption_row(2, "b.jpg", "a red wall")]
    source = LlavaJsonSource(write_json(tmp_path / "558k.json", rows), str(root))
    assert len(source) == 2 and source.report() == {"rows": 2, "kept": 2}
    first, second = source[0], source[1]
    assert first["id"] == "0001" and second["id"] == "2"
    assert first["image"].dtype == np.uint8 and np.array_equal(first["image"], pixels["sub/a.png"])
    assert second["image"].shape == (20, 10, 3)  # JPEG is lossy: close, not equal
    assert np.abs(second["image"].astype(int) - (200, 30, 90)).max() <= 3
    assert first["conversations"] == rows[0]["conversations"]
    assert source[-1]["id"] == "2" and source.image_path(0) == str(root / "sub/a.png")
    with pytest.raises(IndexError):
        source[2]


def test_multiturn_jsonl_with_text_only_rows(image_root, tmp_path):
    root, _ = image_root
    rows = [
        {
            "id": "sharegpt_1",
            "conversations": [
                {"from": "human", "value": "Hi"},
                {"from": "gpt", "value": "Hello"},
                {"from": "human", "value": "Bye"},
                {"from": "gpt", "value": "Bye!"},
            ],
        },
        {
            "id": "gray",
            "image": "gray.png",
            "conversations": [
                {"from": "human", "value": "<image>\nColor?"},
                {"from": "gpt", "value": "Gray."},
            ],
        },
    ]
    source = LlavaJsonSource(write_json(tmp_path / "665k.jsonl", rows, jsonl=True), str(root))
    text_only, gray = source[0], source[1]
    assert text_only["image"] is None and len(text_only["conversations"]) == 4
    assert gray["image"].shape == (8, 8, 3)  # grayscale converted to RGB
    assert source.image_path(0) is None


def test_bad_input_is_skipped_counted_and_logged(image_root, tmp_path, caplog):
    root, _ = image_root
    rows = [
        caption_row("good", "b.jpg", "fine"),
        "not an object",
        {"id": "no_turns", "image": "b.jpg"},
        {"id": "bad_turn", "conversations": [{"from": "human"}]},
        {
            "id": "two_images",
            "image": ["b.jpg", "sub/a.png"],
            "conversations": [{"from": "human", "value": "x"}],
        },
        caption_row("missing", "nowhere.jpg", "lost"),
        caption_row("corrupt", "corrupt.jpg", "garbage"),
        caption_row("truncated", "truncated.jpg", "half"),
    ]
    path = write_json(tmp_path / "mixed.json", rows)
    with caplog.at_level(logging.WARNING, logger="fgjax.data.llava_json"):
        source = LlavaJsonSource(path, str(root))
        records = [source[i] for i in range(len(source))]
    assert [r["id"] for r in records if r is not None] == ["good"]
    assert records[1:] == [None, None]  # corrupt and truncated, found when read
    assert source.report() == {
        "rows": 8,
        "kept": 3,
        "malformed row": 4,
        "missing image": 1,
        "corrupt image": 2,
    }
    logged = caplog.text
    for label in ("#1", "no_turns", "bad_turn", "two_images", "missing", "corrupt", "truncated"):
        assert label in logged
    assert "malformed row 4" in source.summary() and "8 rows, 3 kept" in source.summary()
    # grain skips the None records of corrupt images
    assert [r["id"] for r in grain.MapDataset.source(source).to_iter_dataset()] == ["good"]


def test_strict_mode_raises(image_root, tmp_path):
    root, _ = image_root
    path = write_json(tmp_path / "m.json", [caption_row("x", "nowhere.jpg", "c")])
    with pytest.raises(BadInputError, match="missing image in row #0 \\(id='x'\\)"):
        LlavaJsonSource(path, str(root), strict=True)
    path = write_json(tmp_path / "c.json", [caption_row("y", "corrupt.jpg", "c")])
    source = LlavaJsonSource(path, str(root), strict=True)
    with pytest.raises(BadInputError, match="corrupt image in row #0 \\(id='y'\\)"):
        source[0]
    path = write_json(tmp_path / "j.jsonl", [caption_row("z", "b.jpg", "c")], jsonl=True)
    (tmp_path / "j.jsonl").write_text(open(path).read() + "\n{not json\n")
    with pytest.raises(BadInputError, match="line 2"):
        LlavaJsonSource(path, str(root), strict=True)
    assert LlavaJsonSource(path, str(root)).report()["malformed row"] == 1


def test_unreadable_file_and_missing_image_root(tmp_path):
    (tmp_path / "broken.json").write_text('[{"id": 1,')
    with pytest.raises(BadInputError, match="not valid JSON"):
        LlavaJsonSource(str(tmp_path / "broken.json"))
    path = write_json(tmp_path / "r.json", [caption_row("x", "a.png", "c")])
    with pytest.raises(ValueError, match="pass image_root"):
        LlavaJsonSource(path)


def test_rows_feed_the_conversation_encoder(image_root, tmp_path):
    root, _ = image_root
    rows = [
        caption_row("a", "sub/a.png", "a cat"),
        {
            "id": "t",
            "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}],
        },
    ]
    source = LlavaJsonSource(write_json(tmp_path / "e.json", rows), str(root))
    tok = tiny_tokenizer("bpe")
    for template in ("plain", "vicuna_v1"):
        encoder = ConversationEncoder(tok, template, num_image_tokens=4)
        for record in source:
            sample = encoder.encode(record["conversations"], has_image=record["image"] is not None)
            assert (sample.tokens == encoder.image_token_id).sum() == (
                4 if record["image"] is not None else 0
            )
            assert sample.loss_mask.any()
