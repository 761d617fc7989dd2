"""What headless `ari run` tells an operator: that it re-attached to the attempts a killed console left
running, a one-line summary while nothing else happens, and at the end what waits for a person."""

from __future__ import annotations

import signal
import time

from ari_console import actions, store
from ari_console.engine import Engine
from tests.test_engine import make_campaign, sleeper_spec, start_console


def test_a_restarted_run_says_it_re_attached_then_sums_up_the_campaign_while_nothing_happens(tmp_path):
    rows = [("uid://A001/X1/X1", "12m", {"sleeper": {"sleep_s": 30}}), ("uid://A001/X1/X2", "12m", {})]
    cfg = make_campaign(tmp_path, rows)
    with store.open_db(cfg.campaign.db_path) as db:
        actions.hold(db, "uid://A001/X1/X2", time.time(), reason="waiting for calibration tables")
    proc = start_console(tmp_path)
    db = store.open_db(cfg.campaign.db_path)
    deadline = time.time() + 60
    while time.time() < deadline and not any(a["handle"] for a in store.active_attempts(db)):
        time.sleep(0.2)
    db.close()
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    said: list[str] = []
    start = time.monotonic()
    with Engine(cfg, adjust_spec=sleeper_spec, progress=said.append) as engine:
        engine.run(stop=lambda: any("needs a person" in m for m in said) or time.monotonic() - start > 30,
                   summary_every_s=0.0)
        for a in store.active_attempts(engine.db):  # leave nothing running behind the test
            actions.cancel(engine.db, a["uid"], time.time(), cfg)
    assert said[0] == "re-attaching to 1 attempt(s) left running: uid://A001/X1/X1 on local", said
    [summary] = [m for m in said if "needs a person" in m]
    assert summary == "running 1, held 1 · needs a person: 1 held data set — see `ari status`", said
