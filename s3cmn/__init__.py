"""s3cmn: the S³CMN memory-augmented language model (Hyena, S4D/Mamba, LIF spiking, FAISS memory).

``import s3cmn`` registers ``S3CMNConfig`` and ``S3CMNForCausalLM`` with transformers' ``AutoConfig`` and
``AutoModelForCausalLM``. FAISS, datasets, tokenizers and the other heavy optional libraries are imported
only by the functions that need them.
"""

from __future__ import annotations

from transformers import AutoConfig, AutoModelForCausalLM

from s3cmn.config import PRESETS, ConfigError, DataConfig, EvalConfig, S3CMNConfig, TrainingConfig
from s3cmn.modeling.lm import S3CMNForCausalLM, S3CMNModel

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

AutoConfig.register(S3CMNConfig.model_type, S3CMNConfig, exist_ok=True)
AutoModelForCausalLM.register(S3CMNConfig, S3CMNForCausalLM, exist_ok=True)
