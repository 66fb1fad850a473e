"""Every setting of one run, by section, and the settings files that hold them.

A settings file is JSON or YAML with one section per settings class::

    {"model": {...S3CMNConfig fields...}, "training": {...}, "data": {...}, "evaluation": {...}, "task": {...}}

A flat mapping of field names is accepted too (each name belongs to exactly one section). The sections are
the fields of :class:`Settings`, each naming its config class: adding a section is one line there.
The command-line side (flags, presets, prompts) lives in :mod:`s3cmn.cli.arguments`.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s3cmn.model_config import S3CMNConfig
from s3cmn.run_config import DataConfig, EvalConfig, TaskConfig, TrainingConfig
from s3cmn.utils.fields import ConfigError, settings_fields, unknown_key_error


def _section(config_class: type) -> Any:
    """A :class:`Settings` field: the given values of one section, validated by ``config_class``."""
    return dataclasses.field(default_factory=dict, metadata={"config_class": config_class})


@dataclass
class Settings:
    """Every setting of one run, by section (plain values as given); :meth:`build` validates them."""

    model: dict[str, Any] = _section(S3CMNConfig)
    training: dict[str, Any] = _section(TrainingConfig)
    data: dict[str, Any] = _section(DataConfig)
    evaluation: dict[str, Any] = _section(EvalConfig)
    task: dict[str, Any] = _section(TaskConfig)

    def update(self, values: dict[str, Any], source: str) -> None:
        """Merge a sectioned or flat mapping; an unknown key is an error naming the closest valid key."""
        for key, value in values.items():
            if key in SECTIONS and isinstance(value, dict):
                for k, v in value.items():
                    if SECTION_OF.get(k) != key:
                        raise unknown_key_error(f"{source} [{key}]", k, [n for n, s in SECTION_OF.items() if s == key])
                    getattr(self, key)[k] = v
                continue
            section = SECTION_OF.get(key)
            if section is None:
                raise unknown_key_error(source, key, SECTION_OF)
            getattr(self, section)[key] = value

    def build(self) -> Any:
        """The validated config object of every section, as a :data:`Configs` (``configs.training``).

        Errors name the field, the value and what is allowed.
        """
        return Configs(**{name: self.build_section(name) for name in SECTIONS})

    def build_section(self, name: str) -> Any:
        """The validated config object of one section (``S3CMNConfig`` for "model", ...)."""
        return SECTIONS[name](**getattr(self, name))

    def complete(self) -> Settings:
        """Every field of every section, defaults included (what a saved file holds)."""
        return Settings.from_configs(self.build())

    def copy(self) -> Settings:
        return Settings(**{name: dict(getattr(self, name)) for name in SECTIONS})

    @staticmethod
    def from_configs(configs: Any) -> Settings:
        """The settings of built config objects (a :data:`Configs`, or any object with one per section)."""
        return Settings(**{name: config_values(getattr(configs, name)) for name in SECTIONS})


# section name -> its config class, in the order of the Settings fields (the one place they are listed)
SECTIONS: dict[str, type] = {f.name: f.metadata["config_class"] for f in dataclasses.fields(Settings)}
# the built config objects of every section, by section name (``configs.model``, ``configs.training``, ...)
Configs = collections.namedtuple("Configs", list(SECTIONS))


def config_values(config: Any) -> dict[str, Any]:
    """The setting values of a built config object (its :func:`~s3cmn.utils.fields.setting` fields)."""
    return {f.name: copy.deepcopy(getattr(config, f.name)) for f in settings_fields(type(config))}


def _section_of() -> dict[str, str]:
    owners: dict[str, str] = {}
    for section, cls in SECTIONS.items():
        for f in settings_fields(cls):
            if f.name in owners:  # the flat namespace must stay unambiguous
                raise RuntimeError(f"setting {f.name} is declared in both {owners[f.name]} and {section}")
            owners[f.name] = section
    return owners


# setting name -> its section (the names are unique across sections, so a flat mapping is unambiguous)
SECTION_OF = _section_of()


# --------------------------------------------------------------------------------------------------
# files


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """A JSON or YAML settings file as a mapping (clear errors for missing, unreadable or malformed files)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file {p} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    values = _parse_yaml(p, text) if p.suffix.lower() in (".yaml", ".yml") else _parse_json(p, text)
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"config file {p} must hold a mapping of settings, not {type(values).__name__}")
    return values


def _parse_json(path: Path, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        kind = path.suffix.lstrip(".").upper() or "JSON"
        raise ConfigError(f"config file {path} is not valid {kind}: {err}") from None


def _parse_yaml(path: Path, text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from None


def write_config_file(settings: Settings, path: str | os.PathLike) -> None:
    """Write every setting (sectioned, defaults included) as JSON or YAML by extension, atomically."""
    p = Path(path)
    data = dataclasses.asdict(settings.complete())
    if p.suffix.lower() in (".yaml", ".yml"):
        import yaml

        text = yaml.safe_dump(data, sort_keys=False)
    else:
        text = json.dumps(data, indent=2) + "\n"
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, p)
