"""The console's read model and log tailing: what each screen shows, from store-shaped rows."""

from __future__ import annotations

from ari_console import readmodel
from ari_console.tui import tail, views

NOW = 1_000_000.0


def _ds(uid, state="queued", project="2016.1.00123.S", created=0.0, size=10.0):
    return {"uid": uid, "project": project, "array": "12m", "band": 6, "size_gb": size, "state": state,
            "created_at": created}


def _att(id, uid, state, node="ws01", category=None, signature=None, started=NOW - 600, ended=None, **kw):
    return {"id": id, "uid": uid, "node": node, "state": state, "stage": "image", "category": category,
            "signature": signature, "started_at": started, "ended_at": ended, "created_at": started, **kw}


def test_filter_matches_regex_fields_and_inverts_with_bang():
    rows = {"a": ("uid://A001/X1/X1", "failed"), "b": ("uid://A001/X1/X2", "queued")}
    fields = {"a": {"state": "failed"}, "b": {"state": "queued"}}
    assert list(views.filter_rows(views.parse_filter("X2"), rows, fields)) == ["b"]
    assert list(views.filter_rows(views.parse_filter("state:fail", ["state"]), rows, fields)) == ["a"]
    assert list(views.filter_rows(views.parse_filter("!state:fail", ["state"]), rows, fields)) == ["b"]
    assert list(views.filter_rows(views.parse_filter("!X"), rows, fields)) == []


def test_a_bad_regex_filters_nothing_and_says_why():
    flt = views.parse_filter("X1(")
    assert flt.error and "not a regular expression" in flt.error
    assert len(views.filter_rows(flt, {"a": ("x",), "b": ("y",)})) == 2


def test_queue_row_shows_latest_attempt_node_stage_elapsed_and_failure_category():
    view = views.queue_view([_ds("u1", "failed"), _ds("u2")],
                            [_att(1, "u1", "failed", category="memory", ended=NOW - 60),
                             _att(2, "u1", "failed", node="hpc", category="walltime", started=NOW - 7200,
                                  ended=NOW - 60)], NOW)
    assert view.rows["u1"][5:] == ("failed", "2", "hpc", "image", "1h59m", "walltime")
    assert view.rows["u2"][5:] == ("queued", "0", "", "", "", "")
    assert view.fields["u1"]["category"] == "walltime"


def test_sort_values_order_sizes_and_durations_as_numbers():
    sizes = ["1.2 TB", "850 MB", "12.3 GB", ""]
    assert sorted(sizes, key=lambda s: views.sort_value("size", s)) == ["", "850 MB", "12.3 GB", "1.2 TB"]
    assert sorted(["1d02h", "59s", "3h05m"], key=lambda s: views.sort_value("elapsed", s)) == ["59s", "3h05m", "1d02h"]


def test_dashboard_success_rates_count_first_attempts_and_retries():
    datasets = [_ds("a", "succeeded"), _ds("b", "succeeded"), _ds("c", "failed"), _ds("d")]
    attempts = [_att(1, "a", "succeeded", ended=NOW - 5), _att(2, "b", "failed", category="memory", ended=NOW - 9),
                _att(3, "b", "succeeded", ended=NOW - 1), _att(4, "c", "lost", category="node_lost", ended=NOW - 3)]
    dash = readmodel.dashboard(datasets, attempts, NOW)
    assert dash.unsupervised == (1, 3)
    assert dash.after_retries == (2, 3)
    assert dash.failures == [("memory", 1), ("node_lost", 1)]
    assert views.rate_text(dash.unsupervised) == "1/3 (33%)"


def test_burndown_falls_as_data_sets_succeed():
    datasets = [_ds(u, "succeeded" if u in "ab" else "queued", created=0.0) for u in "abcd"]
    series, span = readmodel.burndown(datasets, {"a": 50.0, "b": 100.0}, now=100.0, bins=3)
    assert series == [4, 3, 2]
    assert span == (0.0, 100.0)


