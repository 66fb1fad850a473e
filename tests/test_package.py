"""The package imports quickly: ``import s3cmn`` loads no heavy optional library and no model code."""

from __future__ import annotations

import subprocess
import sys


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
