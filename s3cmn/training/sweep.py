"""Hyperparameter studies on Optuna: each trial is a normal training run scored by validation perplexity.

Validation is the run's own (``s3cmn.data.validation``): a held-out slice of the training text unless an
honest validation text is given, never a test split; ``trials.md`` says which text the trials were scored on.

A study lives in a database (SQLite under the output folder by default, or any URL Optuna accepts, so that
several machines can work on one study) and resumes when the same command is run again: finished trials
are kept and not rerun, and trials left running by a crash are marked failed after a heartbeat grace period.

A search space maps setting names to one of::

    {"low": 1e-4, "high": 3e-3, "log": true}       float (int when both bounds are ints; "step" optional)
    {"choices": ["cosine", "constant"]}             categorical

plus the special ``width_scale`` ({"choices": [0.5, 1.0, 1.5]}), which scales every width of the model.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from s3cmn.settings_file import SECTION_OF, Settings, write_config_file
from s3cmn.utils.fields import ConfigError, unknown_key_error

logger = logging.getLogger(__name__)

WIDTH_FIELDS = ("hidden_dim", "embedding_dim", "liquid_units", "spiking_units", "reservoir_size")


@dataclass
class SweepSpec:
    """The base settings of every trial, the search space, and how the study is run."""

    base: Settings
    space: dict[str, dict[str, Any]]
    n_trials: int = 10
    study_name: str = "s3cmn"
    storage: str | None = None
    sampler: str = "tpe"
    pruner: str = "median"
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def validate_space(space: dict[str, dict[str, Any]]) -> None:
    """Every name is a setting (or width_scale) and every range or choice list is non-empty."""
    if not space:
        raise ConfigError("the search space is empty: give --param NAME=SPEC or a 'space' section")
    for name, spec in space.items():
        if name != "width_scale" and name not in SECTION_OF:
            raise unknown_key_error("search space", name, [*SECTION_OF, "width_scale"])
        if not isinstance(spec, dict):
            raise ConfigError(f"search space '{name}': expected a mapping with low/high or choices, got {spec!r}")
        if "choices" in spec:
            if not spec["choices"]:
                raise ConfigError(f"search space '{name}': the choices list is empty")
        elif "low" in spec and "high" in spec:
            if not spec["low"] < spec["high"]:
                raise ConfigError(f"search space '{name}': empty range, low = {spec['low']} must be < high = "
                                  f"{spec['high']}")
            if spec.get("log") and spec["low"] <= 0:
                raise ConfigError(f"search space '{name}': a log range needs low > 0, got {spec['low']}")
        else:
            raise ConfigError(f"search space '{name}': give either 'choices' or both 'low' and 'high'")


def parse_param(text: str) -> tuple[str, dict[str, Any]]:
    """``name=float:LOW:HIGH``, ``name=log:LOW:HIGH``, ``name=int:LOW:HIGH`` or ``name=choice:A,B,C``."""
    if "=" not in text or ":" not in text:
        raise ConfigError(f"--param {text!r}: expected NAME=KIND:..., e.g. learning_rate=log:1e-4:3e-3")
    name, rest = text.split("=", 1)
    kind, _, values = rest.partition(":")
    try:
        if kind == "choice":
            return name, {"choices": [_scalar(v) for v in values.split(",") if v != ""]}
        low, high = values.split(":")
        if kind == "int":
            return name, {"low": int(low), "high": int(high)}
        if kind in ("float", "log"):
            return name, {"low": float(low), "high": float(high), "log": kind == "log"}
    except ValueError:
        pass
    raise ConfigError(f"--param {text!r}: expected NAME=float|log|int:LOW:HIGH or NAME=choice:A,B,...")


def _scalar(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def suggest(trial: Any, name: str, spec: dict[str, Any]) -> Any:
    if "choices" in spec:
        return trial.suggest_categorical(name, spec["choices"])
    if isinstance(spec["low"], int) and isinstance(spec["high"], int) and not spec.get("log"):
        return trial.suggest_int(name, spec["low"], spec["high"], step=spec.get("step", 1))
    return trial.suggest_float(name, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log")))


def apply_params(base: Settings, params: dict[str, Any]) -> Settings:
    """The base settings with the trial's parameters (width_scale scales every width, kept divisible)."""
    settings = copy.deepcopy(base)
    for name, value in params.items():
        if name != "width_scale":
            settings.update({name: value}, "search space")
    if "width_scale" in params:
        model = settings.build_section("model")
        heads = model.num_attention_heads
        scaled = {}
        for name in WIDTH_FIELDS:
            multiple = heads * 8 // math.gcd(heads, 8) if name == "hidden_dim" else 8
            scaled[name] = max(multiple, round(getattr(model, name) * params["width_scale"] / multiple) * multiple)
        if model.memory_compression_dim > scaled["hidden_dim"]:
            scaled["memory_compression_dim"] = scaled["hidden_dim"]
        settings.update(scaled, "width_scale")
    return settings


