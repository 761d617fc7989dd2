"""Simulation, lower bound, cluster sizing, and the `ari estimate` commands."""

from __future__ import annotations

import json
import math
import random
from datetime import datetime, timedelta, timezone

import pytest
from typer.testing import CliRunner

from ari_console import estimate as est
from ari_console.commands.estimate import app
from ari_console.errors import UserError
from ari_console.scheduler import DataSet, Measured, NodeState

NODES_TOML = """\
[[node]]
name = "ws"
count = 3
mem_gb = 24
speed = 0.6

[[node]]
name = "mup"
slots = 2
mem_gb = 64
walltime_h = 48

[[node]]
name = "hpc"
slots = 2
mem_gb = 512
walltime_h = 240
speed = 1.2
"""


def workload_csv(rows: list[tuple]) -> str:
    return "uid,size_gb,hours,mem_gb\n" + "".join(",".join(map(str, r)) + "\n" for r in rows)


def random_case(seed: int) -> tuple[list[DataSet], list[NodeState]]:
    """A small random workload on a small random heterogeneous cluster."""
    rng = random.Random(seed)
    nodes = [NodeState(f"ws{i}", 1, 24.0, None, rng.choice([0.5, 0.7])) for i in range(rng.randint(1, 3))]
    nodes += [NodeState(f"mid{i}", rng.randint(1, 3), 64.0, rng.choice([None, 24.0, 48.0]), 1.0)
              for i in range(rng.randint(0, 3))]
    nodes.append(NodeState("big", rng.randint(1, 2), 512.0, 240.0, rng.choice([1.0, 1.5])))
    queue = [DataSet(f"u{i}", size_gb=round(rng.uniform(1, 100), 1),
                     hours=round(rng.lognormvariate(math.log(6), 1.0), 3),
                     mem_gb=rng.choice([4.0, 8.0, 16.0, 20.0, 40.0, 200.0, 700.0]))
              for i in range(rng.randint(1, 120))]
    return queue, nodes


@pytest.mark.parametrize("seed", range(25))
def test_simulated_makespan_is_never_below_the_lower_bound(seed):
    queue, nodes = random_case(seed)
    bound = est.lower_bound(queue, nodes)
    for policy in ("lpt", "greedy"):
        sim = est.simulate(queue, nodes, policy)
        assert sim.failures_avoidable == 0
        assert sim.completed + len(sim.unplaceable) == len(queue)
        assert sim.makespan_h >= bound.hours - 1e-6


def test_lower_bound_is_the_longest_data_set_when_one_dominates():
    queue = [DataSet("long", hours=100.0, mem_gb=8.0)] + [DataSet(f"s{i}", hours=1.0, mem_gb=8.0) for i in range(10)]
    nodes = [NodeState("a", 4, 64.0, None, 2.0), NodeState("b", 4, 64.0, None, 1.0)]
    bound = est.lower_bound(queue, nodes)
    assert bound.longest_uid == "long" and bound.hours == pytest.approx(50.0)
    assert est.simulate(queue, nodes).makespan_h == pytest.approx(50.0)


def test_lower_bound_counts_work_only_the_big_node_can_do():
    queue = [DataSet(f"big{i}", hours=10.0, mem_gb=300.0) for i in range(4)]
    queue += [DataSet(f"s{i}", hours=10.0, mem_gb=8.0) for i in range(4)]
    nodes = [NodeState("big", 1, 512.0, None, 1.0)] + [NodeState(f"ws{i}", 1, 24.0, None, 1.0) for i in range(8)]
    assert est.lower_bound(queue, nodes).hours == pytest.approx(40.0)


def test_disk_peak_counts_data_sets_running_together():
    queue = [DataSet("a", size_gb=100.0, hours=5.0, mem_gb=8.0), DataSet("b", size_gb=50.0, hours=5.0, mem_gb=8.0)]
    sim = est.simulate(queue, [NodeState("n", 2, 16.0)], expansion=3.0)
    assert sim.disk_peak_gb == {"n": 450.0}
    assert sim.utilisation == {"n": 1.0}
    assert sim.cpu_hours == pytest.approx(10.0)


def test_fifo_failures_are_retried_then_given_up():
    queue = [DataSet("toolong", hours=30.0, mem_gb=8.0), DataSet("ok", hours=5.0, mem_gb=8.0)]
    sim = est.simulate(queue, [NodeState("n", 1, 16.0, walltime_h=10.0)], "fifo", max_attempts=3)
    assert sim.failures_by_cause == {"walltime": 3}
    assert sim.gave_up == ("toolong",)
    assert sim.makespan_h == pytest.approx(35.0)  # three 10 h walltime kills + the 5 h job


def test_running_attempts_push_the_finish_later():
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    queue = [DataSet("q", hours=4.0, mem_gb=8.0)]
    idle = est.estimate_campaign(queue, [], [NodeState("n", 1, 16.0)], now)
    busy = est.estimate_campaign(queue, [], [NodeState("n", 1, 16.0, busy_h=(6.0,))], now)
    assert idle.finish_at == now + timedelta(hours=4)
    assert busy.finish_at == now + timedelta(hours=10)
    assert busy.lower_bound_h <= busy.remaining_h


