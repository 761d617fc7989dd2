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


def test_campaign_estimate_predicts_from_history_when_hours_are_unknown():
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    history = [Measured(f"h{i}", 10.0 * (i + 1), 1.0 * (i + 1), 1.0, 8.0) for i in range(10)]
    queue = [DataSet("q", size_gb=50.0)]
    result = est.estimate_campaign(queue, history, [NodeState("n", 1, 64.0)], now)
    assert 5.0 <= result.remaining_h <= 10.0


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


def test_node_count_makes_identical_nodes_of_one_class():
    nodes = est.parse_nodes(NODES_TOML, "n.toml")
    assert [n.name for n in nodes] == ["ws01", "ws02", "ws03", "mup", "hpc"]
    assert {n.klass for n in nodes[:3]} == {"ws"}
    assert nodes[0].walltime_h is None and nodes[3].walltime_h == 48.0


@pytest.mark.parametrize("text, words", [
    ('[[node]]\nname = "a"\nmem_gbb = 24\n', ['n.toml: node "a"', 'unknown key "mem_gbb"', 'did you mean "mem_gb"']),
    ('[[node]]\nname = "a"\nwalltime_h = "2d"\n', ['n.toml: node "a"', "walltime_h", '"2d"', "write 48"]),
    ('[[node]]\nname = "a"\nmem_gb = "512G"\n', ["mem_gb", "write 512"]),
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
    assert "2000 GB" in data["unplaceable"][0]["reason"]
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
    assert "Xhuge: unplaceable" in result.output


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
