"""`ari triage classify|rules|groups`: the JSON contract, tables, and per-file errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from ari_console import triage
from ari_console.commands.triage import app

CORPUS = Path(__file__).parent / "data" / "triage"
CONTRACT = {"file", "category", "stage", "line", "excerpt"}


def run(*args: str):
    """Invoke the triage app on a wide terminal; stdout and stderr are kept apart (click >= 8.2)."""
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "400"})


def test_classify_json_gives_the_contract_keys_for_every_log():
    logs = [CORPUS / "memory" / "slurm_oom_kill.log", CORPUS / "findcont" / "pipeline_no_continuum_ranges.log"]
    result = run("classify", *map(str, logs), "--json")
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["file"] for r in rows] == [str(p) for p in logs]
    assert all(CONTRACT <= set(r) for r in rows)
    assert [(r["category"], r["line"]) for r in rows] == [("memory", 8), ("findcont", 91)]
    assert rows[1]["stage"] == "hif_findcont"
    assert "No continuum ranges found" in rows[1]["excerpt"]


def test_a_binary_file_gets_one_line_and_the_rest_of_the_batch_is_still_classified(tmp_path: Path):
    blob = tmp_path / "casa.ms.tar"
    blob.write_bytes(b"\x00\x01\x02" * 5000)
    good = CORPUS / "walltime" / "slurm_time_limit.log"
    result = run("classify", str(blob), str(good), str(tmp_path / "missing.log"), "--json")
    assert result.exit_code != 0
    rows = json.loads(result.stdout)
    assert [(r["file"], r["category"]) for r in rows] == [(str(good), "walltime")]
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 2
    assert errors[0].startswith(f"{blob}: binary file")
    assert "missing.log: no such file" in errors[1]
    assert "Traceback" not in result.stderr


def test_classify_prints_a_table_without_json():
    result = run("classify", str(CORPUS / "disk_full" / "runner_refused_scratch.log"))
    assert result.exit_code == 0
    assert "disk_full" in result.stdout and "runner_refused_scratch.log" in result.stdout


def test_classify_attempt_picks_the_decisive_log_of_one_attempt(tmp_path: Path):
    casa = tmp_path / "casa-20261125.log"
    casa.write_text("2026-11-25 16:12:50\tSEVERE\ttclean::::casa\tTask tclean raised an exception of class RuntimeError with the following message: interrupted\n")
    slurm = tmp_path / "slurm-81234.out"
    slurm.write_text("slurmstepd: error: *** JOB 81234 ON mup03 CANCELLED AT 2026-11-25T16:00:00 DUE TO TIME LIMIT ***\n")
    rows = json.loads(run("classify", "--attempt", str(casa), str(slurm), "--json").stdout)
    assert [(r["file"], r["category"], r["line"]) for r in rows] == [(str(slurm), "walltime", 1)]


def test_classify_hint_from_status_json_fills_in_when_the_log_says_little(tmp_path: Path):
    log = tmp_path / "casa.log"
    log.write_text("2026-11-25 16:12:50\tINFO\ttclean::::casa\tminor cycle 12\n")
    rows = json.loads(run("classify", str(log), "--hint", "walltime", "--json").stdout)
    assert rows[0]["category"] == "walltime"


def test_rules_json_lists_every_rule_with_its_category_and_priority():
    result = run("rules", "--json")
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    assert {r["name"] for r in rows} == {r.name for r in triage.RULES}
    assert rows[0]["priority"] == max(r.priority for r in triage.RULES)
    assert run("rules").exit_code == 0


def test_groups_json_counts_attempts_per_signature_with_uids_from_paths(tmp_path: Path):
    src = CORPUS / "disk_full" / "casa6_tclean_tiny_tmpfs.log"
    for uid in ("uid___A001_X1_X1", "uid___A001_X1_X2", "uid___A001_X1_X3"):
        (tmp_path / uid).mkdir()
        shutil.copy(src, tmp_path / uid / "casa.log")
    other = CORPUS / "walltime" / "slurm_time_limit.log"
    logs = sorted(str(p) for p in tmp_path.glob("*/casa.log")) + [str(other)]
    result = run("groups", *logs, "--json")
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [(r["category"], r["count"]) for r in rows] == [("disk_full", 3), ("walltime", 1)]
    assert rows[0]["example_uids"] == ["uid://A001/X1/X1", "uid://A001/X1/X2", "uid://A001/X1/X3"]
    assert set(rows[0]) == {"signature", "category", "count", "example_uids", "fix"}
    assert rows[0]["fix"] == triage.fix_for("disk_full")
    text = run("groups", *logs)
    words = " ".join(text.stdout.replace("│", " ").split())
    assert " ".join(triage.fix_for("disk_full").split()) in words, "the fix is printed whole (wrapped, not cut)"


def test_groups_without_logs_groups_the_campaigns_open_failures_by_signature(tmp_path):
    from ari_console import store
    from ari_console.alma import DataSet
    from ari_console.cli import app as ari

    (tmp_path / "ari.toml").write_text(f'[campaign]\nname = "g"\n[[node]]\nname = "n1"\n'
                                       f'scratch_dir = "{tmp_path}"\n')
    db = store.open_db(tmp_path / "ari.db")
    uids = [f"uid://A001/X1/X{i}" for i in range(1, 5)]
    store.import_datasets(db, [DataSet(uid=u, project="2016.1.00123.S") for u in uids], "t", now=1.0)
    store.sync_nodes(db, [], 1.0)
    oom = "MemoryError: Unable to allocate <n> GiB"
    for uid, sig, cat, final in [(uids[0], oom, "memory", "held"), (uids[1], oom, "memory", "held"),
                                 (uids[2], "Table <path> does not exist", "calibration", "held"),
                                 (uids[3], oom, "memory", "succeeded")]:  # fixed by a retry: not open
        a = store.create_attempt(db, uid, "n1", 2.0)
        store.update_attempt(db, a, 3.0, state="failed", category=cat, signature=sig)
        store.set_dataset_state(db, uid, final, 3.0)
    db.close()
    result = CliRunner().invoke(ari, ["-c", str(tmp_path / "ari.toml"), "triage", "groups", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["category"], r["count"], r["signature"]) for r in rows] == [
        ("memory", 2, oom), ("calibration", 1, "Table <path> does not exist")]
    assert rows[0]["example_uids"] == uids[:2]


def _campaign_with_failed_attempt(tmp_path: Path, log: Path | None) -> Path:
    """A campaign whose data set uid://A001/X1/X1 failed once (its log mirrored from ``log``) and X2 never ran."""
    from ari_console import store
    from ari_console.alma import DataSet

    (tmp_path / "ari.toml").write_text(f'[campaign]\nname = "g"\n[[node]]\nname = "n1"\n'
                                       f'scratch_dir = "{tmp_path}"\n')
    db = store.open_db(tmp_path / "ari.db")
    store.import_datasets(db, [DataSet(uid=u, project="2016.1.00123.S") for u in ("uid://A001/X1/X1", "uid://A001/X1/X2")],
                          "t", now=1.0)
    store.sync_nodes(db, [], 1.0)
    old = store.create_attempt(db, "uid://A001/X1/X1", "n1", 2.0)
    store.update_attempt(db, old, 3.0, state="failed", category="download")
    a = store.create_attempt(db, "uid://A001/X1/X1", "n1", 4.0)
    store.update_attempt(db, a, 5.0, state="failed", category="memory")
    if log is not None:
        mirror = tmp_path / "logs" / "uid___A001_X1_X1" / f"a-{a:06d}" / log.name
        mirror.parent.mkdir(parents=True)
        shutil.copy(log, mirror)
        store.set_log_offset(db, a, f"/scratch/work/{log.name}", mirror.stat().st_size, str(mirror))
    db.close()
    return tmp_path / "ari.toml"


