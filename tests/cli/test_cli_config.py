"""s3cmn-config: presets, files, precedence, interactive editing, --help, clear errors."""

from __future__ import annotations

import io
import json

import pytest

from s3cmn.cli import config as config_cli
from s3cmn.cli.arguments import interactive_edit
from s3cmn.settings_file import SECTIONS, Settings
from s3cmn.utils.fields import settings_fields


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = config_cli.main(argv)
    except SystemExit as exit_:
        code = exit_.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_preset_save_load_modify_round_trip(tmp_path, capsys, suffix: str) -> None:
    first, second = tmp_path / f"c{suffix}", tmp_path / f"d{suffix}"
    assert run(["--preset", "demo", "--save-config", str(first)], capsys)[0] == 0
    assert run(["--config-path", str(first), "--modify", '{"hidden_dim": 96}', "--save-config", str(second)],
               capsys)[0] == 0
    code, out, _ = run(["--config-path", str(second)], capsys)
    shown = json.loads(out)
    code_a, out_a, _ = run(["--preset", "demo"], capsys)
    expected = json.loads(out_a)
    expected["model"]["hidden_dim"] = 96
    assert code == 0 and shown == expected  # every field round-trips exactly
    for section, cls in SECTIONS.items():
        assert set(shown[section]) == {f.name for f in settings_fields(cls)}


def test_precedence_preset_file_modify_flags(tmp_path, capsys) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"model": {"hidden_dim": 96, "num_layers": 5, "beta": 0.5}}))
    code, out, _ = run(["--preset", "demo", "--config-path", str(path), "--modify",
                        '{"num_layers": 7, "beta": 0.6}', "--beta", "0.7"], capsys)
    model = json.loads(out)["model"]
    assert code == 0
    assert model["liquid_units"] == 96  # preset
    assert model["hidden_dim"] == 96  # file over preset (demo says 192)
    assert model["num_layers"] == 7  # --modify over file
    assert model["beta"] == 0.7  # flag over --modify


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--hiden-dim", "3"], "did you mean --hidden-dim"),
        (["--beta", "2"], "beta = 2.0 is out of range"),
        (["--modify", '{"betta": 0.5}'], "did you mean 'beta'"),
        (["--modify", "{not json"], "--modify is not valid JSON"),
        (["--hidden-dim", "abc"], "invalid literal"),
        (["--config-path", "/nonexistent/c.json"], "does not exist"),
        (["validate"], "validate needs --config-path"),
    ],
)
def test_bad_input_exits_with_one_line(capsys, argv: list[str], message: str) -> None:
    code, _, err = run(argv, capsys)
    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_corrupt_config_file(tmp_path, capsys) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("model: [unclosed\n")
    code, _, err = run(["validate", "--config-path", str(path)], capsys)
    assert code == 2 and "not valid YAML" in err
    good = tmp_path / "g.json"
    good.write_text('{"model": {"num_layers": 3}}')
    code, out, _ = run(["validate", "--config-path", str(good)], capsys)
    assert code == 0 and "valid" in out


def test_help_lists_every_field_in_groups(capsys) -> None:
    code, out, _ = run(["--help"], capsys)
    assert code == 0
    for cls in SECTIONS.values():
        for f in settings_fields(cls):
            assert "--" + f.name.replace("_", "-") in out
    for group in ("architecture settings", "spiking settings", "memory settings", "training settings"):
        assert group in out


def test_interactive_walks_fields_and_reasks_bad_answers() -> None:
    # keep vocab_size and embedding_dim, set hidden_dim 96, reject "abc" then "-3" for num_layers, accept 2.
    answers = io.StringIO("\n\n96\nabc\n-3\n2\n")
    out = io.StringIO()
    settings = Settings()
    settings.update({"num_layers": 4}, "test")
    result = interactive_edit(settings, ("model",), stdin=answers, stdout=out)
    model = result.build().model
    assert (model.hidden_dim, model.num_layers) == (96, 2)
    text = out.getvalue()
    assert text.count("not accepted") == 2 and "num_layers = -3 is out of range" in text


def test_interactive_through_the_cli(monkeypatch, capsys, tmp_path) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("\n\n96\n"))
    path = tmp_path / "c.json"
    code, _, _ = run(["--preset", "demo", "--interactive", "--save-config", str(path)], capsys)
    assert code == 0
    assert json.loads(path.read_text())["model"]["hidden_dim"] == 96


def test_settings_sections_are_its_fields_and_build_by_name() -> None:
    from s3cmn.utils.fields import GROUPS, setting

    settings = Settings()
    settings.update({"hidden_dim": 96, "training": {"learning_rate": 1e-3}}, "test")
    configs = settings.build()
    assert configs._fields == tuple(SECTIONS) == tuple(f for f in Settings.__dataclass_fields__)
    assert (configs.model.hidden_dim, configs.training.learning_rate) == (96, 1e-3)
    assert settings.build_section("training") == configs.training
    assert Settings.from_configs(configs).model["hidden_dim"] == 96
    with pytest.raises(ValueError, match="setting group 'archtecture' is not one of"):
        setting(1, group="archtecture", help="a typo in a group name fails where it is declared")
    assert {f.metadata["group"] for cls in SECTIONS.values() for f in settings_fields(cls)} <= set(GROUPS)


def test_comma_lists_parse_as_the_fields_item_type() -> None:
    from s3cmn.cli.arguments import parse_value

    assert parse_value("32,64,128", list[int]) == [32, 64, 128]
    assert parse_value("mamba,hyena,lif,mlp", list[str] | None) == ["mamba", "hyena", "lif", "mlp"]
    assert parse_value('["mamba", "mlp"]', list[str] | None) == ["mamba", "mlp"]  # JSON still works
    with pytest.raises(ValueError):
        parse_value("a,b", list[int])