def run_sweep(spec: SweepSpec, output_dir: str | Path) -> Any:
    """Create or resume the study and run trials until ``n_trials`` have finished (complete or pruned)."""
    try:
        import optuna
    except ImportError as err:
        raise ImportError("s3cmn-sweep needs Optuna: pip install 's3cmn[sweep]' (or optuna)") from err
    from s3cmn.data import describe_selection, validation_selection
    from s3cmn.training.loop import train

    validate_space(spec.space)
    root = Path(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    url = spec.storage or f"sqlite:///{(root / 'study.db').resolve()}"
    with warnings.catch_warnings():  # the heartbeat is marked experimental; it is what fails stale trials
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = optuna.storages.RDBStorage(url, heartbeat_interval=30, grace_period=90)
    samplers = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=spec.seed),
        "random": lambda: optuna.samplers.RandomSampler(seed=spec.seed),
        "grid": lambda: optuna.samplers.GridSampler({k: v["choices"] for k, v in spec.space.items()}, seed=spec.seed),
    }
    if spec.sampler == "grid" and any("choices" not in v for v in spec.space.values()):
        raise ConfigError("the grid sampler needs 'choices' for every parameter")
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2) if spec.pruner == "median" else optuna.pruners.NopPruner()
    study = optuna.create_study(study_name=spec.study_name, storage=storage, direction="minimize",
                                sampler=samplers[spec.sampler](), pruner=pruner, load_if_exists=True)

    def objective(trial: Any) -> float:
        params = {name: suggest(trial, name, s) for name, s in spec.space.items()}
        settings = apply_params(spec.base, params)
        settings.update({"output_dir": str(root / f"trial_{trial.number:03d}")}, "sweep")
        configs = settings.build()
        trial.set_user_attr("settings", json.dumps(settings.complete().__dict__))
        pruned = {"flag": False}

        def should_stop(step: int, record: dict[str, Any]) -> bool:
            if record:
                trial.report(record["loss"], step)
                pruned["flag"] = trial.should_prune()
            return pruned["flag"]

        result = train(configs.model, configs.training, configs.data, should_stop)
        if result.stopped.startswith("signal"):
            raise KeyboardInterrupt(f"trial {trial.number} interrupted ({result.stopped})")
        trial.set_user_attr("tokens_per_s", result.tokens_per_s)
        trial.set_user_attr("tokens", result.tokens)
        trial.set_user_attr("parameters", _count_parameters(configs.model))
        if pruned["flag"]:
            raise optuna.TrialPruned(f"pruned at step {result.steps}")
        if result.val_loss is None:
            raise ConfigError("the trial ran no validation (no optimiser step finished): raise --max-steps")
        trial.set_user_attr("validation_text", describe_selection(validation_selection(result.output_dir)))
        trial.set_user_attr("val_ppl", math.exp(result.val_loss))
        return math.exp(result.val_loss)

    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    done = len(study.get_trials(deepcopy=False, states=finished))
    remaining = max(0, spec.n_trials - done)
    logger.info("study %s: %d trials finished, running %d more", spec.study_name, done, remaining)
    if remaining:
        study.optimize(objective, callbacks=[optuna.study.MaxTrialsCallback(spec.n_trials, states=finished)],
                       catch=())
    write_results(study, root)
    return study


def _count_parameters(model_config: Any) -> int:
    from s3cmn.modeling.lm import S3CMNForCausalLM

    return sum(p.numel() for p in S3CMNForCausalLM(model_config).parameters())


def trials_table(study: Any) -> str:
    """A Markdown table of every trial: state, parameters, perplexity, tokens/s, parameter count."""
    names = sorted({k for t in study.trials for k in t.params})
    head = ["trial", "state", *names, "val ppl", "tokens/s", "parameters"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in study.trials:
        ppl = t.user_attrs.get("val_ppl")
        attrs = t.user_attrs
        cells = [str(t.number), t.state.name, *[_fmt(t.params.get(n)) for n in names],
                 f"{ppl:.2f}" if ppl else "", _fmt(attrs.get("tokens_per_s")), _fmt(attrs.get("parameters"))]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def write_results(study: Any, root: Path) -> None:
    """trials.md, the best trial's settings as best_config.yaml, and PNG plots when matplotlib is installed."""
    scored_on = sorted({t.user_attrs["validation_text"] for t in study.trials if "validation_text" in t.user_attrs})
    head = "".join(f"Validation text (what each trial's val ppl is measured on): {text}.\n\n" for text in scored_on)
    (root / "trials.md").write_text(head + trials_table(study) + "\n", encoding="utf-8")
    completed = [t for t in study.trials if t.state.name == "COMPLETE"]
    if not completed:
        return
    best = min(completed, key=lambda t: t.value)
    best_settings = Settings(**json.loads(best.user_attrs["settings"]))
    write_config_file(best_settings, root / "best_config.yaml")
    try:
        import matplotlib

        matplotlib.use("Agg")
        from optuna.visualization.matplotlib import plot_optimization_history, plot_param_importances
    except ImportError:
        logger.info("matplotlib is not installed: no plots")
        return
    import matplotlib.pyplot as plt
    from optuna.exceptions import ExperimentalWarning

    warnings.filterwarnings("ignore", category=ExperimentalWarning, module="s3cmn.training.sweep")
    plot_optimization_history(study)
    plt.savefig(root / "optimization_history.png", bbox_inches="tight")
    plt.close("all")
    if len(completed) >= 2 and len(best.params) >= 1:
        try:
            plot_param_importances(study)
        except (ValueError, RuntimeError) as err:  # e.g. a parameter with a single value so far
            logger.info("no parameter-importance plot: %s", err)
        else:
            plt.savefig(root / "param_importances.png", bbox_inches="tight")
        plt.close("all")
