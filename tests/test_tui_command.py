"""``ari tui`` as a command: its options and the one-line errors before the console opens."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from ari_console.commands.tui import app
from ari_console.errors import UserError
from tests import sample_campaign as sample


def test_unknown_theme_is_refused_naming_the_themes(tmp_path):
    camp = sample.build(tmp_path, n=5, running=1)
    result = CliRunner().invoke(app, ["--config", str(camp.config.path), "--theme", "pink"])
    assert isinstance(result.exception, UserError)
    assert "ari-dark, ari-light" in str(result.exception)


def test_a_campaign_without_a_database_says_how_to_make_one(tmp_path):
    (tmp_path / "ari.toml").write_text(sample.CONFIG)
    result = CliRunner().invoke(app, ["--config", str(tmp_path / "ari.toml"), "--no-engine"])
    assert isinstance(result.exception, UserError)
    assert "ari datasets import" in str(result.exception)


def test_module_entry_prints_the_mistake_in_one_line_with_exit_2(tmp_path):
    (tmp_path / "ari.toml").write_text(sample.CONFIG)
    proc = subprocess.run([sys.executable, "-m", "ari_console.commands.tui", "--config", str(tmp_path / "ari.toml")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "no campaign database yet" in proc.stderr


@pytest.mark.parametrize("option", ["--theme", "--engine", "--refresh"])
def test_help_lists_the_options(option):
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and option in result.output


def test_ari_tui_without_a_terminal_refuses_and_starts_no_engine(tmp_path):
    """Run from a script or cron (no terminal): one line saying what to use instead, nothing launched."""
    import subprocess
    import sys
    from pathlib import Path

    from ari_console import store
    from tests import sample_campaign as sample

    camp = sample.build(tmp_path, n=10, running=0)
    proc = subprocess.run([str(Path(sys.executable).parent / "ari"), "tui", "-c", str(camp.config.path)],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    assert proc.returncode == 2 and "needs a terminal" in proc.stderr and "ari run" in proc.stderr
    assert "Traceback" not in proc.stderr
    db = store.open_db(camp.db_path)
    assert not store.active_attempts(db), "no data set was launched"
    db.conn.close()


@pytest.mark.parametrize("args, engine", [([], False), (["--engine"], True), (["--no-engine"], False)])
def test_the_console_runs_the_engine_only_when_asked(tmp_path, monkeypatch, args, engine):
    """Opening the console to look must not launch anything: the engine runs only with --engine."""
    import ari_console.tui.launch as launch

    asked = {}
    monkeypatch.setattr(launch, "open_console", lambda path, **kw: asked.update(kw))
    camp = sample.build(tmp_path, n=5, running=0)
    result = CliRunner().invoke(app, ["--config", str(camp.config.path), *args])
    assert result.exit_code == 0, result.output
    assert asked["engine"] is engine
