"""The operator's day on the command line: import previews that match the import, completion of
uids and node names, plans that name what can never run, one way to read sizes and durations."""

import json
from pathlib import Path

from typer.testing import CliRunner

from ari_console.cli import app
from ari_console.errors import UserError


def run(*args: str):
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    assert result.exit_code == 0, (args, result.output, result.exception)
    return result


def refused(*args: str) -> str:
    """The one-line message of a user mistake (`ari` prints it and exits 2)."""
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    assert isinstance(result.exception, UserError), (args, result.output, result.exception)
    return str(result.exception)


CATALOGUE = ("uid,project,array,band,size_gb\n"
             "uid://A001/X1296/X1d3,2016.1.00123.S,12m,6,12.5\n"
             "uid://A001/X1296/X1d5,2016.1.00123.S,7m,3,2\n")


def test_a_dry_run_counts_what_the_import_then_does_new_updated_and_unchanged(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run("init")
    Path("first.csv").write_text(CATALOGUE)
    run("datasets", "import", "first.csv")
    # one row as before, one with a new size, two new MOUS
    Path("second.csv").write_text("uid,project,array,band,size_gb\n"
                                  "uid://A001/X1296/X1d3,2016.1.00123.S,12m,6,12.5\n"
                                  "uid://A001/X1296/X1d5,2016.1.00123.S,7m,3,3\n"
                                  "uid://A001/X1296/X1d7,2016.1.00123.S,7m,3,1\n"
                                  "uid://A001/X1296/X1d9,2016.1.00123.S,12m,7,4\n")
    dry = json.loads(run("datasets", "import", "second.csv", "--dry-run", "--json").stdout)
    assert json.loads(run("datasets", "list", "--json").stdout)[1]["size_gb"] == 2  # the dry run wrote nothing
    real = json.loads(run("datasets", "import", "second.csv", "--json").stdout)
    counts = ("added", "updated", "unchanged")
    assert [dry[k] for k in counts] == [real[k] for k in counts] == [2, 1, 1]
    assert [m["uid"] for m in dry["mous"] if m["new"]] == ["uid://A001/X1296/X1d7", "uid://A001/X1296/X1d9"]
    assert [m["uid"] for m in dry["mous"] if m["updated"]] == ["uid://A001/X1296/X1d5"]
    text = run("datasets", "import", "second.csv", "--dry-run").stdout
    assert "0 would be added, 0 would be updated, 4 would stay unchanged" in text


def test_a_dry_run_and_the_import_reject_the_same_bad_and_duplicate_rows_naming_each(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run("init")
    Path("bad.csv").write_text(CATALOGUE + "uid://A001/X1296,2016.1.00123.S,12m,6,1\n"
                               "uid://A001/X1296/X1d3,2016.1.00123.S,12m,6,12.5\n")
    message = refused("datasets", "import", "bad.csv", "--json")
    assert refused("datasets", "import", "bad.csv", "--dry-run", "--json") == message
    assert 'line 4: uid "uid://A001/X1296" is not valid' in message
    assert "line 5: uid://A001/X1296/X1d3 is already on line 2 — keep one row per MOUS" in message
    assert "2 rows rejected, nothing imported" in message
    assert json.loads(run("datasets", "list", "--json").stdout) == []
    Path("bad.csv").write_text(CATALOGUE)  # fixed: the preview and the import agree again
    dry = json.loads(run("datasets", "import", "bad.csv", "--dry-run", "--json").stdout)
    real = json.loads(run("datasets", "import", "bad.csv", "--json").stdout)
    assert (dry["added"], dry["new"], real["added"]) == (2, 2, 2)


def completions(args: list[str], incomplete: str) -> list[str]:
    """What bash offers for ``ari ARGS INCOMPLETE<TAB>``: the completion protocol the installed script speaks
    (``_ARI_COMPLETE``, ``COMP_WORDS``, ``COMP_CWORD``), answered in process; nothing on stderr."""
    words = ["ari", *args, incomplete]
    result = CliRunner().invoke(app, [], prog_name="ari", env={
        "_ARI_COMPLETE": "complete_bash", "COMP_WORDS": " ".join(words), "COMP_CWORD": str(len(words) - 1)})
    assert result.exit_code == 0 and not result.stderr, (result.output, result.exception)
    return result.stdout.split()


TWO_NODES = """[campaign]
name = "c"
[[node]]
name = "ws-old"
[[node]]
name = "cluster"
batch = "slurm"
"""


def test_uids_and_node_names_complete_from_the_campaign_in_the_spelling_typed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("ari.toml").write_text(TWO_NODES)
    Path("c.csv").write_text(CATALOGUE + "uid://A001/X12/X1,2016.1.00123.S,12m,6,1\n")
    run("datasets", "import", "c.csv")
    assert completions(["retry"], "uid://A001/X1296") == ["uid://A001/X1296/X1d3", "uid://A001/X1296/X1d5"]
    assert completions(["datasets", "show"], "uid___A001_X12_") == ["uid___A001_X12_X1"]
    assert completions(["logs"], "uid://A001/X9") == []
    assert completions(["nodes", "drain"], "") == ["ws-old", "cluster"]
    assert completions(["nodes", "check", "cluster"], "w") == ["ws-old"]
    assert completions(["retry", "uid://A001/X12/X1", "--node"], "c") == ["cluster"]
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the campaign named by -c after the subcommand, as the command would use it
    assert completions(["nodes", "undrain", "-c", str(tmp_path / "ari.toml")], "ws") == ["ws-old"]
    assert completions(["-c", str(tmp_path / "ari.toml"), "accept"], "uid://A001/X12/") == ["uid://A001/X12/X1"]


def test_completion_offers_nothing_and_says_nothing_without_a_usable_campaign(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert completions(["retry"], "uid") == [] and completions(["nodes", "drain"], "") == []  # no ari.toml
    Path("ari.toml").write_text('[[node]]\nname = "a"\nslots = "two"\n')  # invalid config
    assert completions(["nodes", "drain"], "") == []
    Path("ari.toml").write_text(TWO_NODES)
    Path("ari.db").write_bytes(b"not a database at all" * 100)  # a broken state file
    assert completions(["retry"], "uid") == []
    assert completions(["nodes", "drain"], "") == ["ws-old", "cluster"]


def test_every_command_that_reads_or_changes_state_takes_json():
    import typer

    streams = {"logs", "tui", "archive serve"}  # a log stream, the console, a server: no document to print
    missing = []

    def walk(command, path):
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, path + [name])
        if not hasattr(command, "commands") and " ".join(path) not in streams:
            if "--json" not in {o for p in command.params for o in getattr(p, "opts", [])}:
                missing.append(" ".join(path))

    walk(typer.main.get_command(app), [])
    assert missing == []


def test_init_and_a_headless_run_answer_in_json_and_init_points_to_the_node_check(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    started = json.loads(run("init", "--json").stdout)
    assert started["config"] == str((tmp_path / "ari.toml").resolve()) and started["next"][0] == "ari nodes check"
    assert "`ari nodes check`" in run("init", "again").stdout
    done = json.loads(run("run", "--once", "--json").stdout)
    assert done["stopped"] == {"queued": 0, "running": 0, "blocked": None}
    assert done["attention"]["line"] == "nothing needs a person" and done["datasets"] == 0


def test_no_help_screen_shows_a_flag_as_taking_a_value():
    import typer

    paths = [[]]

    def walk(command, path):
        for name, sub in getattr(command, "commands", {}).items():
            paths.append(path + [name])
            walk(sub, path + [name])

    walk(typer.main.get_command(app), [])
    for path in paths:
        text = run(*path, "--help").stdout
        assert "<bool>" not in text, (path, [ln for ln in text.splitlines() if "<bool>" in ln])