def test_a_running_attempt_holds_its_slot_in_the_campaign_replay_for_the_hours_it_has_left():
    """The live estimate's replay: a 10 h attempt that has run 2 h keeps the one slot 8 h more, so the
    queued 4 h data set ends at 12 h (not at 4 h, as if the slot were free at once)."""
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    queue = [DataSet("q", hours=4.0, mem_gb=8.0)]
    result = est.estimate_campaign(queue, [], [NodeState("n", 1, 16.0, busy_h=(0.0,))], now,
                                   running=[(DataSet("r", hours=10.0, mem_gb=8.0), "n", 2.0)])
    assert result.simulation.makespan_h == pytest.approx(12.0)


def test_an_attempt_launched_but_not_started_holds_its_slot_for_its_whole_hours_in_the_live_estimate(tmp_path):
    """`ari estimate campaign` on a campaign whose one slot has a pending 10 h attempt: the queued 4 h data set
    ends at 14 h, as the engine's plan counts it (not at 4 h, as if the slot were free until the job starts)."""
    import time

    from ari_console import alma, store
    from ari_console.config import load_config
    from ari_console.readmodel import campaign_estimate

    (tmp_path / "ari.toml").write_text('[campaign]\nname = "c"\n[[node]]\nname = "ws"\nmem_gb = 16\n')
    nodes = load_config(tmp_path / "ari.toml").nodes
    db = store.open_db(tmp_path / "ari.db")
    now = time.time()
    store.sync_nodes(db, nodes, now)
    store.import_datasets(db, [alma.DataSet("uid://A001/X1/X1", "2016.1.00123.S", hours=10.0, mem_gb=8.0),
                               alma.DataSet("uid://A001/X1/X2", "2016.1.00123.S", hours=4.0, mem_gb=8.0)], "w.csv", now)
    store.create_attempt(db, "uid://A001/X1/X1", "ws", now)
    queue, _, result = campaign_estimate(db, nodes, now)
    assert [ds.uid for ds in queue] == ["uid://A001/X1/X2"]
    assert result.simulation.makespan_h == pytest.approx(14.0)


def test_campaign_estimate_predicts_from_history_when_hours_are_unknown():
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    history = [Measured(f"h{i}", 10.0 * (i + 1), 1.0 * (i + 1), 1.0, 8.0) for i in range(10)]
    queue = [DataSet("q", size_gb=50.0)]
    result = est.estimate_campaign(queue, history, [NodeState("n", 1, 64.0)], now)
    assert 4.95 <= result.remaining_h <= 10.0  # the history says 5 h for 50 GB


def test_nodes_needed_is_the_fewest_that_meet_the_deadline():
    queue = [DataSet(f"u{i}", hours=10.0, mem_gb=8.0) for i in range(40)]
    nodes = [NodeState("ws", 1, 24.0, None, 1.0, node_class="ws")]
    need = est.nodes_needed(queue, nodes, "ws", deadline_h=50.0)
    assert need.add == 7 and need.makespan_h <= 50.0  # 8 nodes x 5 jobs x 10 h
    assert est.simulate(queue, est.add_nodes(nodes, "ws", need.add - 1)).makespan_h > 50.0


def test_nodes_needed_says_when_no_count_can_make_it():
    queue = [DataSet("long", hours=100.0, mem_gb=8.0)]
    need = est.nodes_needed(queue, [NodeState("ws", 1, 24.0)], "ws", deadline_h=50.0)
    assert need.add is None and "longest" in need.reason


# -- loaders ---------------------------------------------------------------------

def test_an_ari_toml_serves_as_a_nodes_file():
    text = ('[campaign]\nname = "c"\n\n[[node]]\nname = "ws1"\ntransport = "ssh"\nhost = "ws1.example.org"\n'
            'slots = 1\nmem_gb = 24\nspeed = 0.6\nrecipe = "alma-pipeline"\ncasa_versions = ["6.5.4"]\n')
    (node,) = est.parse_nodes(text, "ari.toml")
    assert (node.name, node.mem_gb, node.speed, node.recipes, node.casa_versions) == (
        "ws1", 24.0, 0.6, ("alma-pipeline",), ("6.5.4",))


def test_casa_installs_by_version_count_as_the_nodes_casa_versions_and_the_rest_fits_no_node():
    text = ('[campaign]\nname = "c"\n\n[[node]]\nname = "ws1"\nslots = 1\nmem_gb = 24\n'
            'casa = { "6.5.4-9" = "/opt/casa-6.5.4/bin/python3", "4.7.2" = "/opt/casa-4.7.2/bin/casa" }\n')
    (node,) = est.parse_nodes(text, "ari.toml")
    assert node.casa_versions == ("6.5.4-9", "4.7.2")
    queue = [DataSet("old", hours=1.0, mem_gb=4.0, casa_version="4.7.2"),
             DataSet("odd", hours=1.0, mem_gb=4.0, casa_version="5.1.1")]
    sim = est.simulate(queue, [node])
    assert [u.dataset.uid for u in sim.unplaceable] == ["odd"]
    assert sim.unplaceable[0].reason.startswith("needs CASA 5.1.1")


