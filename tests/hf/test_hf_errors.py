"""Bad input to fgjax.hf.load gives clear, specific errors."""

import json
import os
import shutil

import hf_testing as ht
import pytest
import torch
import transformers as tf
from safetensors.torch import load_file, save_file

import fgjax.hf
from fgjax.hf import CheckpointError, CheckpointMismatchError, UnsupportedModelError


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    torch.manual_seed(0)
    config = tf.LlamaConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1,
    )  # fmt: skip
    return ht.save_pretrained(tf.LlamaForCausalLM(config), tmp_path_factory.mktemp("llama"))


@pytest.fixture
def copy(llama_dir, tmp_path):
    """A writable copy of the tiny Llama directory, and its tensors."""
    path = tmp_path / "model"
    shutil.copytree(llama_dir, path)
    return path, load_file(path / "model.safetensors")


def test_nonexistent_directory(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist; pass a Hugging Face model dir"):
        fgjax.hf.load(tmp_path / "no_such_model")


def test_file_instead_of_directory(copy):
    path, _ = copy
    with pytest.raises(CheckpointError, match="is a file; pass the directory"):
        fgjax.hf.load(path / "model.safetensors")


def test_directory_without_config(tmp_path):
    (tmp_path / "weights.txt").write_text("x")
    with pytest.raises(CheckpointError, match=r"no config.json in .*weights.txt"):
        fgjax.hf.load(tmp_path)


def test_directory_without_weights(copy):
    path, _ = copy
    os.remove(path / "model.safetensors")
    (path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"no \*.safetensors weights .*pytorch_model.bin"):
        fgjax.hf.load(path)


def test_truncated_safetensors(copy):
    path, _ = copy
    file = path / "model.safetensors"
    data = file.read_bytes()
    file.write_bytes(data[: len(data) - 1000])
    with pytest.raises(CheckpointError, match=r"model.safetensors: .* truncated or corrupt"):
        fgjax.hf.load(path)


def test_garbage_safetensors(copy):
    path, _ = copy
    (path / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="truncated or corrupt; download it again"):
        fgjax.hf.load(path)


def test_unsupported_architecture(copy):
    path, _ = copy
    ht.edit_config(path, lambda c: {**c, "architectures": ["BertModel"], "model_type": "bert"})
    with pytest.raises(UnsupportedModelError) as error:
        fgjax.hf.load(path)
    message = str(error.value)
    assert "unsupported architecture BertModel" in message
    for supported in ("LlamaForCausalLM", "Dinov2WithRegistersModel", "LlavaForConditional"):
        assert supported in message


def test_unsupported_variant(copy):
    path, _ = copy
    ht.edit_config(path, lambda c: {**c, "rope_parameters": {"rope_type": "yarn", "factor": 4}})
    with pytest.raises(UnsupportedModelError, match="rope_type 'yarn' is not supported"):
        fgjax.hf.load(path)


def test_missing_tensor(copy):
    path, tensors = copy
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, path / "model.safetensors")
    with pytest.raises(CheckpointMismatchError) as error:
        fgjax.hf.load(path)
    message = str(error.value)
    assert "nothing was loaded" in message
    assert "missing from the checkpoint (1)" in message
    assert "model.layers.1.mlp.up_proj.weight  (for fgjax stack/blocks/mlp/up/kernel)" in message


def test_all_problems_in_one_error(copy):
    """Missing, unexpected and mis-shaped tensors are listed together."""
    path, tensors = copy
    del tensors["model.norm.weight"]
    tensors["model.layers.0.self_attn.q_proj.bias"] = torch.zeros(16)
    tensors["model.layers.0.self_attn.k_proj.weight"] = torch.zeros(16, 16)
    save_file(tensors, path / "model.safetensors")
    with pytest.raises(CheckpointMismatchError) as error:
        fgjax.hf.load(path, scan_layers=False)
    message = str(error.value)
    assert "missing from the checkpoint (1):\n    model.norm.weight" in message
    assert "unexpected in the checkpoint (1):\n    model.layers.0.self_attn.q_proj.bias" in message
    assert (
        "shape mismatches (1):\n    model.layers.0.self_attn.k_proj.weight: "
        "checkpoint [16, 16], model [8, 16]"
    ) in message


def test_index_naming_a_missing_shard(copy):
    path, _ = copy
    index = {"weight_map": {"model.norm.weight": "model-00002-of-00002.safetensors"}}
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="shard.* not there: .*model-00002-of-00002"):
        fgjax.hf.load(path)


def test_llava_default_strategy_without_cls():
    config = tf.LlavaConfig(vision_config=tf.SiglipVisionConfig()).to_dict()
    with pytest.raises(UnsupportedModelError, match="drops exactly one token"):
        fgjax.hf.from_hf(config)
