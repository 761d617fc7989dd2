"""`ari nodes check`: one line per node per check, and a failure names its fix."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ARI = str(Path(sys.executable).parent / "ari")


def write_config(tmp_path, nodes: list[dict]) -> Path:
    lines = ["[campaign]", 'name = "t"']
    for n in nodes:
        lines.append("[[node]]")
        lines += [f"{k} = {json.dumps(v) if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else v}"
                  for k, v in n.items()]
    path = tmp_path / "ari.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def ssh_keys(server, **extra) -> dict:
    return {"transport": "ssh", "host": server.host, "port": server.port, "user": server.user,
            "identity_file": str(server.identity_file), "known_hosts": str(server.known_hosts),
            "python": sys.executable, "casa_path": sys.executable, **extra}


def casa_env(casa) -> str:
    return f'{{ CASASITECONFIG = "{casa.site_config}" }}'


def check(tmp_path, *names) -> tuple[int, list[dict], str]:
    env = {**os.environ, "COLUMNS": "250"}
    js = subprocess.run([ARI, "nodes", "check", *names, "--json"], cwd=tmp_path, capture_output=True,
                        text=True, timeout=300, env=env)
    human = subprocess.run([ARI, "nodes", "check", *names], cwd=tmp_path, capture_output=True, text=True,
                           timeout=300, env=env)
    assert "Traceback" not in js.stderr + human.stderr
    assert js.returncode == human.returncode
    return js.returncode, json.loads(js.stdout), human.stdout


@pytest.mark.sshd
@pytest.mark.casa
def test_a_healthy_ssh_node_passes_every_check_and_gets_the_runner(sshd, casa, tmp_path):
    scratch = tmp_path / "scratch"
    write_config(tmp_path, [{"name": "ws1", **ssh_keys(sshd), "scratch_dir": str(scratch)}])
    with open(tmp_path / "ari.toml", "a") as fh:
        fh.write(f"env = {casa_env(casa)}\n")
    rc, checks, human = check(tmp_path)
    assert rc == 0, human
    assert [c["check"] for c in checks] == ["reach", "python", "casa", "scratch", "runner"]
    assert (scratch / ".ari" / "remote" / "runner.py").is_file()
    assert human.count("ok   ws1") == 5


@pytest.mark.sshd
def test_refused_key_and_unknown_host_key_each_give_one_line_with_the_fix(sshd, tmp_path):
    wrong = tmp_path / "wrong"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong)], check=True)
    empty_kh = tmp_path / "kh"
    empty_kh.write_text("")
    write_config(tmp_path, [
        {"name": "badkey", **ssh_keys(sshd, identity_file=str(wrong))},
        {"name": "newhost", **ssh_keys(sshd, known_hosts=str(empty_kh))},
    ])
    rc, checks, human = check(tmp_path)
    assert rc == 1
    by_node = {c["node"]: c for c in checks}
    assert by_node["badkey"]["check"] == "reach" and not by_node["badkey"]["ok"]
    assert "refused the key" in by_node["badkey"]["detail"] and "authorized_keys" in by_node["badkey"]["fix"]
    assert "unknown host key" in by_node["newhost"]["detail"]
    assert f"ssh-keyscan -p {sshd.port} 127.0.0.1 >> {empty_kh}" in by_node["newhost"]["fix"]
    lines = [line for line in human.splitlines() if line.startswith("FAIL")]
    assert len(lines) == 2 and all("— fix:" in line for line in lines)


def test_missing_casa_and_full_scratch_each_give_one_line_with_the_fix(tmp_path):
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(tiny)], check=True)
    try:
        write_config(tmp_path, [{"name": "here", "python": sys.executable, "casa_path": "/usr/bin/python3",
                                 "scratch_dir": str(tiny)}])
        rc, checks, human = check(tmp_path)
    finally:
        subprocess.run(["umount", str(tiny)], check=True)
    assert rc == 1
    failed = {c["check"]: c for c in checks if not c["ok"]}
    assert set(failed) == {"casa", "scratch"}
    assert "/usr/bin/python3 cannot import casatools" in failed["casa"]["detail"]
    assert "pip install casatools" in failed["casa"]["fix"]
    assert failed["scratch"]["detail"].endswith(" MB free")  # a few MB, read as every size is (not "0.0 GB")
    assert "needs 1 GB" in failed["scratch"]["fix"]
    assert sum(line.startswith("FAIL") for line in human.splitlines()) == 2


@pytest.mark.casa
def test_checking_casa_leaves_its_log_under_the_node_scratch_not_in_the_current_directory(casa, tmp_path):
    scratch = tmp_path / "scratch"
    write_config(tmp_path, [{"name": "here", "transport": "local", "python": sys.executable,
                             "casa_path": sys.executable, "scratch_dir": str(scratch)}])
    with open(tmp_path / "ari.toml", "a") as fh:
        fh.write(f"env = {casa_env(casa)}\n")
    rc, checks, human = check(tmp_path)
    assert rc == 0, human
    assert not list(tmp_path.glob("casa-*.log")), "no CASA log in the directory the operator ran the check from"
    assert list((scratch / ".ari" / "check").glob("casa-*.log"))


@pytest.mark.casa
def test_each_casa_install_a_node_lists_by_version_is_checked(tmp_path, casa):
    (tmp_path / "scratch").mkdir()
    path = write_config(tmp_path, [{"name": "here", "python": sys.executable, "casa_path": sys.executable,
                                    "scratch_dir": str(tmp_path / "scratch")}])
    path.write_text(path.read_text() + f'env = {casa_env(casa)}\n'
                    f'casa = {{ "6.7.0" = "{sys.executable}", "6.5.4" = "{sys.executable}", '
                    f'"4.7.2" = "/opt/casa-4.7.2/bin/python" }}\n')
    rc, checks, human = check(tmp_path)
    by_check = {c["check"]: c for c in checks}
    assert rc == 1
    assert by_check["casa 6.7.0"]["ok"]
    assert not by_check["casa 6.5.4"]["ok"] and "not 6.5.4" in by_check["casa 6.5.4"]["detail"]
    assert not by_check["casa 4.7.2"]["ok"] and 'casa."4.7.2"' in by_check["casa 4.7.2"]["fix"]
