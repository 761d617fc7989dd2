"""``ari tui`` in a real terminal (tmux): log lines appear on screen as the log grows.

The log source is the attempt's local mirror file, which the engine fills from
the node; here the test appends to the mirror itself (the engine is not part of
this test). Runs the console as a separate process on a private tmux server.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import sample_campaign as sample

REPO = Path(__file__).resolve().parents[1]
# How the console is started; ``ari tui`` once the lead mounts ari_console.commands.tui in the CLI.
COMMAND = [str(Path(sys.executable).parent / "ari"), "tui"]


class Tmux:
    """A private tmux server (its own socket) with one session running ``command``."""

    def __init__(self, command: str, width: int = 120, height: int = 40) -> None:
        self.socket = f"ari-tui-test-{os.getpid()}"
        self._tmux("new-session", "-d", "-s", "tui", "-x", str(width), "-y", str(height), command)
        self._tmux("resize-window", "-t", "tui", "-x", str(width), "-y", str(height))

    def _tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], check=True, capture_output=True,
                              text=True, timeout=20).stdout

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", "tui")

    def keys(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", "tui", *keys)

    def wait_for(self, text: str, timeout: float = 30.0) -> str:
        end = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < end:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{text!r} never appeared on screen; last screen:\n{screen}")

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=20)


@pytest.fixture
def tmux_console(tmp_path):
    assert shutil.which("tmux"), "tmux is needed for this test (apt-get install tmux)"
    camp = sample.build(tmp_path, n=60, running=4, now=time.time())
    argv = [*COMMAND, "--config", str(camp.config.path), "--no-engine", "--refresh", "0.5"]
    command = f"cd {shlex.quote(str(REPO))} && TERM=xterm-256color {shlex.join(argv)}"
    term = Tmux(command)
    try:
        yield camp, term
    finally:
        term.close()


def test_tui_in_tmux_shows_log_lines_as_the_log_grows(tmux_console):
    camp, term = tmux_console
    term.wait_for("ari — sample")
    term.keys("4")
    term.wait_for("#49")  # the newest attempt is selected first; its log is not mirrored
    for _ in range(3):  # down to the oldest running attempt, the one with a mirrored log
        term.keys("Down")
        time.sleep(0.2)
    term.keys("Enter")
    term.wait_for("Major cycle 2")
    for i in range(1, 4):
        with camp.running_log.open("a") as f:
            f.write(f"2026-05-28 20:1{i}:00 INFO tclean::::casa tmux-visible line {i}\n")
        screen = term.wait_for(f"tmux-visible line {i}", timeout=10)
    assert "runner.log" in screen and "following" in screen
    term.keys("q")


def test_tui_in_tmux_narrows_a_10000_data_set_queue_within_a_second(tmp_path):
    """Typing a narrowing filter on a big queue: the screen shows the 10 % it keeps, and only those.

    How fast is a benchmark figure (house rule: no timed unit tests); the time from Enter to the
    narrowed screen is printed (``pytest -s``); on an idle machine it is well under a second."""
    assert shutil.which("tmux"), "tmux is needed for this test (apt-get install tmux)"
    camp = sample.build(tmp_path, n=10_000, running=20, now=time.time())
    argv = [*COMMAND, "--config", str(camp.config.path), "--no-engine", "--refresh", "2"]
    term = Tmux(f"cd {shlex.quote(str(REPO))} && TERM=xterm-256color {shlex.join(argv)}")
    try:
        term.wait_for("ari — sample")
        term.keys("2")
        term.wait_for("10,000 of 10,000 data sets", timeout=60)
        term.keys("/")
        time.sleep(0.5)  # the filter line opens (keys sent before it has focus would be screen keys)
        term.keys("-l", "X1f5/")
        time.sleep(0.5)  # the filter line applies as one types
        term.keys("Enter")
        t0 = time.monotonic()
        screen = term.wait_for("1,000 of 10,000 data sets", timeout=30)
        print(f"narrowed queue on screen {time.monotonic() - t0:.2f} s after Enter")
        rows = [line for line in screen.splitlines() if "uid://A001/" in line]
        assert rows and all("uid://A001/X1f5/" in line for line in rows), screen
        term.keys("q")
    finally:
        term.close()
