"""One size convention (1 GB = 10**9 bytes): a size read from each of its sources (the archive's
bytes, the runner's status.json, the node probe's /proc/meminfo and df) reads the same in the CLI
and in the console."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from ari_console import store
from ari_console.cli import app as cli
from ari_console.formatting import free_text, gb_text
from ari_console.nodes.batch.base import mem_mb, status_from_json
from ari_console.nodes.probe import probe
from ari_console.nodes.transport import LocalTransport
from ari_console.tui.screens.detail import DatasetScreen
from tests import sample_campaign as sample
from tests.test_tui_app import async_test, make_app, settle, table, wait_for


def _cli(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


def _cells(text: str, needle: str) -> list[str]:
    """The words of the first line of ``text`` that holds ``needle``, table rules left out."""
    line = next(ln for ln in text.splitlines() if needle in ln)
    return [w for w in re.split(r"[\s│┃|]+", line) if w]


@async_test
async def test_a_size_from_the_archive_the_runner_and_the_probe_reads_the_same_in_the_cli_and_the_console(tmp_path):
    camp = sample.build(tmp_path / "c", n=20, running=2)
    config = str(camp.config.path)
    db = store.open_db(camp.db_path)
    uid = camp.held_uid
    # the runner's status.json carries exact byte counts; the console turns them into GB of 10**9 bytes
    js = status_from_json({"state": "failed", "peak_rss_bytes": 8_400_000_000, "peak_rss_gb": 8.4,
                           "peak_scratch_bytes": 1_234_567_890, "peak_scratch_gb": 1.235})
    aid = store.attempts(db, uid=uid)[-1]["id"]
    store.update_attempt(db, aid, sample.NOW, peak_mem_gb=js.peak_mem_gb, peak_scratch_gb=js.peak_scratch_gb)
    # a real probe of this machine: /proc/meminfo (KiB) and df (1024-byte blocks) become GB
    measured = probe(LocalTransport(), str(tmp_path))
    store.set_node_probe(db, "here", sample.NOW, {"load1": measured.load1, "load5": measured.load5,
                                                  "load15": measured.load15, "cpus": measured.cpus,
                                                  "mem_total_gb": measured.mem_total_gb,
                                                  "mem_free_gb": measured.mem_free_gb,
                                                  "scratch_total_gb": measured.scratch_total_gb,
                                                  "scratch_free_gb": measured.scratch_free_gb})
    size_gb = store.dataset(db, uid)["size_gb"]
    db.conn.close()
    kib = {k: int(v.split()[0]) for k, v in (ln.split(":", 1) for ln in open("/proc/meminfo"))}
    assert abs(measured.mem_total_gb - kib["MemTotal"] * 1024 / 1e9) < 1e-9  # decimal GB, not GiB

    cli_detail = _cli("datasets", "show", uid, "-c", config)
    cli_nodes = _cli("nodes", "list", "-c", config)
    app = make_app(camp)
    async with app.run_test(size=(160, 50)) as pilot:
        await pilot.press("2")
        await settle(app, pilot, lambda: table(app, "queue-table").row_count == 20)
        queue_size = table(app, "queue-table").shown[uid][4]
        t = table(app, "queue-table")
        t.move_cursor(row=t.get_row_index(uid))
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, DatasetScreen) and "fix:" in app.screen.text)
        tui_detail = app.screen.text
        await pilot.press("escape", "3")
        await settle(app, pilot, lambda: table(app, "nodes-table").row_count == 4)
        here = [str(c) for c in table(app, "nodes-table").get_row("here")]

    # the runner's bytes: 1,234,567,890 bytes are 1.23 GB (1.15 GiB), 8.4e9 bytes are 8.4 GB
    row = _cells(cli_detail, "1.23 GB")
    assert row == _cells(tui_detail, "1.23 GB") and row[0] == str(aid) and " ".join(row).endswith("8.4 GB 1.23 GB")
    # the archive's size: the same text in the queue, the CLI's detail and the console's detail
    assert queue_size == gb_text(size_gb)
    assert f"CASA unknown; {gb_text(size_gb)}" in cli_detail and f"; {gb_text(size_gb)}" in tui_detail.splitlines()[0]
    assert gb_text(size_gb) in _cli("datasets", "list", "-c", config)
    # the probe's memory and scratch: `ari nodes list` shows what the console's node table shows
    mem, scratch = (free_text(measured.mem_free_gb, measured.mem_total_gb),
                    free_text(measured.scratch_free_gb, measured.scratch_total_gb))
    assert mem in here and scratch in here
    assert mem in cli_nodes and scratch in cli_nodes
    # the configured memory reads the same, and Slurm gets it in MiB rounded up
    assert " ".join(_cells(cli_nodes, "here ")).startswith("here local none 2 1 16 GB")
    assert mem_mb(16) * 2**20 >= 16e9 > (mem_mb(16) - 1) * 2**20
