"""The fitted settings of the next-token read-outs, saved beside the checkpoint as ``nexttoken/readout.json``.

Every setting records the text it was fitted on (path and SHA-256, tokens, and a content fingerprint that the
evaluation checks the scored text against, :mod:`.provenance`) and the held-out log-likelihood it reached, so a
report can say where each number came from; settings are never fitted on the scored text.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from s3cmn.nexttoken.provenance import TextFingerprint

FORMAT = "s3cmn-nexttoken-readout"
VERSION = 1
FOLDER = "nexttoken"  # inside the checkpoint folder
SETTINGS_FILE = "readout.json"
DATASTORE_DIR = "datastore"


def _check(owner: str, name: str, ok: bool, allowed: str, value: Any) -> None:
    if not ok:
        raise ValueError(f"{owner}: {name} = {value!r} must be {allowed}")


@dataclass
class CacheSettings:
    """Continuous cache: mixture weight ``lam``, temperature ``temperature`` (squared-L2 units), ``k`` nearest
    of the last ``window`` positions."""

    lam: float = 0.2
    temperature: float = 1.0
    k: int = 64
    window: int = 2048

    def __post_init__(self) -> None:
        _check("CacheSettings", "lam", 0 <= self.lam < 1, "in [0, 1)", self.lam)
        _check("CacheSettings", "temperature", self.temperature > 0, "> 0", self.temperature)
        _check("CacheSettings", "k", self.k >= 1, ">= 1", self.k)
        _check("CacheSettings", "window", self.window >= 1, ">= 1", self.window)


@dataclass
class KnnSettings:
    """kNN datastore: mixture weight ``lam``, ``temperature``, ``k`` neighbours, ``nprobe`` IVF lists."""

    lam: float = 0.2
    temperature: float = 1.0
    k: int = 32
    nprobe: int = 32

    def __post_init__(self) -> None:
        _check("KnnSettings", "lam", 0 <= self.lam < 1, "in [0, 1)", self.lam)
        _check("KnnSettings", "temperature", self.temperature > 0, "> 0", self.temperature)
        _check("KnnSettings", "k", self.k >= 1, ">= 1", self.k)
        _check("KnnSettings", "nprobe", self.nprobe >= 1, ">= 1", self.nprobe)


@dataclass
class ReadoutSettings:
    """What ``s3cmn-memory fit`` found. ``combined``: the two weights (cache, knn) refitted jointly for
    ``cache+knn`` (temperatures, k, window as fitted alone). ``fitted_on``: the held-out text (path, sha256,
    tokens); ``context_length`` / ``stride``: the windows the hidden states were computed with; ``fit``:
    held-out NLL per token of the LM alone and of each mode; ``fingerprint``: the held-out text's content
    (None: fitted without its text, so unchecked)."""

    cache: CacheSettings | None = None
    knn: KnnSettings | None = None
    combined: tuple[float, float] | None = None
    fitted_on: dict[str, Any] = field(default_factory=dict)
    context_length: int = 0
    stride: int = 0
    fit: dict[str, Any] = field(default_factory=dict)
    fingerprint: TextFingerprint | None = None

    def __post_init__(self) -> None:
        if self.combined is not None:
            lc, lk = self.combined
            _check("ReadoutSettings", "combined", 0 <= lc and 0 <= lk and lc + lk < 1,
                   "two weights >= 0 summing to < 1", self.combined)  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["combined"] = list(self.combined) if self.combined is not None else None
        out["fingerprint"] = self.fingerprint.to_dict() if self.fingerprint is not None else None
        return {"format": FORMAT, "version": VERSION, **out}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReadoutSettings:
        if data.get("format") != FORMAT or data.get("version") != VERSION:
            raise ValueError(f"not a {FORMAT} v{VERSION} settings file; refit with `s3cmn-memory fit`")
        body = {k: v for k, v in data.items() if k not in ("format", "version")}
        allowed = set(cls.__dataclass_fields__)
        unknown = set(body) - allowed
        if unknown:
            raise ValueError(f"read-out settings: unknown keys {sorted(unknown)}; allowed {sorted(allowed)}")
        body["cache"] = CacheSettings(**body["cache"]) if body.get("cache") else None
        body["knn"] = KnnSettings(**body["knn"]) if body.get("knn") else None
        body["combined"] = tuple(body["combined"]) if body.get("combined") else None
        body["fingerprint"] = TextFingerprint.from_dict(body["fingerprint"]) if body.get("fingerprint") else None
        return cls(**body)

    def save(self, path: str | os.PathLike) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, p)
        return p

    @classmethod
    def load(cls, path: str | os.PathLike) -> ReadoutSettings:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"{p} not found: fit the read-outs with `s3cmn-memory fit CKPT --text HELDOUT`")
        try:
            return cls.from_dict(json.loads(p.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, TypeError, KeyError) as err:
            raise ValueError(f"{p} is not a valid read-out settings file ({err}); refit it") from err


def settings_path(checkpoint: str | os.PathLike) -> Path:
    return Path(checkpoint) / FOLDER / SETTINGS_FILE


def datastore_path(checkpoint: str | os.PathLike) -> Path:
    return Path(checkpoint) / FOLDER / DATASTORE_DIR