def test_node_count_makes_identical_nodes_of_one_class():
    nodes = est.parse_nodes(NODES_TOML, "n.toml")
    assert [n.name for n in nodes] == ["ws01", "ws02", "ws03", "mup", "hpc"]
    assert {n.klass for n in nodes[:3]} == {"ws"}
    assert nodes[0].walltime_h is None and nodes[3].walltime_h == 48.0


@pytest.mark.parametrize("text, words", [
    ('[[node]]\nname = "a"\nmem_gbb = 24\n', ['n.toml: node "a"', 'unknown key "mem_gbb"', 'did you mean "mem_gb"']),
    ('[[node]]\nname = "a"\nwalltime_h = "2d"\n', ['n.toml: node "a"', "walltime_h", '"2d"', "write 48"]),
    ('[[node]]\nname = "a"\nmem_gb = "512G"\n', ["mem_gb", "write 512"]),
    ('[[node]]\nname = "a"\nwalltime_h = "2-00:00:00"\n', ["walltime_h", '"2-00:00:00"', "write 48"]),
    ('[[node]]\nname = "a"\nwalltime_h = "36:30:00"\n', ["walltime_h", "write 36.5"]),
    ('[[node]]\nname = "a"\nslots = "two"\n', ["slots", '"two"', "write 2"]),
    ('[[node]]\nslots = 2\n', ["n.toml: node #1", "name is missing"]),
    ('[node]\nname = "a"\n', ["[[node]]"]),
])
def test_bad_node_table_names_file_node_key_and_fix(text, words):
    with pytest.raises(UserError) as err:
        est.parse_nodes(text, "n.toml")
    for word in words:
        assert word in str(err.value)


@pytest.mark.parametrize("text, words", [
    (workload_csv([("a", 10, 6, 8), ("b", 10, "6h", 8)]), ["w.csv: line 3", "hours", '"6h"', "write 6"]),
    (workload_csv([("a", 10, 6, 8), ("b", -1, 6, 8)]), ["w.csv: line 3", "size_gb", "-1"]),
    (workload_csv([("a", 10, 6, 8), ("a", 10, 6, 8)]), ["w.csv: line 3", '"a"', "line 2"]),
    (workload_csv([("a", 10, 6)]), ["w.csv: line 2", "3 values for 4 columns"]),
    ("uid,size,hours\na,1,2\n", ["w.csv: line 1", 'unknown column "size"', 'did you mean "size_gb"']),
])
def test_bad_workload_row_is_named_by_line_and_value(text, words):
    with pytest.raises(UserError) as err:
        est.parse_workload(text, "w.csv")
    for word in words:
        assert word in str(err.value)


def test_workload_cells_left_empty_are_predicted():
    queue = est.parse_workload("uid,size_gb,hours,mem_gb\na,40,,\n", "w.csv")
    sim = est.simulate(queue, [NodeState("n", 1, 64.0)])
    assert queue[0].hours is None and sim.completed == 1 and sim.makespan_h > 0


# -- the commands ----------------------------------------------------------------

@pytest.fixture
def files(tmp_path):
    rng = random.Random(3)
    rows = [(f"uid://A001/X1/X{i:x}", round(rng.uniform(1, 80), 1), round(rng.lognormvariate(math.log(6), 0.8), 2),
             rng.choice([8, 16, 20, 40, 300])) for i in range(150)]
    rows.append(("uid://A001/X1/Xhuge", 10, 5, 2000))
    (tmp_path / "w.csv").write_text(workload_csv(rows))
    (tmp_path / "n.toml").write_text(NODES_TOML)
    return tmp_path


