"""The fit check: ahead-of-time compilation of the real train step for a target, no weights."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from fgjax import fit
from tests.train import helpers

ROOT = Path(__file__).parents[1]


def test_topology_names():
    assert fit.parse_topology("v5p-64") == fit.Target("v5p", 32, "v5p:2x4x4")
    assert fit.parse_topology("v5p-8") == fit.Target("v5p", 4, "v5p:1x2x2")
    assert fit.parse_topology("v4-32") == fit.Target("v4", 16, "v4:2x2x4")
    assert fit.parse_topology("v5litepod-16") == fit.Target("v5e", 16, "v5e:4x4")
    assert fit.parse_topology("v6e-8") == fit.Target("v6e", 8, "v6e:2x4")
    assert fit.parse_topology("gpu:8") == fit.Target("gpu", 8, None)
    with pytest.raises(ValueError, match="unknown topology"):
        fit.parse_topology("v9-8")
    with pytest.raises(ValueError, match="power of two"):
        fit.parse_topology("v5p-24")
    # whose implementation choices the compiled step takes (models/platform.py)
    platforms = {n: fit.parse_topology(n).platform for n in ("v5p-16", "v6e-8", "gpu:8", "cpu:8")}
    assert platforms == {"v5p-16": "tpu", "v6e-8": "tpu", "gpu:8": "gpu", "cpu:8": "cpu"}


@pytest.fixture(scope="module")
def tiny_config_arg(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fit")
    data = helpers.write_dataset(tmp, num_rows=4)
    config = helpers.tiny_config(data, stage="align_llm", mesh={"fsdp": -1})
    config.model.image_token_id = data["vocab"] - 1
    path = tmp / "config.json"
    path.write_text(config.to_json())
    return f"{ROOT / 'configs' / 'json_file.py'}:{path}"


def run_fit(config_arg: str, topology: str, tmp_path: Path) -> tuple[str, dict]:
    out_json = tmp_path / "fit.json"
    out = subprocess.run(
        [sys.executable, "-m", "fgjax.fit", f"--config={config_arg}", f"--topology={topology}", f"--json_out={out_json}"],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    print(out.stdout)
    return out.stdout, json.loads(out_json.read_text())


def test_fit_on_eight_fake_cpu_devices(tiny_config_arg, tmp_path):
    text, report = run_fit(tiny_config_arg, "cpu:8", tmp_path)
    assert "cpu:8 (8 devices), mesh {'data': 1, 'fsdp': 8, 'tensor': 1}" in text and "FITS" in text
    # the trainable LLM and projector are sharded 8 ways: parameters and Adam moments per device
    assert 0 < report["params_gib"] and 0 < report["optimizer_gib"] < 2 * report["params_gib"]
    assert report["activations_and_temporaries_gib"] > 0 and report["fits"]


@pytest.mark.skipif(
    importlib.util.find_spec("libtpu") is None, reason="the optional `tpu` extra is not installed"
)
def test_fit_on_a_tpu_topology(tiny_config_arg, tmp_path):
    text, report = run_fit(tiny_config_arg, "v5p-16", tmp_path)
    assert "v5p:2x2x2 (8 devices)" in text and report["fits"] and report["capacity_gib"] == 95
