"""Failure triage: a multi-megabyte log in, one category, stage, line and excerpt out.

Pure: takes lines (or a path to read), returns values; no SQLite, no SSH, no clock.

What it reads
-------------
* CASA logger lines ``2026-11-25 16:12:50<TAB>SEVERE<TAB>tclean::...<TAB>message``; a
  continuation line has the same origin with ``+`` appended. The same lines pasted with
  spaces for tabs, Python logging lines (``2022-10-19 09:05:33 INFO: Executing tclean(...``,
  the pipeline's console) and tasks typed at the CASA prompt (``CASA <27>: tclean(...``).
* Python tracebacks (the exception at the bottom), ``Error executing pipeline task hif_x``,
  ALMA pipeline stage banners (``##### Begin Task: hif_findcont``), hsd_* (total power).
* Slurm / PBS / kernel output (time limit, node failure, oom-kill, ``Killed``, sacct states
  in sacct's cut width such as ``OUT_OF_ME+``, PBS ``Exit_status``), Open MPI / PRRTE help
  texts (a lost daemon), mpicasa's MPI servers, casacore's exceptions and write errors,
  the archive's HTTP answers, scriptForPI's aborts.
* Our runner's own lines. **The runner writes these formats** (one line each, prefix
  ``ari-runner:``), and triage relies on them::

      ari-runner: stage <download|restore|image|export> started
      ari-runner: stage <name> failed: category=<category>: <one-line reason>
      ari-runner: killed: memory budget 8.0 GB exceeded (rss 8.4 GB)
      ari-runner: killed: walltime 2.0 h exceeded
      ari-runner: refused: scratch has 1.2 GB free, stage needs 30 GB
      ari-runner: refused: total-power data set (<uid>) is not imaged

  ``category=`` must be one of :data:`CATEGORIES`; the runner states it only when it
  knows (it enforced a memory/walltime budget, a download failed, the disk filled).

How it decides
--------------
Rules are data (:data:`RULES`): a regex, the category (or ``@context``: the category of
the stage the line belongs to), a priority. Root causes outrank symptoms (disk_full 100 >
memory 95 > walltime/node_lost 90 > total_power 80 > download 75 > specific pipeline
failures 70 > "Error executing pipeline task" 60 > CASA task exception 55 > Python
exception 40 > bare SEVERE 30). A match on a WARN line counts 40 less; a match in a stage
that a later stage followed (the run went on, so it was not fatal) counts 30 less unless it
is a resource failure (priority >= 90). Noise (:data:`NOISE`, e.g. CASA's leap-second
SEVERE and its ``+`` continuation lines) is skipped. Adding a failure signature is one
``Rule(...)`` row, with the corpus log that shows it (``corpus=``; the tests check both).

A log that shows a total-power data set (an ``hsd_*`` stage, ``scriptForSDCalibration``)
makes any failure below the resource priorities ``total_power``. When no rule with a
category matched, the verdict is ``unknown`` and still names the most severe line seen
(rules at or below ``FALLBACK_PRIORITY``: the last WARN line when nothing else matched).
Each verdict carries the operator's ``fix`` for its category (:data:`FIXES`).

Rooms: :mod:`.rules` (the rule table, noise, stage -> category), :mod:`.scanner` (the
streaming scan and the verdict), :mod:`.files` (reading plain or compressed logs),
:mod:`.signatures` (masked messages and groups). Import from the package:
``from ari_console import triage; triage.classify_file(path)``.

Speed: the text is scanned in blocks with one regex that skips plain CASA INFO lines at C
speed; only the few other lines (and task banners) reach the rules, so memory stays flat
and a 1 GB log takes seconds (``benchmarks/bench_triage.py``).
"""

import importlib

# The submodules load on first use of a name (PEP 562): `ari status --json` reads one fix
# (``fix_for``) without compiling the scanner's regexes.
_EXPORTS = {
    "files": ("classify_file", "read_blocks"),
    "rules": ("CATEGORIES", "CONTEXT", "FIXES", "FROM_GROUP", "NOISE", "RESOURCE_PRIORITY", "RULES",
              "STAGE_CATEGORIES", "Rule", "fix_for", "rule_rows", "rules_version", "stage_category"),
    "scanner": ("CHUNK_CHARS", "MAX_EXCERPT_LINE", "Verdict", "apply_hint", "classify", "classify_blocks",
                "classify_many", "clip", "decisive"),
    "signatures": ("Group", "group", "signature", "uid_from_path"),
}
_HOME = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str):
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOME])


__all__ = [
    "CATEGORIES", "CHUNK_CHARS", "CONTEXT", "FIXES", "FROM_GROUP", "Group", "MAX_EXCERPT_LINE", "NOISE",
    "RESOURCE_PRIORITY", "RULES", "STAGE_CATEGORIES", "Rule", "Verdict", "apply_hint", "classify",
    "classify_blocks", "classify_file", "classify_many", "clip", "decisive", "fix_for", "group", "read_blocks",
    "rule_rows", "rules_version", "signature", "stage_category", "uid_from_path",
]