def test_classify_a_uid_reads_the_logs_of_its_latest_failed_attempt(tmp_path: Path):
    from ari_console.cli import app as ari

    log = CORPUS / "memory" / "sacct_out_of_me_truncated.log"
    toml = _campaign_with_failed_attempt(tmp_path, log)
    result = CliRunner().invoke(ari, ["-c", str(toml), "triage", "classify", "uid___A001_X1_X1", "--json"])
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.stdout)
    assert CONTRACT <= set(row)
    assert (row["uid"], row["category"], row["line"]) == ("uid://A001/X1/X1", "memory", 4)
    assert row["file"].endswith("sacct_out_of_me_truncated.log") and "a-000002" in row["file"]
    assert "more memory" in row["fix"]


def test_classify_a_uid_without_a_failed_attempt_says_so_in_one_line(tmp_path: Path):
    from ari_console.cli import app as ari

    toml = _campaign_with_failed_attempt(tmp_path, None)
    result = CliRunner().invoke(ari, ["-c", str(toml), "triage", "classify", "uid://A001/X1/X2", "uid://A001/X1/X1"])
    assert result.exit_code == 1
    errors = result.stderr.strip().splitlines()
    assert errors == ["uid://A001/X1/X2: no failed attempt in this campaign — see `ari datasets show uid://A001/X1/X2`",
                      "uid://A001/X1/X1: attempt 2 has no mirrored logs on this machine — read them on its node "
                      "(`ari logs uid://A001/X1/X1`)"]
    assert "Traceback" not in result.stderr


def test_classify_table_shows_the_whole_decisive_message_and_the_fix(tmp_path: Path):
    log = tmp_path / "casa.log"
    why = ("FiledesIO::write - write error in /scratch/ari/uid___A001_X1296_X1d3/working/"
           "J1000-3000_sci.spw25_27_29_31.cube.I.iter1.residual/table.f0_TSM0: Success")
    log.write_text(f"2026-11-25 16:12:50\tSEVERE\ttclean::::casa\t{why}\n")
    result = CliRunner().invoke(app, ["classify", str(log)], env={"COLUMNS": "120"})
    assert result.exit_code == 0
    cells = [line.split("│")[1:-1] for line in result.stdout.splitlines() if line.startswith("│")]
    message, fix = ("".join(row[i].strip() for row in cells) for i in (4, 5))  # a wrapped cell, read down its column
    assert message.replace(" ", "") == why.replace(" ", "")
    assert fix.replace(" ", "") == triage.fix_for("disk_full").replace(" ", "")
