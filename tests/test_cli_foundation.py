"""The `ari` command as an operator types it: init, import, list, status, and one-line errors.

Behaviour runs in process (typer's CliRunner); the installed `ari` runs as a process only for what
only the entry point does: a user mistake is one line on stderr and exit 2, and the fast
`ari status --json` path.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from ari_console.cli import app

ARI = str(Path(sys.executable).parent / "ari")


def invoke(*args: str):
    """``ari ARGS`` in this process; the result must be a success."""
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    assert result.exit_code == 0, (args, result.output, result.exception)
    return result


def ari(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([ARI, *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200"})


def test_init_import_list_and_status_round_trip(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    invoke("init")
    (tmp_path / "cat.csv").write_text(
        "uid,project,array,band,size_gb\n"
        "uid___A001_X1296_X1d3,2016.1.00123.S,12m,6,12.5\n"
        "uid://A001/X1296/X1d5,2016.1.00123.S,7m,3,2\n"
    )
    dry = json.loads(invoke("datasets", "import", "cat.csv", "--dry-run", "--json").stdout)
    assert {k: dry[k] for k in ("dry_run", "datasets", "new", "size_gb", "excluded")} == {
        "dry_run": True, "datasets": 2, "new": 2, "size_gb": 14.5, "excluded": {}}
    assert [(m["uid"], m["new"]) for m in dry["mous"]] == [("uid://A001/X1296/X1d3", True),
                                                            ("uid://A001/X1296/X1d5", True)]  # which MOUS, not only how many
    first = json.loads(invoke("datasets", "import", "cat.csv", "--json").stdout)
    assert (first["added"], first["unchanged"]) == (2, 0)
    again = json.loads(invoke("datasets", "import", "cat.csv", "--json").stdout)
    assert (again["added"], again["unchanged"]) == (0, 2)
    listed = json.loads(invoke("datasets", "list", "--json").stdout)
    assert [(d["uid"], d["array"], d["band"], d["state"]) for d in listed] == [
        ("uid://A001/X1296/X1d3", "12m", 6, "queued"), ("uid://A001/X1296/X1d5", "7m", 3, "queued")]
    nodes = json.loads(invoke("nodes", "list", "--json").stdout)
    assert [(n["name"], n["transport"], n["batch"], n["running"]) for n in nodes] == [("local", "local", "none", 0)]
    st = json.loads(invoke("status", "--json").stdout)
    assert st["datasets"] == 2 and st["totals"]["queued"] == 2 and st["running"] == []
    assert [n["name"] for n in st["nodes"]] == ["local"]
    human = invoke("status")
    assert "queued 2" in human.stdout


def test_malformed_uid_in_csv_is_one_line_without_traceback_and_imports_nothing(tmp_path):
    ari("init", cwd=tmp_path)
    (tmp_path / "bad.csv").write_text(
        "uid,project\nuid://A001/X1296/X1d3,2016.1.00123.S\nuid://A001/X1296,2016.1.00123.S\n")
    proc = ari("datasets", "import", "bad.csv", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ('ari: bad.csv: line 3: uid "uid://A001/X1296" is not valid — '
                                   "write a MOUS uid like uid://A001/X1296/X1d3")
    assert "Traceback" not in proc.stderr + proc.stdout
    assert json.loads(ari("datasets", "list", "--json", cwd=tmp_path).stdout) == []


def test_config_with_slots_as_a_word_names_node_and_key(tmp_path):
    (tmp_path / "ari.toml").write_text('[[node]]\nname = "mup03"\nslots = "two"\n')
    proc = ari("status", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == 'ari: ari.toml: node "mup03": slots must be a whole number, got "two" — write 2'
    assert "Traceback" not in proc.stderr


def test_commands_without_a_config_say_how_to_start(tmp_path):
    proc = ari("datasets", "list", cwd=tmp_path)
    assert proc.returncode == 2
    assert "ari.toml: no such file — run `ari init`" in proc.stderr
    assert ari("init", cwd=tmp_path).returncode == 0
    again = ari("init", cwd=tmp_path)
    assert again.returncode == 2 and "already exists" in again.stderr


def test_config_reference_lists_every_key():
    rows = json.loads(invoke("config", "reference", "--json").stdout)
    keys = {(r["table"], r["key"]) for r in rows}
    assert ("[[node]]", "walltime_h") in keys and ("[campaign]", "archive_url") in keys
    assert all(r["help"] for r in rows)


def test_the_fast_status_path_prints_what_the_full_cli_prints(tmp_path):
    ari("init", cwd=tmp_path)
    (tmp_path / "c.csv").write_text("uid,project\nuid://A001/X1/X1,2016.1.00123.S\n")
    ari("datasets", "import", "c.csv", cwd=tmp_path)
    fast = ari("status", "--json", cwd=tmp_path)
    full = subprocess.run([sys.executable, "-m", "ari_console.cli", "status", "--json"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert fast.returncode == full.returncode == 0
    assert json.loads(fast.stdout) == json.loads(full.stdout)
    missing = ari("-c", "nowhere/ari.toml", "status", "--json", cwd=tmp_path)
    assert missing.returncode == 2 and "nowhere/ari.toml: no such file" in missing.stderr


def test_the_fast_status_path_loads_neither_typer_rich_nor_network_code_with_config_after_the_subcommand(tmp_path):
    ari("init", cwd=tmp_path)
    probe = ("import sys; from ari_console.entry import main; sys.argv = ['ari', 'status', '-c', 'ari.toml', '--json']\n"
             "main(); sys.stderr.write(' '.join(m for m in ('typer', 'rich', 'click', 'urllib.request') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["datasets"] == 0 and proc.stderr == ""
