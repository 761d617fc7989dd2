"""The `ari` command tree as Typer's docs lay it out: options anywhere, one campaign per command line, a version."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from ari_console import __version__
from ari_console.cli import app
from ari_console.entry import fast_status_argv


def _campaign(tmp_path, name):
    directory = tmp_path / name
    assert CliRunner().invoke(app, ["init", str(directory), "--name", name]).exit_code == 0
    (tmp_path / f"{name}.csv").write_text("uid,project\nuid://A001/X1/X1,2016.1.00123.S\n")
    imported = CliRunner().invoke(app, ["-c", str(directory / "ari.toml"), "datasets", "import",
                                        str(tmp_path / f"{name}.csv"), "--json"])
    assert imported.exit_code == 0, imported.output
    return directory / "ari.toml"


def test_config_and_json_work_before_and_after_the_subcommand(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./ari.toml here: only -c can name the campaign
    config = _campaign(tmp_path, "alpha")
    before = CliRunner().invoke(app, ["-c", str(config), "status", "--json"])
    after = CliRunner().invoke(app, ["status", "-c", str(config), "--json"])
    assert before.exit_code == after.exit_code == 0
    assert json.loads(before.stdout)["campaign"] == json.loads(after.stdout)["campaign"] == "alpha"


def test_the_subcommands_config_wins_over_the_roots(tmp_path):
    alpha, beta = _campaign(tmp_path, "alpha"), _campaign(tmp_path, "beta")
    result = CliRunner().invoke(app, ["-c", str(alpha), "config", "check", "-c", str(beta), "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["campaign"] == "beta"


def test_ari_config_environment_names_the_campaign_when_no_option_does(tmp_path, monkeypatch):
    config = _campaign(tmp_path, "gamma")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ARI_CONFIG", str(config))
    result = CliRunner().invoke(app, ["datasets", "list", "--json"])
    assert result.exit_code == 0 and [d["uid"] for d in json.loads(result.stdout)] == ["uid://A001/X1/X1"]


def test_version_prints_the_package_version():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"ari {__version__}"


def test_flags_show_no_value_placeholder_in_help():
    help_text = CliRunner().invoke(app, ["datasets", "import", "--help"], env={"COLUMNS": "200"}).stdout
    for line in help_text.splitlines():
        if "--json" in line or "--dry-run" in line:
            assert "<bool>" not in line, line


def test_the_fast_status_path_takes_the_same_command_lines_as_the_full_cli():
    assert fast_status_argv(["status", "-c", "a.toml", "--json"]).name == "a.toml"
    assert fast_status_argv(["-c", "a.toml", "status", "--json", "--config", "b.toml"]).name == "b.toml"
    assert fast_status_argv(["status", "--json", "--verbose"]) is None
    assert fast_status_argv(["status", "-c", "a.toml"]) is None
