"""Registration with transformers' Auto classes without importing the model code at ``import s3cmn``.

``PreTrainedModel`` costs seconds to import; ``import s3cmn`` registers this small stand-in instead, which
imports ``S3CMNForCausalLM`` on first use. Importing ``s3cmn.modeling.lm`` replaces the stand-in with the
real class (``AutoModelForCausalLM.register`` there: the model module does not import this one back).
"""

from __future__ import annotations

from typing import Any

from s3cmn.model_config import S3CMNConfig


class LazyS3CMNForCausalLM:
    """What ``AutoModelForCausalLM`` finds for an ``S3CMNConfig`` until the model module is imported."""

    config_class = S3CMNConfig

    @staticmethod
    def _real() -> type:
        from s3cmn.modeling.lm import S3CMNForCausalLM

        return S3CMNForCausalLM

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> Any:
        return cls._real().from_pretrained(*args, **kwargs)

    @classmethod
    def _from_config(cls, config: S3CMNConfig, **kwargs: Any) -> Any:
        return cls._real()._from_config(config, **kwargs)

    @classmethod
    def from_config(cls, config: S3CMNConfig, **kwargs: Any) -> Any:
        return cls._real()._from_config(config, **kwargs)


def register_auto_classes() -> None:
    """Make ``AutoConfig`` / ``AutoModelForCausalLM`` resolve ``model_type = "s3cmn"`` (to the stand-in)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    AutoConfig.register(S3CMNConfig.model_type, S3CMNConfig, exist_ok=True)
    AutoModelForCausalLM.register(S3CMNConfig, LazyS3CMNForCausalLM, exist_ok=True)
