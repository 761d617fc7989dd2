"""`ari report`: the HTML page and its plots, looked at in headless Chromium, and the same numbers as JSON."""

import base64
import io
import json
import re
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ari_console import actions, store
from ari_console.alma import DataSet
from ari_console.cli import app
from ari_console.config import load_config
from ari_console.formatting import gb_text, hours_text
from ari_console.qa2.compare import compare

ARI = str(Path(sys.executable).parent / "ari")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PLOTS = ["success", "failures", "runtime", "qa2", "burndown"]
H = 3600.0

TOML = """[campaign]
name = "cycle4"
[[node]]
name = "ws"
cpus_per_slot = 2
mem_gb = 16
[[node]]
name = "cluster"
slots = 2
cpus_per_slot = 4
mem_gb = 64
walltime_h = 12
"""


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium, driven by playwright (never `playwright install`: the network is closed)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing — install the Debian package: apt-get install chromium "
                    "(scripts/install-system.sh does it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def report(campaign: Path, *args: str) -> dict:
    result = CliRunner().invoke(app, ["-c", str(campaign / "ari.toml"), "report", *args, "--json"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return json.loads(result.stdout)


def measurement(snr: float, flux: float) -> dict:
    return dict(file=f"f{snr}_{flux}", field="NGC1234", spw="17", specmode="mfs", peak=flux, flux=flux,
                rms=1.0 / snr, snr=snr, beam_major=1.0, beam_minor=1.0, region_beams=1.0)


def qa2_pairs(*cases: tuple[float, float]) -> list[dict]:
    """Real verdicts: (snr, pipeline flux against a 1 Jy QA2 source) through qa2.compare."""
    return [compare(measurement(snr, flux), measurement(snr, 1.0)).as_dict() for snr, flux in cases]


def finish(db, attempt_id: int, start: float, hours: float, state: str, category: str | None = None) -> float:
    store.update_attempt(db, attempt_id, start, state="running", started_at=start)
    end = start + hours * H
    store.update_attempt(db, attempt_id, end, state=state, ended_at=end, category=category)
    return end


def engine_decides(db, uid: str, attempt_id: int, now: float, state: str, reason: str, **overrides) -> None:
    """What the engine writes after a failed attempt (engine._finish): overrides, the state, a retry-policy event."""
    if overrides:
        store.set_overrides(db, uid, now, **overrides)
    store.set_dataset_state(db, uid, state, now, reason=reason)
    store.record_event(db, "retry-policy", now, uid=uid, attempt_id=attempt_id, new=state)


def deliver(db, uid: str, attempt_id: int, now: float, size: int, pairs: list[dict]) -> None:
    store.add_products(db, attempt_id, uid, [{"path": f"/p/{uid[-2:]}/cube.fits", "kind": "pbcor", "size": size}])
    store.save_qa2(db, uid, attempt_id, pairs)
    store.accept_attempt(db, uid, attempt_id, now)


@pytest.fixture
def campaign(tmp_path):
    """Seven MOUS five days into a campaign: three delivered (one unsupervised), one held by the engine and
    released, one held by an operator, one waiting, one excluded by the selection rules."""
    (tmp_path / "ari.toml").write_text(TOML)
    db = store.open_db(tmp_path / "ari.db")
    t0 = time.time() - 5 * 24 * H
    store.sync_nodes(db, load_config(tmp_path / "ari.toml").nodes, t0)
    uids = {k: f"uid://A001/X1/X{n}" for n, k in enumerate("ABCDEFX", start=1)}
    store.import_datasets(db, [DataSet(u, "2016.1.00123.S", array="12m", band=6, size_gb=20.0, mem_gb=8.0)
                               for u in uids.values()], "cycle4.csv", t0, excluded={uids["X"]: "full Stokes"})
    A, B, C, D, E = (uids[k] for k in "ABCDE")
    # A: succeeds unsupervised on ws in 4 h; delivered 5 h after queueing; two QA2 pairs, one discrepant
    a = store.create_attempt(db, A, "ws", t0 + 1 * H)
    end = finish(db, a, t0 + 1 * H, 4, "succeeded")
    deliver(db, A, a, end, 1_000_000_000, qa2_pairs((50.0, 1.03), (200.0, 0.8)))
    # B: memory on ws (1 h), the engine retries it on cluster: succeeds in 6 h, delivered at 12 h
    b1 = store.create_attempt(db, B, "ws", t0 + 2 * H)
    end = finish(db, b1, t0 + 2 * H, 1, "failed", "memory")
    engine_decides(db, B, b1, end, "queued", "memory: retry on a node with 32 GB", mem_gb=32.0)
    b2 = store.create_attempt(db, B, "cluster", t0 + 6 * H)
    end = finish(db, b2, t0 + 6 * H, 6, "succeeded")
    deliver(db, B, b2, end, 500_000_000, qa2_pairs((12.0, 1.2)))
    # C: uvcontfit on ws (2 h), held by the engine at 5 h, released by an operator 5 h later, succeeds
    # on cluster in 3 h, delivered at 30 h
    c1 = store.create_attempt(db, C, "ws", t0 + 3 * H)
    end = finish(db, c1, t0 + 3 * H, 2, "failed", "uvcontfit")
    engine_decides(db, C, c1, end, "held", "uvcontfit: needs an operator (see the excerpt)")
    actions.release(db, C, now=end + 5 * H)
    c2 = store.create_attempt(db, C, "cluster", t0 + 27 * H)
    end = finish(db, c2, t0 + 27 * H, 3, "succeeded")
    deliver(db, C, c2, end, 500_000_000, [])
    # D: walltime on cluster (2 h), the engine queues it again; an operator retries it pinned to cluster
    d = store.create_attempt(db, D, "cluster", t0 + 40 * H)
    end = finish(db, d, t0 + 40 * H, 2, "failed", "walltime")
    engine_decides(db, D, d, end, "queued", "walltime: retry where 8 h are allowed", walltime_h=8.0)
    actions.retry(db, D, now=end + 1 * H, node="cluster")
    # E: an operator holds it and sets its memory; ws is drained and undrained by an operator
    actions.hold(db, E, now=t0 + 50 * H, reason="calibration tables missing")
    actions.override(db, E, now=t0 + 50.5 * H, mem_gb=24.0)
    actions.drain(db, "ws", now=t0 + 60 * H, reason="disk errors")
    actions.undrain(db, "ws", now=t0 + 61 * H)
    return tmp_path


def open_page(browser, html: Path):
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(html.as_uri())
    page.wait_for_load_state("load")
    return page, requests


def images(page) -> list[dict]:
    return page.eval_on_selector_all("img", """els => els.map(e => ({
        section: e.closest('section').id, width: e.naturalWidth, height: e.naturalHeight,
        complete: e.complete, src: e.getAttribute('src')}))""")


def not_blank(png: bytes) -> bool:
    """More than a handful of colours and real contrast: something is drawn."""
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB")
    colours = img.getcolors(maxcolors=1 << 20) or []
    low, high = img.convert("L").getextrema()
    return len(colours) > 20 and high - low > 100


def shown(text: str, value):
    """True when the page's ``text`` shows the JSON ``value`` (to the page's rounding)."""
    text = text.strip()
    if value is None:
        return text == "—"
    if isinstance(value, float) and text in (hours_text(value), gb_text(value)):  # read as everywhere else
        return True
    if text.endswith("%"):
        return abs(float(text[:-1]) / 100 - value) <= 0.0005 + 1e-9
    if text.endswith(" GB"):
        return abs(float(text[:-3]) - value) <= 0.005 + 1e-9
    if text.endswith(" h"):
        return abs(float(text[:-2]) - value) <= 0.05 + 1e-9
    if isinstance(value, int):
        return text == str(value)
    if isinstance(value, float):
        return abs(float(text.replace(",", "")) - value) <= 0.05 + 1e-9
    return text == str(value)


def test_report_shows_every_plot_and_the_numbers_of_its_json(campaign, browser):
    out = report(campaign)

    # the numbers, worked out by hand from the campaign above
    assert out["coverage"]["eligible"] == 6 and out["coverage"]["with_product"] == 3
    assert out["coverage"]["share"] == 0.5 and out["coverage"]["reference"]["share"] == 0.86
    assert out["success"] == {"datasets_tried": 4, "first_try": 0.25, "after_retries": 0.75,
                              "reference_unsupervised": 0.5}
    failures = {k: v for k, v in out["failures_by_category"].items() if v}
    assert failures == {"memory": 1, "uvcontfit": 1, "walltime": 1} and len(out["failures_by_category"]) == 14
    assert out["runtime_h_by_node"]["cluster"]["count"] == 2 and out["runtime_h_by_node"]["ws"]["median"] == 4.0
    assert out["cpu_hours"] == pytest.approx(7 * 2 + 11 * 4)  # ws 4+1+2 h x 2 CPUs, cluster 6+3+2 h x 4
    assert out["disk"]["products_gb"] == 2.0 and out["disk"]["products_bytes"] == 2_000_000_000
    assert out["time_to_product_h"] == {"count": 3, "median": 12.0, "p90": 26.4}
    by_eye = out["qa2"].pop("by_eye")
    assert out["qa2"] == {"pairs": 3, "consistent": 2, "discrepant": 1, "consistent_share": 0.6667}
    assert [p["verdict"] for p in by_eye] == ["discrepant", "consistent", "consistent"]
    assert out["operator"]["held_datasets"] == 2 and out["operator"]["held_now"] == 1
    assert out["operator"]["hold_to_release_h"] == {"count": 1, "median": 5.0, "p90": 5.0}
    assert out["operator"]["actions_by_kind"] == {"release": 1, "retry": 1, "hold": 1, "override": 1,
                                                  "drain": 1, "undrain": 1}
    assert out["burndown"]["remaining"] == 3 and out["burndown"]["held"] == 1
    assert out["burndown"]["estimate"]["finish"] and out["burndown"]["estimate"]["queued"] == 2
    est = out["burndown"]["estimate"]
    assert est["finish_p10"] <= est["finish_p90"]  # the band an operator can quote: "done between X and Y"
    assert sorted(out["plots"]) == sorted(PLOTS)
    assert Path(out["html"]) == (campaign / "report" / "report.html").resolve()

    page, requests = open_page(browser, Path(out["html"]))
    imgs = images(page)
    assert [i["section"] for i in imgs] == [f"plot-{name}" for name in PLOTS]  # one image per plot, in order
    for img, name in zip(imgs, PLOTS):
        assert img["complete"] and img["width"] > 0 and img["height"] > 0, name
        assert img["src"] == "data:image/png;base64," + base64.b64encode(Path(out["plots"][name]).read_bytes()).decode()
        assert not_blank(page.locator(f"#plot-{name} img").screenshot()), name
    assert "no data yet" not in page.inner_text("body")
    assert all(url.startswith(("file:", "data:")) for url in requests), requests  # self-contained

    headline = page.eval_on_selector_all("[data-key]", "els => els.map(e => [e.dataset.key, e.innerText])")
    assert len(headline) >= 12
    for key, text in headline:
        value = out
        for part in key.split("."):
            value = value[part]
        assert shown(text, value), (key, text, value)
    keys = dict(headline)
    assert keys["coverage.share"] == "50.0%" and keys["success.first_try"] == "25.0%"
    assert keys["success.after_retries"] == "75.0%" and keys["time_to_product_h.p90"] == "1d02h"
    assert "86.0% of 3,202" in page.inner_text("#coverage-reference")
    assert not_blank(page.screenshot(full_page=True))
    page.close()


def test_an_empty_campaign_says_no_data_yet_in_every_plot(tmp_path, browser):
    (tmp_path / "ari.toml").write_text(TOML)
    store.open_db(tmp_path / "ari.db")
    out = report(tmp_path, "--out", str(tmp_path / "for-managers"))
    assert out["coverage"]["share"] is None and out["success"]["first_try"] is None
    assert out["burndown"]["estimate"]["finish"] is None and "nothing queued" in out["burndown"]["estimate"]["note"]
    assert all(Path(p).parent == (tmp_path / "for-managers").resolve() for p in out["plots"].values())

    page, _ = open_page(browser, Path(out["html"]))
    imgs = images(page)
    assert len(imgs) == len(PLOTS) and all(i["complete"] and i["width"] > 0 for i in imgs)
    for name in PLOTS:
        assert "no data yet" in page.inner_text(f"#plot-{name}"), name
        assert not_blank(page.locator(f"#plot-{name} img").screenshot()), name  # the PNG says it too
    assert page.inner_text('[data-key="coverage.share"]') == "—"
    page.close()


def test_a_queue_without_attempts_shows_its_burn_down_and_estimate(tmp_path, browser):
    (tmp_path / "ari.toml").write_text(TOML)
    db = store.open_db(tmp_path / "ari.db")
    store.import_datasets(db, [DataSet(f"uid://A001/X2/X{i}", "2016.1.00123.S", size_gb=10.0) for i in range(4)],
                          "c.csv", time.time() - H)
    out = report(tmp_path)
    assert out["burndown"]["remaining"] == 4 and out["burndown"]["estimate"]["finish"]

    page, _ = open_page(browser, Path(out["html"]))
    for name in ("success", "failures", "runtime", "qa2"):
        assert "no data yet" in page.inner_text(f"#plot-{name}"), name
    burndown = page.inner_text("#plot-burndown")
    assert "no data yet" not in burndown and out["burndown"]["estimate"]["finish"] in burndown
    page.close()


def test_report_mistakes_are_one_line_each(tmp_path):
    (tmp_path / "ari.toml").write_text(TOML)
    def run(*args):
        return subprocess.run([ARI, *args], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                              env={**os.environ, "COLUMNS": "200"})

    missing = run("report")
    assert missing.returncode == 2 and "no campaign database yet" in missing.stderr
    store.open_db(tmp_path / "ari.db")
    (tmp_path / "taken").write_text("")
    taken = run("report", "--out", "taken")
    assert taken.returncode == 2 and "--out taken: is a file" in taken.stderr
    for proc in (missing, taken):
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_a_discrepant_pair_is_shown_by_eye_with_both_images_and_its_sources(campaign, browser):
    import numpy as np

    from ari_console.qa2 import compare_dirs
    from tests.test_qa2_sky import _gauss, _sky_fits

    rng = np.random.default_rng(9)
    (campaign / "pl").mkdir(), (campaign / "qa2").mkdir()
    sky = _gauss((150, 150), 75, 75, 3, 0.05) + _gauss((150, 150), 50, 95, 3, 0.02)
    _sky_fits(campaign / "pl" / "field1_cont.pbcor.fits", rng.normal(0, 1e-4, sky.shape) + sky)
    _sky_fits(campaign / "qa2" / "field1_cont.pbcor.fits", rng.normal(0, 1e-4, sky.shape) + 0.7 * sky)
    pairs = compare_dirs(campaign / "pl", campaign / "qa2").as_dict()["pairs"]
    assert [p["verdict"] for p in pairs] == ["discrepant"]
    db = store.open_db(campaign / "ari.db")
    uid = "uid://A001/X1/X5"
    a = store.create_attempt(db, uid, "ws", time.time() - H)
    end = finish(db, a, time.time() - H, 0.5, "succeeded")
    store.save_qa2(db, uid, a, pairs)
    store.send_to_review(db, uid, a, end, "QA2 discrepant")
    db.conn.close()
    out = report(campaign)
    assert out["coverage"]["review"] == 1 and out["burndown"]["review"] == 1
    shown_pairs = [p for p in out["qa2"]["by_eye"] if p["uid"] == uid]
    assert len(shown_pairs) == 1 and len(shown_pairs[0]["sources"]) >= 2
    page, _ = open_page(browser, Path(out["html"]))
    section = page.locator("#qa2-by-eye")
    pictures = section.locator("img")
    assert pictures.count() == 1 and not_blank(pictures.first.screenshot())
    text = section.inner_text()
    assert uid in text and "discrepant" in text and re.search(r"flux ratio 1\.4[0-9]", text)
    assert "wait for an operator's QA2 decision" in page.inner_text("#coverage-reference")
    page.close()


def test_the_report_names_what_needs_a_person_in_tables_with_the_numbers_of_status(campaign, browser):
    db = store.open_db(campaign / "ari.db")
    F = "uid://A001/X1/X6"  # F: imaged, one of its two pairs discrepant in flux: waits for a QA2 decision
    f = store.create_attempt(db, F, "cluster", time.time() - 3 * H)
    finish(db, f, time.time() - 3 * H, 2, "succeeded")
    pairs = qa2_pairs((200.0, 1.0), (200.0, 1.4))
    pairs[1]["pl"] = "/p/X6/member.uid___A001_X1_X6.NGC1234_sci.spw17.cont.I.pbcor.fits"
    store.save_qa2(db, F, f, pairs)
    store.set_dataset_state(db, F, "review", time.time(), reason="QA2 discrepant")
    db.conn.close()

    out = report(campaign)
    status = json.loads(CliRunner().invoke(app, ["-c", str(campaign / "ari.toml"), "status", "--json"]).stdout)
    assert out["attention"]["held"] == status["attention"]["held"]  # the same numbers as `ari status`
    assert [h["uid"] for h in out["attention"]["held"]] == ["uid://A001/X1/X5"]
    assert out["attention"]["held"][0]["reason"] == "calibration tables missing"
    review = out["attention"]["review"]
    assert [r["uid"] for r in review] == [F] and len(review[0]["pairs"]) == 1
    pair = review[0]["pairs"][0]
    assert (pair["image"], pair["measure"], pair["ratio"]) == (Path(pairs[1]["pl"]).name, "flux",
                                                                pytest.approx(1.4, abs=0.01))

    page, _ = open_page(browser, Path(out["html"]))
    rows = page.eval_on_selector_all("#attention tr", "els => els.map(e => e.innerText)")
    held_row = next(r for r in rows if "uid://A001/X1/X5" in r)
    assert "calibration tables missing" in held_row and "ari release uid://A001/X1/X5" in held_row
    review_row = next(r for r in rows if F in r)
    assert Path(pairs[1]["pl"]).name in review_row and "flux" in review_row and "1.4" in review_row
    assert f"ari accept {F}" in review_row
    assert "needs a person: 1 held data set, 1 QA2 review" in page.inner_text("#attention")
    page.close()

    # the burn-down's axis runs to every eligible data set, and what waits for a person is shaded apart
    from ari_console import report as report_module

    with store.open_db(campaign / "ari.db") as db:
        data = report_module.collect(db, load_config(campaign / "ari.toml"), time.time())
    fig, ax = report_module._figure()
    assert report_module._plot_burndown(ax, data)
    assert ax.get_ylim() == (0, pytest.approx(6 * 1.05))  # 6 eligible, though only 3 remain
    assert any("held (1) or in QA2 review (1)" in t.get_text() for t in ax.get_legend().get_texts())
