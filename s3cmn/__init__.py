"""s3cmn: the S³CMN memory-augmented language model (Hyena, S4D/Mamba, LIF spiking, FAISS memory).

``import s3cmn`` registers ``S3CMNConfig`` and ``S3CMNForCausalLM`` with transformers' ``AutoConfig`` and
``AutoModelForCausalLM``. The model code, FAISS, datasets, tokenizers and the other heavy libraries are
imported only when first used, so the import stays quick.
"""

from __future__ import annotations

from typing import Any

from s3cmn.utils.notices import drop_known_notices

drop_known_notices()  # before transformers (and, through it, torchao) is imported: s3cmn.utils.notices

from s3cmn.model_config import S3CMNConfig  # noqa: E402
from s3cmn.modeling.auto import register_auto_classes  # noqa: E402
from s3cmn.presets import PRESETS  # noqa: E402
from s3cmn.run_config import DataConfig, EvalConfig, TrainingConfig  # noqa: E402
from s3cmn.utils.fields import ConfigError  # noqa: E402

__version__ = "0.1.0"
__all__ = [
    "S3CMNConfig",
    "S3CMNForCausalLM",
    "S3CMNModel",
    "TrainingConfig",
    "DataConfig",
    "EvalConfig",
    "ConfigError",
    "PRESETS",
    "__version__",
]

register_auto_classes()


def __getattr__(name: str) -> Any:
    if name in ("S3CMNForCausalLM", "S3CMNModel"):
        from s3cmn.modeling import lm

        return getattr(lm, name)
    raise AttributeError(f"module 's3cmn' has no attribute {name!r}")
