"""lm-evaluation-harness model ``s3cmn``: ``HFLM`` with the settings an S3CMN checkpoint needs.

Plain ``--model hf --model_args pretrained=PATH`` works after ``import s3cmn`` (the auto classes are
registered; the checkpoint's tokenizer adds no special tokens; ``max_length`` is the trained sequence
length). The ``s3cmn`` model adds what ``hf`` cannot do for a recurrent model:

- the tokenizer is loaded with :func:`s3cmn.data.load_tokenizer`, so a checkpoint saved before the
  tokenizer fix (a BERT template adding ``[CLS]``/``[SEP]``) scores correctly too;
- ``add_bos_token`` is False (S3CMN models are trained without a bos; the rolling prefix is the eos);
- ``generate_until`` with ``batch_size > 1``: prompts of different lengths are left-padded by the
  harness, which the recurrences cannot skip, so a padded batch is generated row by row.

Run it with ``python -m s3cmn.integrations.lm_eval`` (lm-eval's own CLI, with this model registered)::

    python -m s3cmn.integrations.lm_eval run --model s3cmn --model_args pretrained=runs/tiny/best \\
        --tasks wikitext_local --include_path $(python -c "import s3cmn.integrations as i; print(i.TASKS_DIR)") \\
        --metadata '{"data_dir": "../shared/data/wikitext-2-raw"}'
"""

from __future__ import annotations

from typing import Any

import torch
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM

import s3cmn  # noqa: F401  (registers S3CMNConfig / S3CMNForCausalLM with the transformers auto classes)


@register_model("s3cmn")
class S3CMNLM(HFLM):
    """``HFLM`` for S3CMN checkpoints (module docstring); every ``HFLM`` argument is accepted."""

    def __init__(self, pretrained: Any = None, tokenizer: Any = None, add_bos_token: bool | None = False,
                 **kwargs: Any) -> None:
        if isinstance(pretrained, str) and tokenizer is None:
            from s3cmn.data import load_tokenizer

            tokenizer = load_tokenizer(pretrained)
        super().__init__(pretrained=pretrained, tokenizer=tokenizer, add_bos_token=add_bos_token, **kwargs)

    def _model_generate(self, context: torch.Tensor, max_length: int, stop: list[str], **generation_kwargs: Any
                        ) -> torch.Tensor:
        """``HFLM._model_generate``; a left-padded batch is generated one row at a time and re-padded."""
        mask = generation_kwargs.pop("attention_mask", None)
        if mask is None or bool(mask.all()):
            return super()._model_generate(context, max_length, stop, attention_mask=mask, **generation_kwargs)
        B, T = context.shape
        rows = []
        for i in range(B):
            real = mask[i].bool()  # (T,) left padding: False then True
            ids = context[i : i + 1, real]  # (1, t)
            pad = T - ids.shape[1]
            out = super()._model_generate(ids, max_length - pad, stop, attention_mask=mask[i : i + 1, real],
                                          **dict(generation_kwargs))
            rows.append(out[0, ids.shape[1] :])  # the new tokens
        width = max(r.numel() for r in rows)
        pad_id = self.tokenizer.pad_token_id
        new = torch.full((B, width), pad_id, dtype=context.dtype, device=context.device)  # (B, W) right-padded
        for i, r in enumerate(rows):
            new[i, : r.numel()] = r
        return torch.cat([context, new], dim=1)  # (B, T + W): what the harness slices after T


def main() -> None:
    """lm-eval's command line, with the ``s3cmn`` model registered."""
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()


if __name__ == "__main__":
    main()
