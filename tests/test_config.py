"""ari.toml: typed config, and errors that name file, node, key and fix."""

from pathlib import Path

import pytest

from ari_console.config import load_config, parse_config, starter_config
from ari_console.errors import UserError

P = Path("/campaigns/c1/ari.toml")


def error_of(text: str) -> str:
    with pytest.raises(UserError) as info:
        parse_config(text, P)
    return str(info.value)


def test_full_config_reads_into_typed_values():
    cfg = parse_config(
        """
        [campaign]
        name = "cycle4"
        work_dir = "state"
        archive_url = "http://127.0.0.1:8080"
        max_attempts = 4
        [[node]]
        name = "ws01"
        transport = "ssh"
        host = "ws01.example.org"
        port = 2222
        user = "ari"
        identity_file = "~/.ssh/id_ed25519"
        slots = 2
        mem_gb = 24
        speed = 0.6
        [[node]]
        name = "hpc"
        batch = "slurm"
        partition = "long"
        walltime_h = 240
        mem_gb = 512
        casa_versions = ["6.5.4", "6.6.1"]
        """,
        P,
    )
    assert cfg.campaign.name == "cycle4"
    assert cfg.campaign.work_dir == Path("/campaigns/c1/state")
    assert cfg.campaign.db_path == Path("/campaigns/c1/state/ari.db")
    assert cfg.campaign.max_attempts == 4
    ws, hpc = cfg.nodes
    assert (ws.transport, ws.host, ws.port, ws.slots, ws.mem_gb, ws.speed) == ("ssh", "ws01.example.org", 2222, 2, 24.0, 0.6)
    assert ws.identity_file == Path("~/.ssh/id_ed25519").expanduser()
    assert ws.walltime_h is None
    assert (hpc.transport, hpc.batch, hpc.partition, hpc.walltime_h) == ("local", "slurm", "long", 240.0)
    assert hpc.casa_versions == ("6.5.4", "6.6.1")
    assert cfg.node("hpc") is hpc


def test_slots_given_as_a_word_names_the_node_the_key_and_the_fix():
    msg = error_of('[[node]]\nname = "mup03"\nslots = "two"\n')
    assert msg == 'ari.toml: node "mup03": slots must be a whole number, got "two" — write 2'


def test_walltime_written_as_days_suggests_hours():
    msg = error_of('[[node]]\nname = "mup03"\nwalltime_h = "2d"\n')
    assert msg == 'ari.toml: node "mup03": walltime_h must be a number of hours, got "2d" — write 48'


def test_walltime_written_as_a_batch_time_limit_suggests_hours():
    msg = error_of('[[node]]\nname = "mup03"\nwalltime_h = "48:00:00"\n')
    assert msg == 'ari.toml: node "mup03": walltime_h must be a number of hours, got "48:00:00" — write 48'
    assert error_of('[[node]]\nname = "a"\nwalltime_h = "1-12"\n').endswith("— write 36")


def test_a_number_with_a_unit_suggests_it_in_the_keys_unit_and_an_unknown_unit_suggests_nothing():
    """ari.toml reads a unit as an estimate's nodes file does: memory in GiB, a poll interval in minutes;
    "2 months" is not taken for two minutes."""
    assert error_of('[[node]]\nname = "a"\nmem_gb = "512 GiB"\n').endswith('got "512 GiB" — write 549.7558')
    assert error_of('[campaign]\npoll_interval_s = "2 min"\n').endswith('got "2 min" — write 120')
    assert error_of('[[node]]\nname = "a"\nwalltime_h = "2 weeks"\n').endswith("— write 336")
    assert error_of('[[node]]\nname = "a"\nwalltime_h = "2 months"\n').endswith('got "2 months"')


def test_unknown_key_suggests_the_closest_known_one():
    msg = error_of('[[node]]\nname = "a"\nmemory_gb = 8\n')
    assert 'node "a": unknown key "memory_gb"' in msg and 'did you mean "mem_gb"' in msg
    msg = error_of('[campaign]\nmax_attempt = 2\n')
    assert '[campaign]: unknown key "max_attempt"' in msg and '"max_attempts"' in msg
    assert 'unknown table "nodes"' in error_of('[[nodes]]\nname = "a"\n')


@pytest.mark.parametrize(
    "text, expected",
    [
        ('[[node]]\nname = "a"\ntransport = "sssh"\n', 'node "a": transport must be one of local, ssh, got "sssh" — write ssh'),
        ('[[node]]\nname = "a"\ntransport = "ssh"\n', 'node "a": host is missing'),
        ('[[node]]\nname = "a"\n[[node]]\nname = "a"\n', 'node "a": name is used by two nodes'),
        ('[[node]]\nslots = 1\n', "node #1: name is missing"),
        ('[[node]]\nname = "a"\nslots = 0\n', 'node "a": slots must be positive'),
        ('[[node]]\nname = "a"\ntrust_new_host_keys = "yes"\n', "must be true or false"),
        ('[node]\nname = "a"\n', "write [[node]], not [node]"),
        ('[[node]\nname = "a"\n', "not valid TOML"),
    ],
)
def test_each_mistake_gets_one_line_naming_it(text, expected):
    msg = error_of(text)
    assert expected in msg
    assert msg.startswith("ari.toml: ") and "\n" not in msg


def test_missing_file_says_how_to_make_one(tmp_path):
    with pytest.raises(UserError, match="run `ari init`"):
        load_config(tmp_path / "ari.toml")


def test_starter_config_is_valid_and_has_one_local_node(tmp_path):
    path = tmp_path / "ari.toml"
    path.write_text(starter_config(name="c", python="/usr/bin/python3", scratch="/scratch", mem_gb=16))
    cfg = load_config(path)
    assert [(n.name, n.transport, n.batch, n.mem_gb) for n in cfg.nodes] == [("local", "local", "none", 16.0)]
    assert cfg.campaign.work_dir == tmp_path


def test_the_committed_config_reference_matches_the_code():
    from ari_console.config import reference_markdown

    doc = Path(__file__).resolve().parents[1] / "docs" / "config.md"
    assert doc.read_text() == reference_markdown(), "docs/config.md is stale — run `ari config reference --markdown > docs/config.md`"
