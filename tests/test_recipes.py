"""The real-scale recipes (configs/llava15.py, configs/finetune_vlm.py): every encoder, LLM and
whole VLM they offer resolves to a valid model config with its chat template, HF directories and
real parameter count, without weights (jax.eval_shape)."""

import importlib.util
from pathlib import Path

import pytest

from fgjax.data.templates import get_template
from fgjax.models import param_count
from fgjax.train import tasks

CONFIGS = Path(__file__).parents[1] / "configs"


def recipe(name: str):
    spec = importlib.util.spec_from_file_location(name, CONFIGS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


LLAVA15, FINETUNE_VLM = recipe("llava15"), recipe("finetune_vlm")
# parameter counts of the decoders at real size, as transformers counts them
# (tests/hf/test_hf_param_counts.py checks the presets against transformers)
LLM_PARAMS = {"qwen25_7b": 7_615_616_512, "qwen3_8b": 8_190_735_360, "gemma2_9b": 9_241_705_984,
              "gemma3_1b": 999_885_952}  # fmt: skip
FAMILIES = {"vicuna7b": "llama", "llama3_8b": "llama", "qwen2_7b": "qwen2", "qwen25_7b": "qwen2",
            "qwen3_8b": "qwen3", "gemma2b": "gemma", "gemma2_9b": "gemma2", "gemma3_1b": "gemma3"}  # fmt: skip


@pytest.mark.parametrize("llm", list(LLAVA15.DECODER_PRESETS))
def test_every_llm_builds_with_its_template(llm):
    config = LLAVA15.get_config(f"stage=finetune,llm={llm}")
    model = tasks.VlmTask().model_config(config)
    get_template(config.data.template)
    assert config.data.tokenizer.endswith(LLAVA15.HF_NAMES[llm])
    if llm in LLM_PARAMS:
        assert param_count(model.decoder) == LLM_PARAMS[llm]
    assert model.decoder.family == FAMILIES[llm]


@pytest.mark.parametrize("encoder", LLAVA15.ENCODERS)
def test_every_encoder_builds_and_loads_from_its_directory(encoder):
    config = LLAVA15.get_config(f"stage=pretrain,encoder={encoder},llm=qwen3_8b")
    model = tasks.VlmTask().model_config(config)
    assert model.num_image_tokens > 0
    names = LLAVA15.HF_NAMES[encoder]
    for name in names if isinstance(names, tuple) else (names,):
        assert any(path.endswith(name) for path in config.init.values())


def test_unknown_choices_name_the_options():
    with pytest.raises(ValueError, match="qwen3_8b"):
        LLAVA15.get_config("llm=qwen9")
    with pytest.raises(ValueError, match="dinov3_l16"):
        LLAVA15.get_config("encoder=dinov9")


def test_loss_tokens_puts_the_lm_head_at_the_loss_positions_only():
    assert "loss_tokens_per_row" not in LLAVA15.get_config("llm=gemma2_9b")
    assert LLAVA15.get_config("llm=gemma2_9b,loss_tokens=64").loss_tokens_per_row == 64


# as transformers counts them (tests/hf/test_hf_gemma3_vlm.py, test_hf_paligemma.py,
# test_hf_qwen25_vl.py, test_hf_internvl.py)
VLM_PARAMS = {"gemma3_4b": 4_300_079_472, "gemma3_12b": 12_187_325_040,
              "paligemma2_224": 3_032_242_416, "qwen25vl_3b": 3_754_622_976,
              "qwen25vl_7b": 8_292_166_656, "internvl3_1b": 938_193_024,
              "internvl3_8b": 7_944_373_760}  # fmt: skip


@pytest.mark.parametrize("vlm", list(FINETUNE_VLM.HF_NAMES))
def test_every_whole_vlm_builds_with_its_template_and_checkpoint(vlm):
    config = FINETUNE_VLM.get_config(f"vlm={vlm}")
    model = tasks.VlmTask().model_config(config)
    get_template(config.data.template)
    assert config.init["vlm"].endswith(FINETUNE_VLM.HF_NAMES[vlm])
    assert model.decoder.remat == "full" and model.decoder.dtype == "bfloat16"
    if vlm in VLM_PARAMS:
        assert param_count(model) == VLM_PARAMS[vlm]
    with pytest.raises(ValueError, match="gemma3_12b"):
        FINETUNE_VLM.get_config("vlm=gemma9")
