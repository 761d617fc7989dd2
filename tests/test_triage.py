"""Triage: every corpus log gets its category and decisive line; noise, streaming, signatures.

The corpus lives in tests/data/triage/<category>/*.log: the casa6_* logs are what CASA 6
really printed here (tests/data/triage/make_corpus.py), the others are hand-written
pipeline, runner and batch-system excerpts. ``<log>.expect`` holds ``line=<n>`` (or
``line=none``) for the decisive line, and ``# source: ...`` lines naming where the text comes
from. Every rule names one of these logs (``Rule.corpus``) and must match it.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pytest

from ari_console import triage
from ari_console.errors import UserError

CORPUS = Path(__file__).parent / "data" / "triage"
LOGS = sorted(CORPUS.glob("*/*.log"))
HELDOUT = sorted((CORPUS / "heldout").glob("*/*.log"))


def expected_line(log: Path) -> int | None:
    """The decisive line written in the log's sidecar (``# source: ...`` lines say where it came from)."""
    lines = Path(f"{log}.expect").read_text().splitlines()
    text = " ".join(line for line in lines if not line.lstrip().startswith("#"))
    value = dict(part.split("=", 1) for part in text.split())["line"]
    return None if value == "none" else int(value)


def casa_line(level: str, origin: str, message: str, when: str = "2026-11-25 16:12:50") -> str:
    """One CASA logger line."""
    return f"{when}\t{level}\t{origin}\t{message}"


LEAP = [
    casa_line("SEVERE", "MeasTable::dUTC(Double) (file MeasTable.cc, line 4290)", "Leap second table TAI_UTC seems out-of-date."),
    casa_line("SEVERE", "MeasTable::dUTC(Double) (file MeasTable.cc, line 4290)+",
              "Until the table is updated (see the CASA documentation or your system admin),"),
    casa_line("SEVERE", "MeasTable::dUTC(Double) (file MeasTable.cc, line 4290)+",
              "times and coordinates derived from UTC could be wrong by 1s or more."),
]


def banner(task: str) -> str:
    """The CASA banner a task (or pipeline stage) starts with."""
    return casa_line("INFO", f"{task}::::casa", f"##### Begin Task: {task:<18} #####")


# --- the corpus -----------------------------------------------------------------------------

def test_corpus_has_two_logs_per_category_and_nothing_outside_the_closed_list():
    folders = {p.parent.name for p in LOGS}
    assert folders <= set(triage.CATEGORIES)
    for category in triage.CATEGORIES:
        assert len([p for p in LOGS if p.parent.name == category]) >= 2, category


def test_corpus_has_real_casa_logs_for_the_failures_casa_can_make_here():
    real = {p.parent.name for p in LOGS if p.name.startswith("casa6_")}
    assert {"calibration", "imaging", "uvcontfit", "importdata", "memory", "disk_full", "export"} <= real


def test_every_failing_category_has_a_log_with_a_misleading_earlier_severe_or_warn():
    level = re.compile(r"\t(SEVERE|WARN)\t|WARNING|error", re.I)
    for category in set(triage.CATEGORIES) - {"unknown"}:
        tricky = []
        for log in (p for p in LOGS if p.parent.name == category):
            line = expected_line(log)
            before = log.read_text().splitlines()[: (line or 1) - 1]
            if any(level.search(text) for text in before):
                tricky.append(log.name)
        assert tricky, f"{category}: no log has a SEVERE/WARN before its decisive line"


