"""The console as a user installs it: the wheel, in a fresh venv, with nothing from this checkout.

Builds the wheel (``pip wheel``), installs only it (``--no-deps``) into a new
``python -m venv`` that sees this environment's dependencies through a ``.pth``
line (so the test stays quick and offline), then, from a directory outside the
checkout, runs ``ari --version``, ``ari init``, one local-node campaign step (the
runner and recipes come out of the wheel, run on this machine and leave a
failed attempt the engine records) and the console's first screen in a real
terminal (tmux), with the wheel's styles and themes.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import site
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(argv, cwd, timeout=180, check=True):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ARI_CONFIG", "VIRTUAL_ENV")}
    proc = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**env, "COLUMNS": "200"})
    if check:
        assert proc.returncode == 0, f"{argv}: {proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh venv holding only the built wheel; its bin directory."""
    base = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", base / "dist", REPO], cwd=base, timeout=300)
    wheel = next((base / "dist").glob("ari_console-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "ari_console/remote/runner.py" in names and "ari_console/remote/recipes/casa6.py" in names
    assert "ari_console/tui/app.tcss" in names and "ari_console/tui/themes.py" in names
    assert not any(n.startswith(("tests/", "remote/")) for n in names)
    venv = base / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=base)
    _run([sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "-q", "--no-deps", wheel],
         cwd=base, timeout=300)
    purelib = Path(_run([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        cwd=base).stdout.strip())
    # The dependencies (textual, typer, CASA, ...) come from this environment; .pth lines only add
    # paths, so this environment's editable install of the checkout stays out of the new venv.
    (purelib / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return venv / "bin"


def test_the_wheel_runs_from_a_fresh_venv_without_the_checkout(installed, tmp_path):
    ari = installed / "ari"
    assert _run([ari, "--version"], cwd=tmp_path).stdout.strip().startswith("ari 0.1")
    where = _run([installed / "python", "-c", "import ari_console.nodes.ops as o, ari_console as a; "
                  "from ari_console.tui.app import css_paths; print(a.__file__); print(o.REMOTE_SRC); "
                  "[print(p) for p in css_paths() if p.is_file()]"], cwd=tmp_path).stdout.split()
    assert all(str(installed.parent) in w for w in where), where
    assert len([w for w in where if w.endswith(".tcss")]) >= 5

    _run([ari, "init", "camp", "--name", "wheel"], cwd=tmp_path)
    camp = tmp_path / "camp"
    (camp / "one.csv").write_text("uid,project,array,band,size_gb,mem_gb,hours\n"
                                  "uid://A001/X1/X7,2016.1.00123.S,12m,6,0.1,1,0.1\n")
    _run([ari, "datasets", "import", "one.csv"], cwd=camp)
    checks = json.loads(_run([ari, "nodes", "check", "--json"], cwd=camp, check=False).stdout)
    runner = next(c for c in checks if c["check"] == "runner")
    assert runner["ok"] and "/.ari/remote" in runner["detail"]

    _run([ari, "run", "--once"], cwd=camp)
    [attempt] = json.loads(_run([ari, "attempts", "--json"], cwd=camp).stdout)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # the attempt's work dir sits in the campaign's space on the scratch
        found = list((camp / "scratch").glob(f"*/a-{attempt['id']:06d}/status.json"))
        status = found[0] if found else camp / "scratch"
        final = json.loads(status.read_text()) if found else {}
        if final.get("state") in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(1)
    else:
        raise AssertionError(f"the wheel's runner left no final status: {status}")
    _run([ari, "run", "--once"], cwd=camp)
    [ended] = json.loads(_run([ari, "attempts", "--json"], cwd=camp).stdout)
    assert ended["state"] == final["state"] and ended["ended_at"] is not None


def test_the_console_opens_from_the_wheel_with_its_styles_and_themes(installed, tmp_path):
    from tests.test_tui_tmux import Tmux

    assert shutil.which("tmux"), "tmux is needed for this test (apt-get install tmux)"
    _run([installed / "ari", "init", "camp", "--name", "wheel"], cwd=tmp_path)
    (tmp_path / "camp" / "one.csv").write_text("uid,project\nuid://A001/X1/X7,2016.1.00123.S\n")
    _run([installed / "ari", "datasets", "import", "one.csv"], cwd=tmp_path / "camp")
    command = (f"cd {shlex.quote(str(tmp_path / 'camp'))} && TERM=xterm-256color "
               f"{shlex.quote(str(installed / 'ari'))} tui --no-engine --theme ari-light")
    term = Tmux(command)
    try:
        screen = term.wait_for("unsupervised", timeout=60)
        assert "ari — wheel" in screen and "queued" in screen
        term.keys("C-p")  # the command palette lists the wheel's two themes
        term.keys(*"theme")
        term.wait_for("Change the current theme", timeout=20)
        term.keys("Enter")
        assert "ari-light" in term.wait_for("ari-dark", timeout=20)
        term.keys("Escape", "q")
    finally:
        term.close()
