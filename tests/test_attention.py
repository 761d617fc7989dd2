"""What needs a person: held data sets with reason and fix, unreachable or drained nodes, in `ari status`,
`ari datasets list --state held`, `ari attempts` and at the end of headless `ari run`."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from ari_console import store
from ari_console.triage.rules import fix_for
from ari_console.cli import app
from tests import sample_campaign as sample


def _ari(camp, *args):
    result = CliRunner().invoke(app, ["-c", str(camp.config.path), *args], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    return result.output


def test_status_lists_held_data_sets_with_reason_and_fix_and_unreachable_nodes(tmp_path):
    camp = sample.build(tmp_path, n=60, running=4)
    status = json.loads(_ari(camp, "status", "--json"))
    att = status["attention"]
    held = {h["uid"]: h for h in att["held"]}
    assert camp.held_uid in held
    h = held[camp.held_uid]
    assert h["reason"].endswith("failure") and h["category"] and f"ari release {camp.held_uid}" in h["fix"]
    assert h["fix"].startswith(fix_for(h["category"]))
    assert any(n["name"] == "ws01" and "unreachable" in n["problem"] and "ari nodes check ws01" in n["fix"]
               for n in att["nodes"])
    assert att["line"].startswith(f"needs a person: {len(att['held'])} held data sets")
    text = _ari(camp, "status")
    assert camp.held_uid in text and "needs a person" in text


def test_held_list_shows_the_reason_and_attempts_show_the_excerpt(tmp_path):
    camp = sample.build(tmp_path, n=60, running=4)
    held = _ari(camp, "datasets", "list", "--state", "held")
    assert "reason" in held and "failure" in held
    attempts = _ari(camp, "attempts", camp.failed_uid)
    db = store.open_db(camp.db_path)
    first_line = store.attempt(db, camp.failed_attempt)["excerpt"].splitlines()[0]
    db.conn.close()
    assert "excerpt" in attempts and first_line[:40] in attempts


def test_status_lists_the_longest_waiting_and_counts_every_held_data_set(tmp_path):
    camp = sample.build(tmp_path, n=2300, running=4)
    db = store.open_db(camp.db_path)
    held = store.datasets(db, state="held")
    db.conn.close()
    assert len(held) > 100
    att = json.loads(_ari(camp, "status", "--json"))["attention"]
    assert att["held_total"] == len(held) and len(att["held"]) == 100
    oldest = sorted(held, key=lambda d: (d["updated_at"], d["uid"]))[:100]
    assert [h["uid"] for h in att["held"]] == [d["uid"] for d in oldest]
    assert att["line"].startswith(f"needs a person: {len(held):,} held data sets")
    assert att["count"] == len(held) + att["review_total"] + len(att["nodes"])
    text = _ari(camp, "status")
    assert f"and {len(held) - 100:,} more held" in text and "ari datasets list --state held" in text


def test_at_80_columns_the_uids_and_states_an_operator_copies_are_printed_whole(tmp_path):
    camp = sample.build(tmp_path, n=60, running=4)
    for args in (("datasets", "list", "--state", "held"), ("status",), ("attempts",)):
        result = CliRunner().invoke(app, ["-c", str(camp.config.path), *args], env={"COLUMNS": "80"})
        assert result.exit_code == 0, result.output
        lines = result.output.splitlines()
        assert max(len(ln) for ln in lines) <= 80, args
        assert any(f" {camp.held_uid} " in ln for ln in lines), (args, result.output)
        assert "uid://A001/…" not in result.output and "succe…" not in result.output, args