def test_node_with_failed_or_old_probe_is_stale_with_its_age():
    probe = {"load1": 1.0, "cpus": 4, "mem_total_gb": 64, "mem_free_gb": 32, "scratch_total_gb": 100,
             "scratch_free_gb": 50}
    fresh = {"name": "a", "transport": "ssh", "batch": "none", "slots": 2, "running": 1, "probe": probe,
             "probed_at": NOW - 10, "probe_error": None, "drained": False}
    failed = {**fresh, "name": "b", "probe_error": "ssh: timed out", "probed_at": NOW - 185}
    drained = {**fresh, "name": "c", "drained": True, "drained_reason": "disk swap"}
    history = {}
    for n in (fresh, failed, drained):
        history.setdefault(n["name"], views.NodeHistory()).add(n)
    rows = views.node_rows([fresh, failed, drained], history, NOW, stale_after_s=60)
    assert rows["a"][-1] == "ok"
    assert rows["b"][-1] == "stale 3m (ssh: timed out)"
    assert rows["c"][-1] == "drained: disk swap"
    assert rows["a"][2] == "1/2" and rows["a"][3] == "1.00/4" and rows["a"][5] == "32/64 GB"


def test_node_history_keeps_one_point_per_probe_and_is_bounded():
    h = views.NodeHistory(keep=5)
    for i in range(8):
        node = {"probe": {"load1": i + 1, "cpus": 8, "mem_total_gb": 10, "mem_free_gb": 5}, "probed_at": float(i)}
        h.add(node)
        h.add(node)  # the same probe read twice is one point
    assert h.probed_at == [3.0, 4.0, 5.0, 6.0, 7.0]
    assert views.sparkline(h.load, top=1.0)[-1] == "█"


def test_failures_group_by_category_or_signature_and_skip_retried_ones():
    datasets = [_ds("a", "failed"), _ds("b", "held"), _ds("c", "running"), _ds("d", "failed")]
    attempts = [_att(1, "a", "failed", category="memory", signature="oom in tclean"),
                _att(2, "b", "failed", category="memory", signature="oom in tclean"),
                _att(3, "c", "failed", category="memory", signature="x"), _att(4, "c", "running"),
                _att(5, "d", "failed", category="memory", signature="other")]
    failures = readmodel.open_failures(datasets, attempts)
    assert sorted(f["uid"] for f in failures) == ["a", "b", "d"]
    by_cat = readmodel.failure_groups(failures, "category")
    assert [(g.key, len(g.attempt_ids)) for g in by_cat] == [("memory", 3)]
    by_sig = readmodel.failure_groups(failures, "signature")
    assert [(g.key, g.attempt_ids) for g in by_sig] == [("memory: oom in tclean", (1, 2)), ("memory: other", (5,))]


def test_shell_commands_for_each_kind_of_node():
    ssh = {"transport": "ssh", "host": "ws01", "port": 2222, "user": "ari", "batch": "none"}
    local = {"transport": "local", "batch": "pbs"}
    running = {"state": "running", "work_dir": "/s/7", "handle": {"batch": "none", "pid": 99}}
    assert views.shell_commands(running, ssh) == [
        "ssh -p 2222 ari@ws01 'tail -f /s/7/runner.log'", "ssh -p 2222 ari@ws01 'ps -o pid,etime,rss,args -p 99'"]
    pbs = {"state": "failed", "work_dir": "/s/8", "handle": {"batch": "pbs", "job_id": "12.srv"}}
    assert views.shell_commands(pbs, local) == ["tail -f /s/8/runner.log", "qstat -xf 12.srv"]
    slurm_done = {"state": "failed", "handle": {"batch": "slurm", "job_id": "5", "work_dir": "/w"}}
    assert views.shell_commands(slurm_done, {"transport": "local", "batch": "slurm"})[-1] == "sacct -j 5"


def test_attempt_with_old_heartbeat_shows_stale():
    rows = views.attempt_rows([_att(1, "a", "running", heartbeat_at=NOW - 900),
                               _att(2, "b", "running", heartbeat_at=NOW - 5)], NOW, heartbeat_stale_s=300)
    assert rows["1"][-1] == "stale 15m"
    assert rows["2"][-1] == "5s ago"
    assert list(rows) == ["2", "1"]


def test_tail_reads_only_complete_new_lines_and_keeps_the_offset(tmp_path):
    log = tmp_path / "runner.log"
    log.write_bytes(b"one\ntwo\nthr")
    first = tail.read_new(log, 0)
    assert first.lines == ["one", "two"] and first.first_line == 1
    with log.open("ab") as f:
        f.write(b"ee\nfour\n")
    second = tail.read_new(log, first.offset)
    assert second.lines == ["three", "four"]
    assert tail.read_new(log, second.offset).lines == []