def test_simulate_json_has_the_contract_keys(files):
    result = CliRunner().invoke(app, ["simulate", "--workload", str(files / "w.csv"),
                                      "--nodes", str(files / "n.toml"), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    for key in ("makespan_h", "lower_bound_h", "policy", "jobs", "failures_avoidable",
                "unplaceable", "cpu_hours", "disk_peak_gb", "utilisation"):
        assert key in data
    assert data["policy"] == "lpt" and data["jobs"] == 151 and data["failures_avoidable"] == 0
    assert data["makespan_h"] >= data["lower_bound_h"] > 0
    assert [u["uid"] for u in data["unplaceable"]] == ["uid://A001/X1/Xhuge"]
    assert "2,000 GB" in data["unplaceable"][0]["reason"]
    assert set(data["utilisation"]) == {"ws01", "ws02", "ws03", "mup", "hpc"}


def test_simulate_fifo_shows_avoidable_failures(files):
    result = CliRunner().invoke(app, ["simulate", "--workload", str(files / "w.csv"),
                                      "--nodes", str(files / "n.toml"), "--policy", "fifo", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["failures_avoidable"] > 0


def test_simulate_prints_tables_for_people(files):
    result = CliRunner().invoke(app, ["simulate", "--workload", str(files / "w.csv"),
                                      "--nodes", str(files / "n.toml")])
    assert result.exit_code == 0, result.output
    assert "makespan" in result.stdout and "ws01" in result.stdout
    assert "1 unplaceable (memory: needs 2,000 GB memory" in result.output and "X1/Xhuge" in result.output


def test_simulate_names_many_unplaceable_data_sets_in_one_line_per_kind(tmp_path):
    """Forty data sets too big for every node: one warning with the count, the reason, the fix and a
    few of them, not forty lines."""
    rows = ["uid,size_gb,hours,mem_gb"] + [f"big{i},10,2,900" for i in range(40)] + ["ok,10,2,8"]
    (tmp_path / "w.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "n.toml").write_text('[[node]]\nname = "hpc"\nslots = 2\nmem_gb = 512\n')
    result = CliRunner().invoke(app, ["simulate", "--workload", str(tmp_path / "w.csv"),
                                      "--nodes", str(tmp_path / "n.toml")])
    assert result.exit_code == 0, result.output
    lines = [ln for ln in result.output.splitlines() if "unplaceable (" in ln]
    assert len(lines) == 1
    assert lines[0].startswith("40 unplaceable (memory: needs 900 GB memory; the largest node (hpc) has 512 GB)")
    assert "add a node with that much memory" in lines[0] and "big0, big1, big2 and 37 more" in lines[0]


def test_simulate_names_the_bad_csv_line(files):
    (files / "bad.csv").write_text(workload_csv([("a", 10, 6, 8), ("b", 10, 6, "lots")]))
    result = CliRunner().invoke(app, ["simulate", "--workload", str(files / "bad.csv"),
                                      "--nodes", str(files / "n.toml"), "--json"])
    assert isinstance(result.exception, UserError)
    assert str(result.exception).startswith('bad.csv: line 3: mem_gb must be a number of GB, got "lots"')


def test_simulate_refuses_an_unknown_policy(files):
    result = CliRunner().invoke(app, ["simulate", "--workload", str(files / "w.csv"),
                                      "--nodes", str(files / "n.toml"), "--policy", "lptt"])
    assert isinstance(result.exception, UserError) and "write lpt" in str(result.exception)


def test_plan_json_says_how_many_nodes_meet_the_deadline(files):
    args = ["plan", "--deadline", "7d", "--workload", str(files / "w.csv"), "--nodes", str(files / "n.toml"),
            "--add-class", "mup", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["deadline_h"] == 168.0 and data["add"] >= 1 and data["makespan_h"] <= 168.0
    queue = est.parse_workload((files / "w.csv").read_text())
    nodes = est.parse_nodes(NODES_TOML)
    assert est.simulate(queue, est.add_nodes(nodes, "mup", data["add"] - 1)).makespan_h > 168.0


def test_plan_says_when_the_class_cannot_help(files):
    args = ["plan", "--deadline", "5d", "--workload", str(files / "w.csv"), "--nodes", str(files / "n.toml"),
            "--add-class", "mup", "--json"]
    result = CliRunner().invoke(app, args)
    data = json.loads(result.stdout)
    assert result.exit_code == 1 and data["add"] is None and "mup cannot run" in data["reason"]


def test_plan_refuses_an_unknown_class_with_a_suggestion(files):
    args = ["plan", "--deadline", "5d", "--workload", str(files / "w.csv"), "--nodes", str(files / "n.toml"),
            "--add-class", "mupp"]
    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, UserError) and 'did you mean "mup"' in str(result.exception)


def test_plan_refuses_a_deadline_it_cannot_read(files):
    args = ["plan", "--deadline", "soon", "--workload", str(files / "w.csv"), "--nodes", str(files / "n.toml"),
            "--add-class", "mup"]
    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, UserError) and "180d" in str(result.exception)


# -- hidden truth: the replay learns what the archive does not say ------------------

def test_walltime_kill_teaches_a_floor_and_the_retry_goes_where_it_fits():
    fast_short = NodeState("mup", 1, 64.0, walltime_h=20.0, speed=1.0)
    slow_long = NodeState("ws", 1, 64.0, walltime_h=None, speed=0.5)
    queue = [DataSet("big", size_gb=40.0)]  # the prior says ~6 h: the short fast node looks best
    sim = est.simulate(queue, [fast_short, slow_long], actual={"big": (30.0, 8.0)})
    assert sim.kills == {"memory": 0, "walltime": 1}
    assert sim.completed == 1 and sim.gave_up == ()
    assert sim.makespan_h == pytest.approx(20.0 + 30.0 / 0.5)  # killed at 20 h, then 60 h where nothing kills it
    assert sim.wasted_cpu_hours == pytest.approx(20.0)
    assert sim.killed == (est.Kill("mup", 1, "walltime", 20.0, 20.0),)  # where, which attempt, why, cost, when


def test_memory_kill_costs_part_of_a_run_and_the_retry_goes_to_a_bigger_node():
    small = NodeState("ws", 1, 16.0, speed=1.0)
    big = NodeState("hpc", 1, 512.0, speed=0.5)
    sim = est.simulate([DataSet("cube", size_gb=40.0)], [small, big], actual={"cube": (10.0, 40.0)},
                       memory_kill_after=0.5)
    assert sim.kills == {"memory": 1, "walltime": 0}
    assert sim.makespan_h == pytest.approx(5.0 + 20.0)
    assert sim.wasted_cpu_hours == pytest.approx(5.0)


def test_a_retry_no_node_can_run_is_parked_without_planning_the_queue_again(monkeypatch):
    """A memory kill on the largest node shows a data set needs more than any node has: the replay
    reports it unplaceable with that reason, as a new plan would, and keeps its plan for the rest."""
    plans = []
    make_plan = est.sch.placement.make_plan

    def counting(*args, **kwargs):
        plans.append(1)
        return make_plan(*args, **kwargs)

    monkeypatch.setattr(est.sch.placement, "make_plan", counting)
    nodes = [NodeState("hpc", 1, 512.0, walltime_h=240.0, speed=1.0)]
    queue = [DataSet("cube", size_gb=40.0, hours=10.0, mem_gb=300.0)] + [
        DataSet(f"u{i}", size_gb=5.0, hours=2.0, mem_gb=8.0) for i in range(3)]
    truth = {"cube": (10.0, 700.0), **{f"u{i}": (2.0, 8.0) for i in range(3)}}
    sim = est.simulate(queue, nodes, actual=truth)
    assert sim.kills == {"memory": 1, "walltime": 0} and sim.completed == 3
    assert [u.dataset.uid for u in sim.unplaceable] == ["cube"]
    assert "needs more than 512 GB memory (an attempt ran out of it)" in sim.unplaceable[0].reason
    assert sim.makespan_h == pytest.approx(5.0 + 3 * 2.0)  # killed half way, then the three small ones
    assert len(plans) == 1


def test_truth_never_reaches_the_predictions():
    """Two replays whose truths differ plan from the same predictions (when they do not learn)."""
    queue = [DataSet(f"u{i}", size_gb=10.0 + i) for i in range(60)]
    nodes = [NodeState("n", 4, 64.0)]
    quick = est.simulate(queue, nodes, actual={d.uid: (1.0, 4.0) for d in queue}, learn=False)
    slow = est.simulate(queue, nodes, actual={d.uid: (9.0, 4.0) for d in queue}, learn=False)
    assert quick.plan_makespan_h == slow.plan_makespan_h > 0
    assert slow.makespan_h > 5 * quick.makespan_h


def hidden_case(n: int = 400, seed: int = 4) -> tuple[list[DataSet], dict, list[NodeState]]:
    """Hours ~ size x channels with lognormal scatter; memory with the channels; a small mixed cluster."""
    rng = random.Random(seed)
    queue, truth = [], {}
    for i in range(n):
        size, chans = rng.lognormvariate(math.log(30), 0.8), rng.choice([480, 960, 1920, 3840])
        ds = DataSet(f"u{i}", size_gb=round(size, 2), n_spw=4, n_chan=chans, array="12m", is_mosaic=False)
        queue.append(ds)
        truth[ds.uid] = (0.15 * size * (chans / 1920) ** 0.5 * rng.lognormvariate(0, 0.4),
                         6.0 * (chans / 1920) ** 0.6 * rng.lognormvariate(0, 0.2))
    nodes = [NodeState(f"ws{i}", 1, 24.0, None, 0.6) for i in range(4)]
    nodes += [NodeState(f"mup{i}", 2, 64.0, 24.0, 1.0) for i in range(3)]
    return queue, truth, nodes


def test_replay_without_refits_keeps_the_fit_it_was_given_but_a_kill_still_teaches_the_floor():
    """refit=False: a policy that knows each data set's distribution from the start (the fit given),
    whose kills still teach the one data set its floor, so its retry goes where that fits."""
    queue, truth, nodes = hidden_case(120, seed=5)
    known = est.sch.fit_history([est.attempt(ds, truth[ds.uid][0], 1.0, "ok", truth[ds.uid][1]) for ds in queue])
    known = replace_node(known, own={})
    sim = est.simulate(queue, nodes, history=known, actual=truth, refit=False)
    assert sim.refits == 0 and sim.completed == len(queue) and sim.gave_up == ()
    assert all(k.attempt == 1 for k in sim.killed if k.outcome == "walltime")  # the floor sent every retry elsewhere
    learning = est.simulate(queue, nodes, history=known, actual=truth)
    assert learning.refits > 0


def test_learning_replay_refits_and_forecasts_a_band_that_holds_the_finish():
    queue, truth, nodes = hidden_case()
    sim = est.simulate(queue, nodes, actual=truth, forecast_at=(0.25, 0.5))
    assert sim.refits >= 3 and sim.completed == len(queue)
    bound = est.lower_bound(queue, nodes, predictions=est.truth_predictions(queue, truth)).hours
    assert bound <= sim.makespan_h <= 1.4 * bound  # 400 data sets: the prior's first guesses weigh a lot
    late = sim.forecasts[-1]
    assert late.done_fraction >= 0.5 and late.p10_h <= late.p50_h <= late.p90_h
    assert late.p10_h * 0.95 <= sim.makespan_h <= late.p90_h * 1.05


def test_hidden_truth_csv_replays_on_the_truth_and_reports_kills_waste_and_forecasts(tmp_path):
    queue, truth, _ = hidden_case(120, seed=5)
    rows = ["uid,size_gb,n_spw,n_chan,array,is_mosaic,n_eb,true_hours,true_mem_gb"]
    rows += [f"{d.uid},{d.size_gb},{d.n_spw},{d.n_chan},{d.array},no,1,{truth[d.uid][0]:.3f},{truth[d.uid][1]:.1f}"
             for d in queue]
    (tmp_path / "w.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "n.toml").write_text(NODES_TOML)
    result = CliRunner().invoke(app, ["simulate", "--workload", str(tmp_path / "w.csv"),
                                      "--nodes", str(tmp_path / "n.toml"), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    for key in ("cpu_hours", "wasted_cpu_hours", "completed", "gave_up", "forecasts", "makespan_h",
                "lower_bound_h", "policy", "jobs", "failures_avoidable", "mean_hours_per_dataset", "slots"):
        assert key in data
    assert set(data["kills"]) == {"memory", "walltime"} and data["hidden_truth"] is True
    assert data["completed"] == 120 and data["makespan_h"] >= data["lower_bound_h"] > 0
    assert data["mean_hours_per_dataset"] == pytest.approx(sum(h for h, _ in truth.values()) / 120, rel=1e-3)
    assert data["slots"] == 3 + 2 + 2
    assert [f["done_fraction"] >= 0.1 for f in data["forecasts"]][0]
    assert all(f["p10_h"] <= f["p50_h"] <= f["p90_h"] for f in data["forecasts"])


def test_plan_sizes_the_cluster_on_the_hidden_truth_never_on_the_predictions(tmp_path):
    queue, truth, _ = hidden_case(120, seed=5)
    truth = {u: (3 * h, m) for u, (h, m) in truth.items()}  # the archive's data sets are slower than the prior says
    rows = ["uid,size_gb,n_spw,n_chan,array,true_hours,true_mem_gb"]
    rows += [f"{d.uid},{d.size_gb},{d.n_spw},{d.n_chan},{d.array},{truth[d.uid][0]:.4f},{truth[d.uid][1]:.2f}"
             for d in queue]
    (tmp_path / "w.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "n.toml").write_text(NODES_TOML)
    work = est.read_workload((tmp_path / "w.csv").read_text())
    nodes = est.parse_nodes(NODES_TOML)
    deadline_h = 0.5 * est.simulate(work.datasets, nodes, actual=work.truth).makespan_h
    result = CliRunner().invoke(app, ["plan", "--deadline", f"{deadline_h:.3f}", "--workload", str(tmp_path / "w.csv"),
                                      "--nodes", str(tmp_path / "n.toml"), "--add-class", "mup", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["hidden_truth"] is True and data["add"] >= 1
    # the answer holds on the truth: with one node fewer the replay on the truth misses the deadline
    assert data["makespan_h"] <= data["deadline_h"] < est.simulate(
        work.datasets, est.add_nodes(nodes, "mup", data["add"] - 1), actual=work.truth).makespan_h
    assert data["lower_bound_h"] >= est.lower_bound(
        work.datasets, est.add_nodes(nodes, "mup", data["add"]),
        predictions=est.truth_predictions(work.datasets, work.truth)).hours - 1e-3
    # sizing on the predictions alone (the truth read as unknown) would have bought too few nodes
    blind = est.nodes_needed(work.datasets, nodes, "mup", float(f"{deadline_h:.3f}"))
    assert blind.add is not None and blind.add < data["add"]


def test_workload_truth_columns_stay_out_of_the_data_sets():
    work = est.read_workload("uid,size_gb,hours,is_mosaic,n_eb,true_hours,true_mem_gb\na,10,4,true,2,7.5,30\n")
    ds = work.datasets[0]
    assert (ds.hours, ds.is_mosaic, ds.n_eb) == (4.0, True, 2)
    assert work.truth == {"a": (7.5, 30.0)}


def test_bad_mosaic_cell_is_named_with_the_fix():
    with pytest.raises(UserError, match='line 2: is_mosaic must be true or false, got "maybe"'):
        est.read_workload("uid,is_mosaic\na,maybe\n", "w.csv")


def test_simulate_table_says_what_fifo_gave_up_beside_its_makespan(files):
    result = CliRunner().invoke(app, ["simulate", "--workload", str(files / "w.csv"),
                                      "--nodes", str(files / "n.toml"), "--policy", "fifo"])
    assert result.exit_code == 0, result.output
    assert "given up" in result.stdout and "per data set at speed 1.0" in result.stdout


def test_campaign_estimate_gives_a_band_around_its_finish():
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    rng = random.Random(2)
    history = [Measured(f"h{i}", s, 0.2 * s * rng.lognormvariate(0, 0.4), 1.0, 8.0)
               for i, s in enumerate(rng.uniform(5, 100) for _ in range(40))]
    queue = [DataSet(f"q{i}", size_gb=rng.uniform(5, 100)) for i in range(80)]
    result = est.estimate_campaign(queue, history, [NodeState("n", 4, 64.0)], now,
                                   running=[(DataSet("r", size_gb=50.0), "n", 3.0)])
    p10, p50, p90 = result.band_h
    assert 0 < p10 < p50 < p90
    assert p10 * 0.9 <= result.remaining_h <= p90 * 1.1
    assert result.band[1] == now + timedelta(hours=p50) and result.slots == 4


def test_plan_names_what_can_never_run_instead_of_answering_add_0_alone(files):
    args = ["plan", "--deadline", "365d", "--workload", str(files / "w.csv"), "--nodes", str(files / "n.toml"),
            "--add-class", "mup"]
    data = json.loads(CliRunner().invoke(app, [*args, "--json"]).stdout)
    assert data["add"] == 0 and data["datasets"] == 151 and data["never_run"] == 1
    [group] = data["never_run_groups"]
    assert (group["kind"], group["count"], group["uids"]) == ("memory", 1, ["uid://A001/X1/Xhuge"])
    assert "2,000 GB" in group["example"] and group["fix"].startswith("add a node with that much memory")
    result = CliRunner().invoke(app, args, env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "add 0 × mup for the 150 that can run; 1 of 151 can never run" in result.stdout
    assert "1 can never run (memory: needs 2,000 GB memory" in result.output and "uid://A001/X1/Xhuge" in result.output
    # a node big enough for it, added as the class, leaves nothing that can never run
    bigger = NODES_TOML + '\n[[node]]\nname = "fat"\nslots = 1\nmem_gb = 4096\nwalltime_h = 48\nspeed = 1.0\n'
    (files / "n2.toml").write_text(bigger)
    args2 = [a if a != str(files / "n.toml") else str(files / "n2.toml") for a in args]
    args2[args2.index("mup")] = "fat"
    assert json.loads(CliRunner().invoke(app, [*args2, "--json"]).stdout)["never_run"] == 0


def test_plan_counts_a_data_set_no_nodes_scratch_can_hold_as_never_run_disk_with_the_scratch_to_add(files):
    scratch = NODES_TOML.replace('name = "ws"\n', 'name = "ws"\nscratch_gb = 200\n') \
        .replace('name = "mup"\n', 'name = "mup"\nscratch_gb = 500\n').replace('name = "hpc"\n', 'name = "hpc"\nscratch_gb = 2000\n')
    (files / "s.toml").write_text(scratch)
    with (files / "w.csv").open("a") as f:
        f.write("uid://A001/X1/Xbig,800,5,8\n")  # 800 GB from the archive: 2,400 GB of scratch
    args = ["plan", "--deadline", "365d", "--workload", str(files / "w.csv"), "--nodes", str(files / "s.toml"),
            "--add-class", "mup"]
    data = json.loads(CliRunner().invoke(app, [*args, "--json"]).stdout)
    assert data["datasets"] == 152 and data["never_run"] == 2
    groups = {g["kind"]: g for g in data["never_run_groups"]}
    assert set(groups) == {"memory", "disk"} and groups["disk"]["uids"] == ["uid://A001/X1/Xbig"]
    assert groups["disk"]["example"] == "needs 2,400 GB of scratch; the largest scratch (hpc) has 2,000 GB"
    assert groups["disk"]["fix"].startswith("add a node with at least 2,401 GB of scratch")
    result = CliRunner().invoke(app, args, env={"COLUMNS": "250"})
    assert result.exit_code == 0 and "1 can never run (disk: needs 2,400 GB of scratch" in result.output
    # the same nodes without scratch_gb: nothing known about their disks, nothing refused for it
    (files / "n.toml").write_text(NODES_TOML)
    plain = json.loads(CliRunner().invoke(app, [*args[:-4], "--nodes", str(files / "n.toml"), "--add-class", "mup",
                                                 "--json"]).stdout)
    assert plain["never_run"] == 1 and [g["kind"] for g in plain["never_run_groups"]] == ["memory"]


@pytest.mark.parametrize("seed", range(6))
def test_a_replay_never_places_a_data_set_where_its_scratch_cannot_fit(seed):
    from ari_console import scheduler as sch

    queue, nodes = random_case(seed)
    rng = random.Random(seed)
    nodes = [replace_node(n, scratch_gb=rng.choice([None, 60.0, 150.0, 400.0])) for n in nodes]
    placed = sch.place(queue, nodes, 0.0, policy="lpt")
    by_name = {n.name: n for n in nodes}
    for ds, node in placed.pairs:
        assert by_name[node.name].scratch_gb is None or ds.size_gb * 3 <= by_name[node.name].scratch_gb
    for u in placed.unplaceable:
        assert u.reason
    sim = est.simulate(queue, nodes, "lpt")
    assert sim.failures_avoidable == 0 and sim.completed + len(sim.unplaceable) == len(queue)
    roomiest = max((math.inf if n.scratch_gb is None else n.scratch_gb) for n in nodes)
    too_big = {ds.uid for ds in queue if ds.size_gb * 3 + 0.05 > roomiest}
    assert too_big <= {u.dataset.uid for u in sim.unplaceable}
    for u in sim.unplaceable:
        if u.dataset.uid in too_big and u.dataset.mem_gb <= 512:
            assert "GB of scratch" in u.reason


def replace_node(node, **kw):
    from dataclasses import replace

    return replace(node, **kw)


@pytest.mark.parametrize("model", ["loglinear", "bands"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_learning_replay_wastes_little_and_finishes_near_the_clairvoyant_bound(model, seed):
    """600 data sets whose hours and memory are hidden (the benchmark's generators) on a small
    study-shaped cluster: lpt learns them as it goes, loses at most 5 % of its CPU-hours to kills
    and finishes within 6 % of the bound that knows the truth; fifo does worse on both."""
    from benchmarks import hidden

    nodes = ([NodeState(f"ws{i}", 1, 24.0, None, 0.6) for i in range(2)]
             + [NodeState(f"mup{i}", 2, 64.0, 48.0, 1.0) for i in range(2)] + [NodeState("hpc", 2, 512.0, 240.0, 1.2)])
    work, truth = hidden.workload(model, 600, seed)
    bound = est.lower_bound(work, nodes, predictions=est.truth_predictions(work, truth)).hours
    runs = {policy: est.simulate(work, nodes, policy, actual=truth) for policy in ("lpt", "fifo")}
    waste = {p: r.wasted_cpu_hours / r.cpu_hours for p, r in runs.items()}
    assert runs["lpt"].completed == len(work)
    assert waste["lpt"] <= 0.05 and runs["lpt"].makespan_h <= 1.06 * bound
    assert waste["fifo"] > waste["lpt"] and runs["fifo"].makespan_h > runs["lpt"].makespan_h


def test_a_workload_may_carry_the_archives_guesses_as_a_prior_and_a_bad_one_names_the_fix():
    work = est.read_workload("uid,size_gb,archive_hours,archive_mem_gb,true_hours\na,10,2,8,5\n")
    ds = work.datasets[0]
    assert (ds.hours, ds.mem_gb, ds.prior_hours, ds.prior_mem_gb, work.truth) == (None, None, 2.0, 8.0, {"a": (5.0, None)})
    with pytest.raises(UserError, match='w.csv: line 2: archive_hours must be a number of hours, got "2h" — write 2'):
        est.read_workload("uid,archive_hours\na,2h\n", "w.csv")


def test_a_data_set_killed_for_memory_on_the_largest_node_is_reported_as_needing_more_than_it():
    """With hidden truth, a data set that runs out of memory on the largest node is given up as
    unplaceable, and the reason names what the kill taught (more than 512 GB), not a guess."""
    from ari_console import scheduler as sch

    nodes = [sch.NodeState("ws", slots=2, mem_gb=24.0, speed=0.6), sch.NodeState("hpc", slots=2, mem_gb=512.0,
                                                                                  walltime_h=240.0)]
    queue = [sch.DataSet(f"uid://A001/X1/X{i}", size_gb=20.0 + i) for i in range(12)]
    truth = {ds.uid: (5.0, 8.0) for ds in queue}
    truth[queue[3].uid] = (5.0, 900.0)
    sim = est.simulate(queue, nodes, "lpt", actual=truth)
    assert [u.dataset.uid for u in sim.unplaceable] == [queue[3].uid]
    reason = sim.unplaceable[0].reason
    assert reason.startswith("needs more than 512 GB memory (an attempt ran out of it)"), reason
    assert est.never_run_kind(reason) == "memory"
    assert sim.kills["memory"] >= 1 and sim.completed == 11


@pytest.mark.parametrize("enabled", [True, False])
def test_a_replay_leaves_the_garbage_collector_as_it_found_it(enabled):
    import gc

    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        r = est.simulate([DataSet(f"d{i}", hours=1.0 + i, mem_gb=8) for i in range(5)],
                         [NodeState("n", slots=2, mem_gb=16)])
        assert r.completed == 5 and gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()


def test_a_replan_counts_running_attempts_by_their_predictions_never_their_truth(monkeypatch):
    """Two learning replays whose truths differ in one long data set alone: every plan made while its
    first attempt runs (in both) sees the same busy slots, as the engine, which cannot know when it ends."""
    queue, truth, nodes = hidden_case(120, seed=5)
    place = est.sch.place

    def replay(actual):
        seen, launched = [], []

        def recording(queue, state, now, policy, model, plan, *args):
            if plan is None:
                seen.append((round(now, 6), [(s.name, tuple(round(b, 6) for b in s.busy_h)) for s in state]))
            out = place(queue, state, now, policy, model, plan, *args)
            launched.extend((now, ds.uid, node.speed) for ds, node in out.pairs)
            return out

        monkeypatch.setattr(est.sch, "place", recording)
        sim = est.simulate(queue, nodes, actual=actual)
        monkeypatch.setattr(est.sch, "place", place)
        return sim, seen, launched

    quick, quick_plans, quick_launches = replay(truth)
    first = [(truth[uid][0] / speed, uid) for t, uid, speed in quick_launches if t == 0]
    runs, big = max(first)  # the longest of the attempts started first: it runs while the early refits re-plan
    slower = {**truth, big: (truth[big][0] * 1.6, truth[big][1])}
    slow, slow_plans, _ = replay(slower)
    both = [p for p in quick_plans if 0 < p[0] < min(runs, 24.0)]  # (24 h: the walltime of the mup nodes)
    assert both
    assert both == [p for p in slow_plans if 0 < p[0] < min(runs, 24.0)]
    assert any(busy for _, state in both for _, busy in state)  # running attempts were counted busy
    assert slow.makespan_h != quick.makespan_h or slow.cpu_hours != quick.cpu_hours
