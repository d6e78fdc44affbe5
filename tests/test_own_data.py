"""Your own data, end to end (configs/own): real images (scikit-learn's handwritten digits) as
an image folder, a tokenizer of one's own, both training stages, evaluation under likelihood,
multiple choice and probe, prediction, export and transformers -- all from another working
directory, with relative paths."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers as tf
from flax import nnx
from PIL import Image

from configs.own import eval as own_eval
from configs.own import train as own_train
from fgjax import native, predict
from fgjax.data.tokenizer_train import tiny_tokenizer
from fgjax.evaluate import runner
from fgjax.hf.export import export_run
from fgjax.train import trainer

NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
CLASSES = NAMES[:5]  # five digits: a two-minute run that must beat chance clearly
TEST, TRAIN = 10, 60  # images per class


def write_folders(root: Path) -> None:
    """train/ and test/ image folders of 8x8 digits drawn as 32x32 RGB PNGs."""
    digits = pytest.importorskip("sklearn.datasets").load_digits()
    seen = [0] * len(CLASSES)
    for i, (image, label) in enumerate(zip(digits.images, digits.target)):
        if label >= len(CLASSES) or seen[label] >= TEST + TRAIN:
            continue
        split = "test" if seen[label] < TEST else "train"  # each class: 10 test, 60 train
        seen[label] += 1
        pixels = np.kron(255 - image * 255 / 16, np.ones((4, 4)))  # dark ink on white
        folder = root / split / CLASSES[label]
        folder.mkdir(parents=True, exist_ok=True)
        rgb = np.repeat(pixels[..., None], 3, axis=2).astype(np.uint8)
        Image.fromarray(rgb).save(folder / f"{i}.png")


@pytest.mark.slow
def test_own_images_train_evaluate_predict_and_export(tmp_path, monkeypatch):
    write_folders(tmp_path / "data")
    texts = [f"a photo of a {c}." for c in CLASSES] + ["What type of object is in this photo?"]
    tiny_tokenizer("bpe", vocab_size=400, texts=texts * 4).save(str(tmp_path / "data" / "tok"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # every path below is relative to another directory
    data = os.path.relpath(tmp_path / "data")
    common = f"folder={data}/train,tokenizer={data}/tok,max_length=96,batch=16"
    trainer.train(own_train.get_config(f"stage=align,steps=150,{common}"), "runs/align")
    trainer.train(
        own_train.get_config(f"stage=instruct,steps=300,init=run:runs/align,{common}"),
        "runs/instruct",
    )

    config = own_eval.get_config(
        f"model=run:runs/instruct,folder={data}/test,train_folder={data}/train"
    )
    summary = runner.evaluate(config, "evals/own")
    ran = json.loads(Path("evals/own/config.json").read_text())["protocols"]["likelihood"]
    assert ran["question"] == "What type of object is in this photo?" and ran["lead_in"] is None
    scores = {
        "likelihood": summary["own"]["likelihood"]["sum/top1"],
        "multiple_choice (letters)": summary["own"]["multiple_choice_letters"]["accuracy"],
        "multiple_choice (cloze)": summary["own"]["multiple_choice_likelihood"]["accuracy"],
        "probe (vision)": summary["own"]["probe_vision_patch_mean"]["accuracy"],
    }
    print("own digits, 5 classes, 50 test images:", json.dumps(scores))
    chance = 1 / len(CLASSES)  # five-way multiple choice over five classes: the same
    assert scores["likelihood"] > chance + 0.2 and scores["multiple_choice (cloze)"] > chance + 0.2
    assert scores["probe (vision)"] > chance + 0.2

    test_image = next(Path(f"{data}/test/three").iterdir())
    (found,) = predict.predict("run:runs/instruct", [test_image], "What type of object is in this photo?",
                               labels=CLASSES, lead_in=None)  # fmt: skip
    assert set(found.label_scores) == set(CLASSES) and found.reply

    export_run("runs/instruct", "hf")
    model, cfg = native.load("runs/instruct/params_export")
    processor = tf.AutoProcessor.from_pretrained("hf")
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(images=Image.open(test_image).convert("RGB"), text=prompt, return_tensors="pt")
    hf_model = tf.LlavaForConditionalGeneration.from_pretrained("hf").eval()
    with torch.no_grad():
        reference = hf_model(**inputs).logits.numpy()
    pixels = jnp.asarray(inputs["pixel_values"].numpy().transpose(0, 2, 3, 1))
    ours = nnx.jit(lambda m, t, p: m(t, p).logits)(model, jnp.asarray(inputs["input_ids"].numpy()), pixels)
    err = float(np.abs(np.asarray(ours) - reference).max() / np.abs(reference).max())
    print(f"own export parity: logits max|diff|/max|ref| = {err:.1e}")
    assert err < 1e-4