def test_tail_of_a_big_log_reads_only_the_last_window(tmp_path):
    log = tmp_path / "big.log"
    with log.open("w") as f:
        for i in range(200_000):
            f.write(f"line {i} " + "x" * 40 + "\n")
    chunk = tail.read_new(log, 0, window=64 * 1024)
    assert chunk.skipped > log.stat().st_size - 64 * 1024 - 100
    assert chunk.lines[-1].startswith("line 199999 ")
    assert len(chunk.lines) < 2000
    assert chunk.first_line is None


def test_a_truncated_log_is_read_again_from_the_start(tmp_path):
    log = tmp_path / "r.log"
    log.write_text("a\nb\nc\n")
    offset = tail.read_new(log, 0).offset
    log.write_text("new\n")
    chunk = tail.read_new(log, offset)
    assert chunk.truncated and chunk.lines == ["new"]


def test_lines_around_a_decisive_line_are_read_in_blocks(tmp_path):
    log = tmp_path / "casa.log"
    log.write_text("".join(f"{i}\n" for i in range(1, 10_001)))
    chunk = tail.read_around(log, 5000, before=2, after=2, block=1000)
    assert chunk.lines == ["4998", "4999", "5000", "5001", "5002"]
    assert chunk.first_line == 4998


def test_running_attempt_without_a_recent_heartbeat_shows_stale_in_the_queue():
    view = views.queue_view([_ds("u1", "running")], [_att(1, "u1", "running", heartbeat_at=NOW - 720)], NOW,
                            heartbeat_stale_s=300)
    assert view.rows["u1"][8] == "image (stale 12m)"


def test_a_burn_down_stuck_on_held_data_sets_stays_above_zero_on_an_axis_to_the_total():
    rows = views.bar_chart([60, 30, 3, 3, 3], top=60, height=3).split("\n")
    assert [r[0] for r in rows] == ["█", "█", "█"]          # all 60 left: full column
    assert [r[-1] for r in rows] == [" ", " ", "▁"]         # 3 held of 60: a sliver, not empty, not full
    assert views.bar_chart([3, 3], top=60, height=1) != views.bar_chart([60, 60], top=60, height=1)
    assert views.bar_chart([0], top=60, height=2) == " \n "  # done means an empty column


# -- what fits at 80 and 120 columns ---------------------------------------------------------------

def _real_uids() -> list[str]:
    """MOUS uids as the real archive writes them (shared real material), longest first."""
    import re
    from pathlib import Path

    found = set()
    for f in Path("/work/shared/data/real/archive").glob("*"):
        found |= set(re.findall(r"uid://A00\d/X[0-9a-f]+/X[0-9a-f]+", f.read_text(errors="replace")))
    assert found, "the real archive material names MOUS uids"
    return sorted(found, key=len, reverse=True)


def _queue_rows(uids):
    """Queue rows of real uids in the widest states: a stale running stage, a failure category."""
    rows = {}
    for i, uid in enumerate(uids):
        a = _att(i, uid, "failed" if i % 2 else "running", node="hpc-login", category="uvcontfit",
                 ended=NOW - 60 if i % 2 else None, heartbeat_at=NOW - 900)
        rows[uid] = views.queue_row(_ds(uid, state="failed" if i % 2 else "running", size=1234.0), a, 3, NOW)
    return rows


def _fit(layout, columns, rows, terminal):
    fit = views.fit_columns(layout, views.cell_widths(columns, rows.values()), terminal - 2)  # the scrollbar
    widths = views.cell_widths(columns, rows.values())
    used = sum((w if w is not None else widths[n]) + 2 for n, w in fit.items())
    assert used <= terminal - 2, (fit, used)
    return fit


def test_queue_keeps_uid_state_and_failure_at_80_and_120_columns_with_real_uids():
    rows = _queue_rows(_real_uids())
    assert any("stale" in r[8] for r in rows.values()) and any(r[10] == "uvcontfit" for r in rows.values())
    narrow, wide = _fit(views.QUEUE_LAYOUT, views.QUEUE_COLUMNS, rows, 80), \
        _fit(views.QUEUE_LAYOUT, views.QUEUE_COLUMNS, rows, 120)
    for fit in (narrow, wide):
        assert {"uid", "state", "failure"} <= set(fit) and fit["uid"] is None and fit["failure"] is None
    assert list(wide) == [c for c in views.QUEUE_COLUMNS if c in wide], "columns keep their order"
    assert {"project", "node", "elapsed", "size"} <= set(wide), "at 120 columns only the least needed leave"
    assert len(wide) > len(narrow)


