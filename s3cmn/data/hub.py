"""Whether the Hugging Face hub may and can be used, decided in milliseconds.

The hub clients retry a failed connection for ~25 s (datasets) to ~50 s (transformers) before giving
up. The data pipeline asks these two questions first so that, with no network, it fails at once
with a message saying how to provide local data instead.
"""

from __future__ import annotations

import logging
import os
import urllib.error
import urllib.request

logger = logging.getLogger(__name__)

_TRUE = {"1", "ON", "YES", "TRUE"}
OFFLINE_ENV_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


def offline_env_set() -> bool:
    """True if the environment asks for offline mode now (read at call time, not at import)."""
    return any(os.environ.get(name, "").upper() in _TRUE for name in OFFLINE_ENV_VARS)


def hub_offline() -> bool:
    """True if offline mode is requested, by the environment now or by ``huggingface_hub`` at its import."""
    from huggingface_hub import constants

    return offline_env_set() or bool(constants.HF_HUB_OFFLINE)


def hub_reachable(timeout: float = 3.0) -> bool:
    """True if the hub endpoint answers an HTTP HEAD within ``timeout`` seconds (any status counts).

    Uses ``urllib`` so the usual proxy variables are honoured; a DNS failure returns at once.
    """
    from huggingface_hub import constants

    request = urllib.request.Request(constants.ENDPOINT, method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True  # the server answered, with an error status: it is reachable
    except (urllib.error.URLError, OSError) as err:
        logger.info("Hugging Face hub %s is not reachable: %s", constants.ENDPOINT, err)
        return False
