"""The package imports quickly: ``import s3cmn`` loads no heavy optional library and no model code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_import_is_light() -> None:
    heavy = ["faiss", "datasets", "tokenizers", "sklearn", "transformers.modeling_utils", "s3cmn.modeling.lm",
             "bitsandbytes", "matplotlib", "optuna"]
    code = (
        "import sys, s3cmn; "
        f"print(','.join(m for m in {heavy!r} if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "", f"import s3cmn loaded {loaded}"


def test_auto_classes_resolve_after_import(tmp_path) -> None:
    code = (
        "import s3cmn\n"
        "from transformers import AutoConfig, AutoModelForCausalLM\n"
        f"s3cmn.S3CMNForCausalLM(s3cmn.S3CMNConfig.from_preset('tiny', use_memory=False, num_layers=1))"
        f".save_pretrained({str(tmp_path)!r})\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    code = (
        "import s3cmn\n"
        "from transformers import AutoConfig, AutoModelForCausalLM\n"
        f"m = AutoModelForCausalLM.from_pretrained({str(tmp_path)!r})\n"
        f"c = AutoConfig.from_pretrained({str(tmp_path)!r})\n"
        "print(type(m).__name__, type(c).__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.split() == ["S3CMNForCausalLM", "S3CMNConfig"]


def test_a_committed_checkpoint_names_no_module_and_loads_by_model_type() -> None:
    """Checkpoints find their config class through ``model_type`` alone, so moving a settings module (as
    ``s3cmn.config`` -> ``s3cmn.model_config``) leaves every saved checkpoint loadable."""
    from transformers import AutoConfig

    from s3cmn.model_config import S3CMNConfig

    folder = Path(__file__).parent / "modeling" / "data" / "lm-memory-v1"
    saved = json.loads((folder / "config.json").read_text())
    assert "auto_map" not in saved and not any("s3cmn." in str(value) for value in saved.values())
    assert saved["model_type"] == S3CMNConfig.model_type
    loaded = AutoConfig.from_pretrained(folder)
    assert type(loaded) is S3CMNConfig
    # a setting added later keeps what the checkpoint was trained with: no query centring (no buffer to load)
    assert "memory_query_centering" not in saved and loaded.memory_query_centering is False
