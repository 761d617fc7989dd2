"""ALMA identifiers and the catalogue CSV."""

import pytest

from ari_console.alma import parse_array, parse_band, parse_project, parse_uid, read_datasets_csv, uid_filename
from ari_console.errors import UserError


@pytest.mark.parametrize("text", ["uid://A001/X1296/X1d3", "uid___A001_X1296_X1d3", " uid://A001/x1296/X1D3 "])
def test_both_uid_spellings_parse_to_the_archive_form(text):
    assert parse_uid(text) == "uid://A001/X1296/X1d3"


def test_uid_round_trips_through_the_file_name_form():
    assert uid_filename("uid://A002/Xc7111c/X3979") == "uid___A002_Xc7111c_X3979"
    assert parse_uid(uid_filename("uid://A002/Xc7111c/X3979")) == "uid://A002/Xc7111c/X3979"


@pytest.mark.parametrize("bad", ["", "uid://A001/X1296", "uid://A01/X1296/X1d3", "A001-X1296-X1d3", "uid://A001/X12g6/X1"])
def test_malformed_uids_are_refused(bad):
    with pytest.raises(ValueError):
        parse_uid(bad)


def test_project_codes_arrays_and_bands_normalise():
    assert parse_project("2016.1.00123.S") == "2016.1.00123.S"
    assert parse_project("2011.0.00010.sv") == "2011.0.00010.SV"
    assert parse_project("2016.A.00010.S") == "2016.A.00010.S"
    with pytest.raises(ValueError):
        parse_project("2016.1.123.S")
    assert [parse_array(a) for a in ("12m", "7M", "aca", "TP", "total power")] == ["12m", "7m", "7m", "TP", "TP"]
    assert [parse_band(b) for b in ("3", "B6", "Band 7", "ALMA_RB_10", 9)] == [3, 6, 7, 10, 9]
    with pytest.raises(ValueError):
        parse_band("11")


def test_catalogue_csv_reads_every_column(tmp_path):
    path = tmp_path / "cat.csv"
    path.write_text(
        "uid,project,array,band,size_gb,mem_gb,hours,n_spw,n_chan,is_mosaic,n_eb,note\n"
        "uid___A001_X1296_X1d3,2016.1.00123.S,12m,6,12.5,16,6,4,1920,T,2,first\n"
        "# a comment line\n"
        "\n"
        "uid://A001/X1296/X1d5,2016.1.00123.S,7m,B3,,,,,,,,\n"
    )
    first, second = read_datasets_csv(path)
    assert first.row() == {"uid": "uid://A001/X1296/X1d3", "project": "2016.1.00123.S", "array": "12m",
                           "band": 6, "size_gb": 12.5, "mem_gb": 16.0, "hours": 6.0, "casa_version": None,
                           "n_spw": 4, "n_chan": 1920, "is_mosaic": True, "n_eb": 2,
                           "archive_hours": None, "archive_mem_gb": None}  # a catalogue's hours are explicit
    assert first.extra == {"note": "first"}
    assert (second.array, second.band, second.size_gb) == ("7m", 3, None)
    # empty metadata cells are unknown, never a guessed 0 or false
    assert (second.n_spw, second.n_chan, second.is_mosaic, second.n_eb) == (None, None, None, None)


@pytest.mark.parametrize(
    "body, expected",
    [
        ("uid,project\nuid://A001/X1/X2,2016.1.00123.S\nuid://A001/X1,2016.1.00123.S\n",
         'cat.csv: line 3: uid "uid://A001/X1" is not valid — write a MOUS uid like uid://A001/X1296/X1d3'),
        ("uid,project\nuid://A001/X1/X2,2016.1.123.S\n", 'line 2: project "2016.1.123.S" is not valid'),
        ("uid,project,size_gb\nuid://A001/X1/X2,2016.1.00123.S,-3\n", 'line 2: size_gb "-3" is not valid'),
        ("uid,project,band\nuid://A001/X1/X2,2016.1.00123.S,12\n", 'line 2: band "12" is not valid'),
        ("uid,project,n_spw\nuid://A001/X1/X2,2016.1.00123.S,0\n",
         'line 2: n_spw "0" is not valid — write a number of spectral windows, e.g. 4'),
        ("uid,project,is_mosaic\nuid://A001/X1/X2,2016.1.00123.S,maybe\n",
         'line 2: is_mosaic "maybe" is not valid — write true or false'),
        ("uid,array\nuid://A001/X1/X2,12m\n", "line 1: header lacks project"),
        ("uid,project\nuid://A001/X1/X2,2016.1.00123.S\nuid___A001_X1_X2,2016.1.00123.S\n",
         "line 3: uid://A001/X1/X2 is already on line 2"),
        ("", "the file is empty"),
    ],
)
def test_a_bad_row_is_refused_with_its_line_and_value(tmp_path, body, expected):
    path = tmp_path / "cat.csv"
    path.write_text(body)
    with pytest.raises(UserError) as info:
        read_datasets_csv(path)
    assert expected in str(info.value)
