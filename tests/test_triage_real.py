"""Triage on logs written outside the project, and on a held-out set written before the rules.

``tests/data/triage/real/logs/`` is a copy of ``../shared/data/real/logs/`` (real CASA/mpicasa
logs pasted by people in public, with the category and decisive lines an experienced ALMA data
reducer assigns in ``expect.json``); when the shared folder is there, its logs are checked
too, so the set grows without a copy. ``heldout_catalogue/logs/`` holds logs written from the
message catalogues of CASA, the pipeline, Slurm, PBS and Open MPI before the rules for issue 18
were written; the rules were not tuned on them one by one, so they are scored as a whole.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ari_console import triage

HERE = Path(__file__).parent / "data" / "triage"
# ../shared/data/real/logs beside the checkout (or a worktree's checkout), when it is there
SHARED = next((p / "shared" / "data" / "real" / "logs" for p in Path(__file__).resolve().parents
               if (p / "shared" / "data" / "real" / "logs").is_dir()), HERE / "real" / "logs")


def expectations(folder: Path) -> list[tuple[Path, dict]]:
    """(log, its expect.json entry) for every log the folder's expect.json names."""
    if not (folder / "expect.json").is_file():
        return []
    return [(folder / name, e) for name, e in json.loads((folder / "expect.json").read_text()).items()]


REAL = expectations(HERE / "real" / "logs") + [(p, e) for p, e in expectations(SHARED)
                                                if not (HERE / "real" / "logs" / p.name).is_file()]


def test_the_real_logs_are_there():
    assert len(REAL) >= 7


@pytest.mark.parametrize("log,expect", REAL, ids=lambda x: x.name if isinstance(x, Path) else "")
def test_real_log_gets_its_category_and_an_accepted_decisive_line(log: Path, expect: dict):
    verdict = triage.classify_file(log)
    assert verdict.category in [expect["category"], *expect.get("also_ok", [])], verdict.evidence
    assert verdict.line in expect["lines"], verdict.evidence


def test_held_out_catalogue_logs_score_nine_in_ten_and_never_a_wrong_category():
    cases = expectations(HERE / "heldout_catalogue" / "logs")
    right = lines = 0
    wrong = []
    for log, expect in cases:
        verdict = triage.classify_file(log)
        ok = [expect["category"], *expect.get("also_ok", [])]
        right += verdict.category in ok
        lines += verdict.line in expect["lines"]
        if verdict.category not in ok and verdict.category != "unknown":
            wrong.append((log.name, verdict.category))
    assert len(cases) >= 30
    assert not wrong
    assert right >= 0.9 * len(cases)
    assert lines >= 0.85 * len(cases)


@pytest.mark.parametrize("log,expect", [(p, e) for p, e in expectations(HERE / "heldout_catalogue" / "logs")
                                        if e["category"] == "unknown"], ids=lambda x: x.name if isinstance(x, Path) else "")
def test_an_unknown_verdict_still_names_its_decisive_line_and_excerpt(log: Path, expect: dict):
    verdict = triage.classify_file(log)
    assert verdict.line is not None and verdict.excerpt
    assert log.read_text().splitlines()[verdict.line - 1].strip() in verdict.excerpt
