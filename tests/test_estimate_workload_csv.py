"""A workload CSV as an outsider writes it: an archive query's spellings, a spreadsheet's habits.

What `ari estimate simulate --workload` accepts beyond the canonical ``uid,size_gb,hours,mem_gb``
(columns in any order and case, other columns ignored and named, ``Band 6``, ``TM1``, ``T``/``F``,
NULL cells, ``size_bytes``), and what stops with one line naming the file, line, column and fix
(exit 2, no traceback).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ari_console import estimate as est
from ari_console.errors import UserError

REAL = Path(os.environ.get("ARI_REAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data" / "real"))
REAL_ROW = ((REAL if (REAL / "archive").is_dir() else Path("/work/shared/data/real"))
            / "archive" / "astroquery-alma-onerow.txt")

NODES_TOML = """\
[[node]]
name = "ws"
count = 2
mem_gb = 24
speed = 0.6

[[node]]
name = "mup"
count = 2
slots = 2
mem_gb = 64
walltime_h = 48
"""

CANONICAL = """\
uid,size_gb,array,band,n_spw,n_chan,is_mosaic,n_eb,true_hours,true_mem_gb
uid://A001/X1/X1,12.5,12m,6,4,1920,true,1,7.5,20
uid://A001/X1/X2,40,7m,3,4,480,false,2,3.2,8
uid://A001/X1/X3,,TP,7,,,false,,30,12
uid://A001/X1/X4,200,12m,6,8,3840,false,3,60,50
uid://A001/X1/X5,5,12m,9,,128,true,1,2.5,6
"""

OUTSIDER = (
    "\ufeff# exported from the archive query of 2026-11-30\n"
    "Band;Member_OUS_UID;Array;size_bytes;target;IS_MOSAIC;nspw;nchan;n_eb;TRUE_MEM_GB;true_hours;proposal_id\n"
    "Band 6;uid___A001_X1_X1;TM1;12.5e9;M83;T;4;1920;1;20;7.5;2017.1.00079.S\n"
    "B3;uid___A001_X1_X2;ACA;40000000000;NGC 253;F;4;480;2;8;3.2;2017.1.00079.S\n"
    "ALMA_RB_07;uid://A001/X1/X3;Total Power;NULL;Orion;no;NaN;--;;12;30;2018.1.00001.T\n"
    "6.0;uid://A001/X1/X4;12M;2e11;Arp 220;0;8;3840;3;50;60;2019.1.00002.S;;\n"
    "9 10;uid://A001/X1/X5;tm2;5e9;TW Hya;True;;128;1;6;2.5;2019.1.00003.S\n"
)


def test_an_archive_export_reads_as_the_canonical_workload():
    canonical, outsider = est.read_workload(CANONICAL, "c.csv"), est.read_workload(OUTSIDER, "o.csv")
    assert outsider.datasets == canonical.datasets
    assert outsider.truth == canonical.truth
    assert outsider.ignored == ("target", "proposal_id")
    third = outsider.datasets[2]
    assert (third.array, third.band, third.size_gb, third.n_spw, third.n_chan, third.n_eb) == ("TP", 7, None, None,
                                                                                                None, None)


@pytest.mark.parametrize("band, number", [("6", 6), ("Band 6", 6), ("band6", 6), ("B7", 7), ("ALMA_RB_03", 3),
                                          ("10.0", 10), ("3 6", 3)])
def test_band_spellings_of_the_archive_and_of_people_give_its_number(band, number):
    assert est.read_workload(f"uid,band\na,{band}\n").datasets[0].band == number


@pytest.mark.parametrize("array, name", [("12m", "12m"), ("TM1", "12m"), ("tm2", "12m"), ("7m", "7m"),
                                         ("7M", "7m"), ("ACA", "7m"), ("TP", "TP"), ("Total Power", "TP")])
def test_array_spellings_give_one_of_the_three_arrays(array, name):
    assert est.read_workload(f"uid,array\na,{array}\n").datasets[0].array == name


@pytest.mark.parametrize("cell", ["", "NULL", "null", "None", "NaN", "nan", "N/A", "--"])
def test_null_cells_are_unknown_not_zero(cell):
    ds = est.read_workload(f"uid,size_gb,n_chan,is_mosaic,band\na,{cell},{cell},{cell},{cell}\n").datasets[0]
    assert (ds.size_gb, ds.n_chan, ds.is_mosaic, ds.band) == (None, None, None, None)


def test_an_archive_query_row_saved_as_csv_gives_band_mosaic_array_and_spectral_setup(tmp_path):
    """The real TAP answer (one obscore row of a MOUS, astroquery's table) written as CSV by astropy."""
    from astropy.table import Table

    table = Table.read(REAL_ROW, format="ascii")
    table.write(tmp_path / "tap.csv", format="csv")
    work = est.read_workload((tmp_path / "tap.csv").read_text(), "tap.csv")
    ds = work.datasets[0]
    assert (ds.uid, ds.band, ds.is_mosaic, ds.array) == ("uid://A001/X1295/X35", 3, True, "12m")
    assert ds.n_spw == 4 and ds.n_chan > 100  # the four windows of its frequency_support
    assert "proposal_id" in work.ignored and "t_exptime" in work.ignored and work.truth == {}


def test_size_gb_wins_over_size_bytes_and_bytes_fill_its_gaps():
    work = est.read_workload("uid,size_gb,size_bytes\na,12,9e9\nb,,3.5e9\n")
    assert [d.size_gb for d in work.datasets] == [12.0, 3.5]


def test_a_semicolon_export_with_decimal_commas_reads_its_numbers():
    work = est.read_workload("uid;size_gb;true_hours;band\na;12,5;7,25;6\n")
    assert (work.datasets[0].size_gb, work.truth["a"], work.datasets[0].band) == (12.5, (7.25, None), 6)


def test_a_tab_separated_file_with_trailing_empty_cells_reads():
    work = est.read_workload("uid\tsize_gb\thours\na\t10\t6\t\t\n")
    assert (work.datasets[0].size_gb, work.datasets[0].hours) == (10.0, 6.0)


def test_a_row_without_truth_in_a_workload_with_truth_is_named():
    text = "uid,size_gb,hours,true_hours\na,10,,7\nb,10,5,\nc,10,,\n"
    with pytest.raises(UserError) as err:
        est.read_workload(text, "w.csv")
    message = str(err.value)
    assert message.startswith("w.csv: line 4: true_hours is empty") and "fill it on every row" in message
    # row b gives its hours: an explicit value is its truth, so only row c is wrong
    work = est.read_workload(text.replace("c,10,,\n", "c,10,,9\n"), "w.csv")
    assert work.truth == {"a": (7.0, None), "c": (9.0, None)} and work.datasets[1].hours == 5.0


@pytest.mark.parametrize("text, words", [
    ("uid,band\na,6\nb,Band 12\n", ['w.csv: line 3: band must be an ALMA band 1-10, got "Band 12"', "e.g. 6"]),
    ("uid,array\na,12m+7m\n", ['w.csv: line 2: array must be 12m, 7m or TP, got "12m+7m"']),
    ("uid,is_mosaic\na,sometimes\n", ['line 2: is_mosaic must be true or false, got "sometimes"']),
    ("uid,size_gb,runtime_min\na,1,90\n", ['w.csv: line 1: column "runtime_min" is not read', "90 minutes = 1.5"]),
    ("uid,peak_mem_mb\na,9000\n", ['column "peak_mem_mb" is not read', "mem_gb"]),
    ("uid,size_tb\na,1\n", ['column "size_tb" is not read', "size_bytes"]),
    ("uid,actual_runtime\na,1\n", ['column "actual_runtime" is not read']),
    ("uid,size,hours\na,1,2\n", ['w.csv: line 1: unknown column "size"', 'did you mean "size_gb"']),
    ("# a note\nuid,true_hour\na,1\n", ['w.csv: line 2: unknown column "true_hour"', 'did you mean "true_hours"']),
    ("uid,size_gb,SIZE_GB\na,1,2\n", ['column "size_gb" appears twice']),
    ("uid,hours\nuid___A001_X1_X2,1\nuid://A001/X1/X2,2\n", ['line 3: uid "uid://A001/X1/X2" is also on line 2']),
    ("uid,hours\na,90 min\n", ['line 2: hours must be a number of hours, got "90 min" — write 1.5']),
    ("uid,size_gb,proposal_id\na,1\n", ["line 2: 2 values for 3 columns (uid,size_gb,proposal_id)"]),
    ("uid,hours\na\0,1\n", ["w.csv: not a text CSV (it holds NUL bytes)"]),
    ("uid,size_gb,hours,mem_gb\n\n", ["w.csv: no data sets, only the header — add one row per data set"]),
])
def test_what_cannot_be_read_stops_with_the_line_column_and_fix(text, words):
    with pytest.raises(UserError) as err:
        est.read_workload(text, "w.csv")
    assert "\n" not in str(err.value)
    for word in words:
        assert word in str(err.value)


def _ari(*args, cwd):
    return subprocess.run([sys.executable, "-m", "ari_console.cli", "estimate", "simulate", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=120)


def test_simulate_gives_an_outsiders_file_the_answer_of_the_canonical_one_and_names_what_it_ignored(tmp_path):
    (tmp_path / "c.csv").write_text(CANONICAL)
    (tmp_path / "o.csv").write_text(OUTSIDER, encoding="utf-8")
    (tmp_path / "n.toml").write_text(NODES_TOML)
    runs = [_ari("--workload", name, "--nodes", "n.toml", "--json", cwd=tmp_path) for name in ("c.csv", "o.csv")]
    for run in runs:
        assert run.returncode == 0, run.stderr
    canonical, outsider = (json.loads(r.stdout) for r in runs)
    assert outsider["hidden_truth"] is True and outsider["jobs"] == 5
    for key in ("makespan_h", "lower_bound_h", "completed", "cpu_hours", "wasted_cpu_hours", "kills", "unplaceable"):
        assert outsider[key] == canonical[key], key
    assert "ignored columns the estimate does not read: target, proposal_id" in runs[1].stderr
    assert "ignored" not in runs[0].stderr


def test_simulate_stops_on_a_bad_cell_with_one_line_and_exit_2(tmp_path):
    (tmp_path / "w.csv").write_text(CANONICAL.replace("12.5,12m,6,", "12.5,12m,Band 13,"))
    (tmp_path / "n.toml").write_text(NODES_TOML)
    run = _ari("--workload", "w.csv", "--nodes", "n.toml", "--json", cwd=tmp_path)
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.strip().splitlines() == [
        'ari: w.csv: line 2: band must be an ALMA band 1-10, got "Band 13" — write its number, e.g. 6']