def test_a_column_is_shortened_before_a_more_important_one_is_dropped_and_gets_freed_space_back():
    layout = (views.Col("node"), views.Col("via", 6), views.Col("state", shrink=10, cut=9))
    widths = {"node": 6, "via": 10, "state": 60}
    assert views.fit_columns(layout, widths, 50) == {"node": None, "via": None, "state": 28}
    assert views.fit_columns(layout, widths, 30) == {"node": None, "state": 20}, "via left: state takes its room"
    assert views.fit_columns(layout, widths, 200) == {"node": None, "via": None, "state": None}


def test_nodes_keep_node_and_state_and_the_probe_numbers_before_their_history_at_80_columns():
    nodes = [{"name": "ws01", "transport": "ssh", "batch": "none", "slots": 1, "running": 1, "probed_at": NOW - 600,
              "probe_error": "ssh: connect to ws01.example.org port 2222: Connection timed out",
              "probe": {"load1": 2.5, "cpus": 4, "mem_free_gb": 10.0, "mem_total_gb": 64.0}}]
    rows = views.node_rows(nodes, {}, NOW, stale_after_s=120)
    fit = _fit(views.NODE_LAYOUT, views.NODE_COLUMNS, rows, 80)
    assert list(fit)[0] == "node" and "state" in fit and fit["state"] >= 24
    assert {"load", "mem free"} <= set(fit) and not {"load hist", "mem hist"} & set(fit)


def test_triage_groups_keep_the_fix_beside_the_group_at_80_columns():
    from ari_console.triage.rules import fix_for

    rows = {k: ("12", k, fix_for(c)) for k, c in (("uvcontfit: SEVERE uvcontfit::::casa Fit failed for spw <N>: "
                                                   "singular matrix", "uvcontfit"), ("download", "download"))}
    fit = _fit(views.GROUP_LAYOUT, views.GROUP_COLUMNS, rows, 80)
    assert list(fit) == ["n", "group", "fix"] and fit["fix"] >= 24


def test_qa2_rows_say_which_measure_was_outside_its_tolerance():
    rows = views.qa2_rows([
        {"id": 1, "uid": "u1", "verdict": "discrepant", "flux_ratio": 0.62, "peak_ratio": 0.9,
         "detail": {"reasons": "flux ratio 0.620 outside 1 ± 0.150; rms ratio 2.100 beyond a factor 2"}},
        {"id": 2, "uid": "u2", "verdict": "consistent", "flux_ratio": 1.01, "detail": {"reasons": ""}},
        {"id": 3, "uid": "u3", "verdict": "discrepant", "flux_ratio": 1.0, "beam_ratio": 1.6, "detail": {}}])
    outside = {cells[0]: cells[-1] for cells in rows.values()}
    assert outside == {"u1": "flux 0.620, rms 2.100", "u2": "", "u3": "beam 1.600"}
    fit = _fit(views.QA2_LAYOUT, views.QA2_COLUMNS, rows, 40)
    assert {"uid", "verdict", "outside"} <= set(fit)


def test_footer_keeps_help_and_quit_and_whole_keys_in_order():
    items = [("filter", 9), ("state", 8), ("retry", 8), ("copy", 11), ("switch_mode", 15), ("help", 7),
             ("quit", 7)]
    kept = views.footer_keys(items, 50, always=("help", "quit"), first=("switch_mode",))
    assert kept == {"help", "quit", "switch_mode", "filter", "state"}
    assert views.footer_keys(items, 10, always=("help", "quit")) == {"help", "quit"}


def test_the_queue_and_the_attempt_lists_share_the_run_time_rule_for_running_and_ended_attempts():
    from ari_console.formatting import attempt_seconds, duration_text
    from ari_console.tui.views import QUEUE_COLUMNS, attempt_rows, queue_cells

    d = ("u1", "p", "12m", 6, 2.0, "held")
    column = QUEUE_COLUMNS.index("elapsed")
    for state, ended in (("running", None), ("failed", 5000.0), ("lost", None)):  # lost: no end recorded
        a = {"id": 7, "uid": "u1", "node": "ws1", "state": state, "stage": "image", "created_at": 0.0,
             "started_at": 100.0, "heartbeat_at": 3700.0, "ended_at": ended, "category": None}
        cells = queue_cells(d, (7, "u1", "ws1", state, "image", 0.0, 100.0, 3700.0, ended, None), 1, now=20000.0)
        expected = duration_text(attempt_seconds(a, 20000.0))
        assert cells[column] == attempt_rows([a], 20000.0)["7"][5] == expected, state
    assert expected == "1h00m"  # the lost attempt: to its last heartbeat, not to now
