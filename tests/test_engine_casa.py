"""The engine end to end with real parts: archive service, runner, CASA imaging, product fetch, QA2 verdicts."""

import json
import sys
import time

import pytest

from ari_console import store
from ari_console.archive.client import queue_candidates, tap_url_of
from ari_console.config import load_config
from ari_console.engine import Engine


@pytest.mark.casa
def test_archive_mous_are_imaged_fetched_and_compared_with_qa2(tmp_path, archive_service, casa):
    (tmp_path / "ari.toml").write_text(
        f'[campaign]\nname = "e2e"\narchive_url = "{archive_service.url}"\npoll_interval_s = 1\n'
        f'[[node]]\nname = "local"\nslots = 2\nmem_gb = 8\nscratch_dir = "{tmp_path / "scratch"}"\n'
        f'python = "{sys.executable}"\ncasa_path = "{sys.executable}"\ncasa_versions = ["6.7.0-31"]\n'
        f'env = {{ CASASITECONFIG = "{casa.site_config}" }}\n')
    cfg = load_config(tmp_path / "ari.toml")
    rows, excluded = queue_candidates(tap_url_of(cfg.campaign.archive_url), [],
                                      ["uid://A001/X1296/X1d3", "uid://A001/X1296/X1d9"])
    assert excluded == {}
    store.import_datasets(store.open_db(cfg.campaign.db_path), rows, "archive", now=time.time())
    with Engine(cfg) as engine:
        deadline = time.time() + 480
        while time.time() < deadline and not engine.tick().idle:
            time.sleep(1)
        db = engine.db
        states = {d["uid"]: (d["state"], d["reason"]) for d in store.datasets(db)}
        # X1d9's QA2 images carry a wrong flux scale: its products wait for an operator, not delivered.
        assert states["uid://A001/X1296/X1d3"] == ("succeeded", None), states
        assert states["uid://A001/X1296/X1d9"][0] == "review", \
            [(a["uid"], a["state"], a["category"], a["excerpt"]) for a in store.attempts(db)]
        verdicts = {}
        assert states["uid://A001/X1296/X1d9"][1].startswith("QA2 discrepant")
        assert store.dataset(db, "uid://A001/X1296/X1d9")["accepted_attempt"] is None
        for uid in states:
            ds = store.dataset(db, uid)
            made = ds["accepted_attempt"] or store.review_attempt(db, uid)["id"]
            prods = store.products(db, made)
            assert any(p["path"].endswith(".cont.I.pbcor.fits") for p in prods)
            manifest = json.loads(open(prods[0]["path"].rsplit("/", 1)[0] + "/manifest.json").read())
            assert manifest["recipe"] == "casa6" and manifest["casa_version"].startswith("6.7")
            verdicts[uid] = {r["specmode"]: r for r in store.qa2_results(db, uid)}
    verdicts = {uid: {r["verdict"] for r in rows.values()} for uid, rows in verdicts.items()}
    assert verdicts["uid://A001/X1296/X1d3"] == {"consistent"}
    assert "discrepant" in verdicts["uid://A001/X1296/X1d9"]