@pytest.mark.parametrize("log", LOGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_corpus_log_gets_its_folders_category_and_decisive_line(log: Path):
    verdict = triage.classify_file(log)
    assert verdict.category == log.parent.name, verdict.evidence
    assert verdict.line == expected_line(log), verdict.evidence
    if verdict.line is not None:
        decisive = log.read_text().splitlines()[verdict.line - 1]
        assert triage.clip(decisive) in verdict.excerpt.splitlines()


@pytest.mark.parametrize("log", LOGS[::3], ids=lambda p: f"{p.parent.name}/{p.name}")
def test_tiny_blocks_give_the_same_verdict_as_one_block(log: Path):
    whole = triage.classify_file(log)
    pieces = triage.classify_blocks(triage.read_blocks(log, size=97))
    assert (pieces.category, pieces.line, pieces.excerpt, pieces.signature) == \
           (whole.category, whole.line, whole.excerpt, whole.signature)


@pytest.mark.parametrize("log", HELDOUT, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_held_out_log_written_after_the_rules_gets_its_category(log: Path):
    assert triage.classify_file(log).category == log.parent.name


# --- noise and root causes -------------------------------------------------------------------

def test_leap_second_severe_and_its_continuation_lines_are_noise():
    verdict = triage.classify(LEAP + [casa_line("INFO", "tclean::::casa", "Task tclean complete")])
    assert (verdict.category, verdict.line) == ("unknown", None)


def test_a_real_severe_continuation_after_noise_still_counts():
    lines = LEAP + [banner("tclean"),
                    casa_line("SEVERE", "tclean::::casa", "Task tclean raised an exception of class RuntimeError with the following message: boom"),
                    casa_line("SEVERE", "tclean::::casa+", "(near char. 10 in string)")]
    verdict = triage.classify(lines)
    assert (verdict.category, verdict.stage, verdict.line) == ("imaging", "tclean", 5)


def test_memory_error_inside_makeimlist_is_memory_not_makeimlist():
    lines = [banner("hif_makeimlist"),
             casa_line("SEVERE", "hif_makeimlist::pipeline.h.cli.utils::casa", "Error executing pipeline task hif_makeimlist."),
             casa_line("SEVERE", "hif_makeimlist::pipeline.h.cli.utils::casa+", "Traceback (most recent call last):"),
             casa_line("SEVERE", "hif_makeimlist::pipeline.h.cli.utils::casa+", "MemoryError")]
    verdict = triage.classify(lines)
    assert (verdict.category, verdict.stage, verdict.line) == ("memory", "hif_makeimlist", 4)


def test_no_space_left_inside_tclean_is_disk_full_not_imaging():
    lines = [banner("hif_makeimages"), banner("tclean"),
             casa_line("SEVERE", "tclean::SIImageStore::residual", "Error in making residual : write error: No space left on device"),
             casa_line("SEVERE", "hif_makeimages::pipeline.hif.tasks.makeimages::casa", "Cleaning failure for field M100 spw 3")]
    verdict = triage.classify(lines)
    assert (verdict.category, verdict.line) == ("disk_full", 3)


def test_an_error_the_pipeline_recovered_from_loses_to_the_failure_in_the_last_stage():
    lines = [banner("hif_findcont"),
             casa_line("SEVERE", "hif_findcont::pipeline.hif.tasks.findcont::casa", "findcont failed for spw 17; using the whole band"),
             banner("hif_uvcontfit"),
             casa_line("SEVERE", "hif_uvcontfit::pipeline.h.cli.utils::casa", "Error executing pipeline task hif_uvcontfit.")]
    verdict = triage.classify(lines)
    assert (verdict.category, verdict.stage, verdict.line) == ("uvcontfit", "hif_uvcontfit", 4)


def test_a_warning_loses_to_a_severe_of_the_same_strength():
    lines = [banner("hif_makeimages"),
             casa_line("WARN", "hif_makeimages::x::casa", "No continuum ranges found for field M100 spw 3"),
             casa_line("SEVERE", "hif_makeimages::x::casa", "Cleaning failure for field M100 spw 3")]
    assert triage.classify(lines).category == "imaging"


def test_batch_system_time_limit_beats_the_exceptions_it_caused():
    lines = [banner("tclean"),
             casa_line("SEVERE", "tclean::::casa", "Task tclean raised an exception of class KeyboardInterrupt with the following message: Terminated"),
             "slurmstepd: error: *** JOB 7 ON n1 CANCELLED AT 2026-11-25T16:00:00 DUE TO TIME LIMIT ***"]
    assert (triage.classify(lines).category, triage.classify(lines).line) == ("walltime", 3)


@pytest.mark.parametrize("line, category", [
    (line.strip(), category) for line, category in zip(
        [l for l in triage.__doc__.splitlines() if l.strip().startswith("ari-runner:")],
        ["unknown", "unknown", "memory", "walltime", "disk_full", "total_power"], strict=True)
])
def test_the_runner_formats_the_docstring_documents_are_understood(line: str, category: str):
    """The two templates (with <placeholders>) say nothing; the concrete examples are understood."""
    assert triage.classify([line]).category == category


def test_a_retried_download_warning_does_not_outrank_a_later_imaging_error():
    lines = ["ari-runner: stage download started",
             "WARNING: transient error (HTTP Error 503: Service Unavailable), retry 1 of 3",
             "ari-runner: stage download done", "ari-runner: stage image started",
             "Traceback (most recent call last):", '  File "recipe.py", line 3, in <module>', "    tclean(vis=vis)",
             "ValueError: imsize must be even"]
    verdict = triage.classify(lines)
    assert (verdict.category, verdict.stage, verdict.line) == ("imaging", "image", 8)


def test_traceback_source_lines_are_code_not_messages():
    lines = ['  File "/usr/lib/python3.6/urllib/request.py", line 650, in http_error_default',
             "    raise HTTPError(req.full_url, code, msg, hdrs, fp)", "ValueError: x"]
    assert triage.classify(lines).evidence[0].startswith("line 3:")
    assert all("HTTPError" not in e for e in triage.classify(lines).evidence)


def test_runner_stated_category_is_taken_when_known():
    verdict = triage.classify(["ari-runner: stage download started",
                               "ari-runner: stage download failed: category=download: HTTP Error 503"])
    assert (verdict.category, verdict.stage, verdict.line) == ("download", "download", 2)


# --- several logs and hints -------------------------------------------------------------------

def test_classify_many_takes_the_batch_systems_verdict_over_a_generic_casa_error():
    casa = [banner("tclean"), casa_line("SEVERE", "tclean::::casa", "Exception Reported: interrupted")]
    slurm = ["slurmstepd: error: Detected 1 oom-kill event(s) in StepId=81234.batch."]
    verdict = triage.classify_many([("casa.log", casa), ("slurm-81234.out", slurm)])
    assert (verdict.category, verdict.source, verdict.line) == ("memory", "slurm-81234.out", 1)


def test_a_status_hint_beats_symptoms_but_not_a_root_cause_in_the_log():
    symptom = [banner("tclean"), casa_line("SEVERE", "tclean::::casa", "Task tclean raised an exception of class RuntimeError with the following message: x")]
    assert triage.classify(symptom, hint="walltime").category == "walltime"
    disk = symptom + ["OSError: [Errno 28] No space left on device: 'x.residual'"]
    assert triage.classify(disk, hint="walltime").category == "disk_full"
    assert triage.classify(["nothing to see"], hint="memory").category == "memory"


def test_a_hint_outside_the_closed_list_is_a_user_error():
    with pytest.raises(UserError, match="hint 'oom'"):
        triage.classify(["x"], hint="oom")


# --- files --------------------------------------------------------------------------------------

def test_gzip_log_classifies_like_the_plain_one(tmp_path: Path):
    log = CORPUS / "memory" / "pipeline_makeimlist_memoryerror.log"
    packed = tmp_path / "casa.log.gz"
    packed.write_bytes(gzip.compress(log.read_bytes()))
    plain, zipped = triage.classify_file(log), triage.classify_file(packed)
    assert (zipped.category, zipped.line, zipped.excerpt) == (plain.category, plain.line, plain.excerpt)


def test_binary_file_is_a_user_error_naming_the_file(tmp_path: Path):
    blob = tmp_path / "core.12345"
    blob.write_bytes(bytes(range(256)) * 40)
    with pytest.raises(UserError, match=r"core\.12345: binary file"):
        triage.classify_file(blob)


def test_missing_file_and_directory_are_user_errors(tmp_path: Path):
    with pytest.raises(UserError, match="no such file"):
        triage.classify_file(tmp_path / "nope.log")
    with pytest.raises(UserError, match="is a directory"):
        triage.classify_file(tmp_path)


def test_classify_reads_a_one_shot_generator_and_counts_lines_across_blocks():
    filler = (casa_line("INFO", "tclean::x", f"minor cycle {i}") for i in range(5000))

    def lines():
        yield banner("tclean")
        yield from filler
        yield "terminate called after throwing an instance of 'std::bad_alloc'"
        yield "  what():  std::bad_alloc"

    verdict = triage.classify(lines(), chunk_chars=1000)
    assert (verdict.category, verdict.line) == ("memory", 5002)
    assert verdict.excerpt.splitlines()[-2:] == ["terminate called after throwing an instance of 'std::bad_alloc'",
                                                 "  what():  std::bad_alloc"]


def test_excerpt_holds_lines_before_and_after_the_decisive_one():
    lines = [f"line {i}" for i in range(1, 11)] + ["MemoryError"] + [f"after {i}" for i in range(1, 6)]
    verdict = triage.classify(lines)
    assert verdict.excerpt.splitlines() == ["line 9", "line 10", "MemoryError", "after 1", "after 2"]


# --- signatures and groups ----------------------------------------------------------------------

def test_signature_masks_uids_paths_numbers_dates_and_fields():
    a = triage.signature("2026-11-25 16:12:50 Cleaning failure for field NGC_1068 spw 25 in "
                         "/scratch/ari/uid___A001_X1296_X1d3/work/uid___A002_Xc1e2be_X1234.ms (uid://A001/X1296/X1d3) 0x7f3a2b")
    b = triage.signature("2026-12-01 01:02:03 Cleaning failure for field Orion_KL spw 17 in "
                         "/data/other/uid___A001_X88_X9/work/uid___A002_X1_X2.ms (uid://A001/X88/X9) 0x55aa00")
    assert a == b
    assert "NGC" not in a and "1296" not in a and "scratch" not in a


def test_signature_treats_lists_of_numbers_of_any_length_alike():
    assert triage.signature("No continuum ranges found for field A spw 25, 27, 29, 31") == \
           triage.signature("No continuum ranges found for field B spw 17, 19")


def test_signature_keeps_the_codes_that_tell_causes_apart():
    assert triage.signature("HTTP Error 503: Service Unavailable") != triage.signature("HTTP Error 404: Not Found")
    assert "503" in triage.signature("urllib.error.HTTPError: HTTP Error 503: Service Unavailable")


def test_thousands_of_attempts_group_into_their_few_causes():
    causes = [
        "ari-runner: killed: memory budget {g}.0 GB exceeded (rss {r}.4 GB)",
        "slurmstepd: error: *** JOB {j} ON mup0{g} CANCELLED AT 2026-11-2{g}T0{g}:00:00 DUE TO TIME LIMIT ***",
        "OSError: [Errno 28] No space left on device: '/scratch/uid___A002_X{j}_X{g}.ms/table.f{g}'",
    ]
    items = []
    for i in range(3000):
        text = causes[i % 3].format(g=i % 7 + 1, r=i % 9 + 1, j=1000 + i)
        items.append((f"uid://A001/X{i:x}/X1", triage.classify([text])))
    groups = triage.group(items)
    assert [(g.category, g.count) for g in groups] == [("disk_full", 1000), ("memory", 1000), ("walltime", 1000)]
    assert all(len(g.example_uids) == 3 for g in groups)


def test_uid_from_path_reads_both_uid_spellings():
    assert triage.uid_from_path("/runs/uid___A001_X1296_X1d3/attempt-2/casa.log") == "uid://A001/X1296/X1d3"
    assert triage.uid_from_path("/runs/plain/casa.log") is None


def test_stage_names_map_to_categories():
    expected = {"hifa_importdata": "importdata", "hif_makeimlist": "makeimlist", "hif_findcont": "findcont",
                "hif_uvcontfit": "uvcontfit", "hif_makeimages": "imaging", "hifa_exportdata": "export",
                "hsd_baseline": "total_power", "hifa_timegaincal": "calibration", "applycal": "calibration",
                "download": "download", "tclean": "imaging", "uvcontsub": "uvcontfit"}
    assert {k: triage.stage_category(k) for k in expected} == expected


def test_every_rule_names_a_known_category_and_compiles():
    for rule in triage.RULES:
        assert rule.category in triage.CATEGORIES + (triage.CONTEXT, triage.FROM_GROUP), rule.name
        assert rule.regex is not None
        assert all(n == n.lower() for n in rule.needles), rule.name


# --- the rule catalogue ----------------------------------------------------------------------

@pytest.mark.parametrize("rule", triage.RULES, ids=lambda r: r.name)
def test_every_rule_names_a_corpus_log_that_it_matches(rule):
    assert rule.corpus, f"rule {rule.name} has no corpus log: add one under tests/data/triage/ and name it"
    log = CORPUS / rule.corpus
    assert log.is_file(), f"rule {rule.name}: corpus log {rule.corpus} does not exist"
    assert triage.classify_file(log, rules=(rule,)).rule == rule.name, f"rule {rule.name} does not match {rule.corpus}"


def test_a_rule_without_a_corpus_log_fails_the_catalogue_check():
    orphan = triage.Rule("orphan", "memory", 95, r"never seen", ("never",))
    with pytest.raises(AssertionError, match="no corpus log"):
        test_every_rule_names_a_corpus_log_that_it_matches(orphan)


# --- logs as people paste them ----------------------------------------------------------------

def test_a_task_typed_at_the_casa_prompt_is_the_stage_of_the_crash_below_it():
    lines = ["CASA <27>: tclean(vis=['a.ms', 'tp.ms'], imagename='lup3_clean', specmode='cube',",
             "      ...: niter=1000)",
             "0%....10....20....30....40....50....60....70....80....90....100%",
             "libc++abi.dylib: terminating with uncaught exception of type casacore::AipsError: "
             "RegularFileIO: error in open or create of file /data/lup3_clean.mask/logtable/table.dat: Too many open files"]
    verdict = triage.classify(lines)
    assert (verdict.category, verdict.stage, verdict.line, verdict.rule) == ("imaging", "tclean", 4, "too-many-open-files")


def test_the_pipeline_console_format_names_the_task_it_executes():
    lines = ["2022-10-19 09:05:33 INFO: Executing tclean(vis=['uid___A002_Xfe3986_X9083_target.ms'], imsize=[1728, 2160])",
             "[c0704a-s27:49996] *** Process received signal ***",
             "[c0704a-s27:49996] Signal: Segmentation fault (11)"]
    verdict = triage.classify(lines)
    assert (verdict.category, verdict.stage, verdict.line) == ("imaging", "tclean", 3)


def test_a_function_call_at_the_prompt_is_not_a_stage():
    verdict = triage.classify(["CASA <3>: ms.open('uid___A002_Xfe3986_X9083.ms')", "Segmentation fault (core dumped)"])
    assert verdict.category == "unknown"


def test_a_warning_that_relays_a_programs_error_output_is_not_demoted():
    lines = ["2023-04-07 13:32:16 WARNING node.n7.executable_args.L1_SB243.dppp.ms_concat_0: /opt/aoflagger stderr: "
             "An unhandled exception occured: FiledesIO: file /data/L1_SB134.ms/table.f0 could not be opened: Too many open files",
             "",
             "2023-04-07 13:32:18 ERROR   node.n7.executable_args: Command '/opt/aoflagger' returned non-zero exit status 30"]
    assert triage.classify(lines).line == 1


def test_a_python_logging_prefix_does_not_hide_the_exception_at_the_bottom_of_a_traceback():
    lines = ["imaging - 2020-01-22 12:59:53,231 CRITICAL -   File \"/scratch/code/run.py\", line 115, in run",
             "imaging - 2020-01-22 12:59:53,233 CRITICAL -     raise CasaException(\"CASA raised a SEVERE exception\")",
             "imaging - 2020-01-22 12:59:53,235 CRITICAL - Crasa.CasaException: CASA raised a SEVERE exception while running task mstransform",
             "imaging - 2020-01-22 12:59:53,734 CRITICAL - Recipe execution failed while running job mstransform_0"]
    assert triage.classify(lines).line == 3


def test_an_mpi_servers_exception_in_a_tclean_cube_is_imaging_even_without_a_banner():
    lines = ["WARN    MPICommandServer::command_request_handler_service::SynthesisImagerVi2::CubeMajorCycle::MPIServer-4 "
             "(file src/code/synthesis/ImagerObjects/CubeMajorCycleAlgorithm.cc, line 336)   Exception for chan range [208, 233] ---",
             "##################################",
             "Exception: Error in making PSF : Error (Resource deadlock avoided) when acquiring lock on /data/J1000.model/table.lock"]
    verdict = triage.classify(lines)
    assert (verdict.category, verdict.stage, verdict.line) == ("imaging", "tclean", 3)


def test_lines_as_grep_prints_them_keep_their_casa_level_and_origin():
    lines = ["casa-20220121.log:2022-01-21 18:05:38\tSEVERE\ttclean::SIImageStore::setModelImage\tshape [3] differs from [4]"]
    verdict = triage.classify(lines)
    assert (verdict.category, verdict.stage, verdict.rule) == ("imaging", "tclean", "severe-line")


@pytest.mark.parametrize("lines", [
    ["       JobID    JobName      State ExitCode ", "7730012      ari-X2f7+ CANCELLED+      0:0 "],
    ["slurmstepd: error: *** JOB 7712 ON cn08 CANCELLED AT 2026-04-09T02:00:01 DUE TO PREEMPTION ***"],
    ["Reminder: the DEADLINE for the Cycle 13 proposals is near"],
    ["2016-04-27 19:14:42\tSEVERE\tSimulator::predict() (file Simulator.cc, line 2118)\tFailed to create SkyEquation"],
    ["2022-04-06 04:22:43 INFO: Executing plotms(vis='uid___A002_Xf512ae_X2626.ms', xaxis='azimuth')",
     "fuse: failed to exec fusermount: No such file or directory"],
    ["[c0704a-s27:49996] *** Process received signal ***", "[c0704a-s27:49996] Signal: Segmentation fault (11)"],
], ids=["sacct-cancelled", "preempted", "deadline-in-prose", "simulator", "plotms", "bare-segfault"])
def test_a_failure_outside_any_known_stage_is_unknown_with_its_decisive_line(lines):
    verdict = triage.classify(lines)
    assert verdict.category == "unknown", verdict.evidence
    if verdict.rule is not None:
        assert verdict.line is not None and verdict.excerpt


def test_the_rules_version_changes_when_a_rule_changes():
    changed = list(triage.RULES)
    changed[0] = triage.Rule(changed[0].name, changed[0].category, changed[0].priority - 1, changed[0].pattern)
    assert triage.rules_version() == triage.rules_version(triage.RULES)
    assert triage.rules_version(changed) != triage.rules_version()
