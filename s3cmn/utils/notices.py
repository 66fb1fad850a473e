"""Third-party start-up notices that tell an s3cmn user nothing, dropped by logger and message.

transformers imports torchao whenever it is installed (its quantizer registry does, on the first
``from transformers import PreTrainedModel``), so every start that loads a model pays torchao's import, and
that import logs, whatever backend is chosen:

- ``torchao``: "Failed to load .../_C_mxfp8...so" and ".../_C_cutlass_90a...so" (CUDA kernels of a CPU install);
- ``torchao.kernel.intmm``: "Detected no triton" (triton kernels are GPU-only);
- ``torch.utils._pytree``: "<enum ...> is an Enum subclass ... register_constant() ... deprecated" (torchao
  registers its enums the old way).

Each is matched by its logger and a regular expression of its text; every other record of those loggers
still shows (torchao's int8 backend reports its own errors as exceptions, not through these messages).
"""

from __future__ import annotations

import logging
import re

KNOWN_NOTICES: dict[str, tuple[re.Pattern[str], ...]] = {
    "torchao": (re.compile(r"^Failed to load \S*_C_(mxfp8|cutlass_90a)\S*\.so: "),),
    "torchao.kernel.intmm": (re.compile(r"Detected no triton, on systems without Triton"),),
    "torch.utils._pytree": (
        re.compile(r"^<enum '\w+'> is an Enum subclass and is now natively supported by torch\.compile .*"
                   r"register_constant\(\) on Enum subclasses is deprecated"),
    ),
}


class KnownNoticeFilter(logging.Filter):
    """Drops the records of one logger whose message matches one of ``patterns``."""

    def __init__(self, patterns: tuple[re.Pattern[str], ...]) -> None:
        super().__init__()
        self.patterns = patterns

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(p.search(message) for p in self.patterns)


def drop_known_notices() -> None:
    """Attach the filters of :data:`KNOWN_NOTICES` to their loggers (once; before the libraries are imported)."""
    for name, patterns in KNOWN_NOTICES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, KnownNoticeFilter) for f in logger.filters):
            logger.addFilter(KnownNoticeFilter(patterns))
