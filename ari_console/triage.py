"""Failure triage: a multi-megabyte log in, one category, stage, line and excerpt out.

Pure: takes lines (or a path to read), returns values; no SQLite, no SSH, no clock.

What it reads
-------------
* CASA logger lines ``2026-11-25 16:12:50<TAB>SEVERE<TAB>tclean::...<TAB>message``; a
  continuation line has the same origin with ``+`` appended.
* Python tracebacks (the exception at the bottom), ``Error executing pipeline task hif_x``,
  ALMA pipeline stage banners (``##### Begin Task: hif_findcont``), hsd_* (total power).
* Slurm / PBS / kernel output (time limit, node failure, oom-kill, ``Killed``, sacct states).
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
``Rule(...)`` row.

Speed: the text is scanned in blocks with one regex that skips plain CASA INFO lines at C
speed; only the few other lines (and task banners) reach the rules, so memory stays flat
and a 1 GB log takes seconds (``benchmarks/bench_triage.py``).
"""

from __future__ import annotations

import bz2
import functools
import gzip
import io
import lzma
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from ari_console.errors import UserError

CATEGORIES = (
    "download", "calibration", "importdata", "makeimlist", "findcont", "uvcontfit", "imaging",
    "export", "memory", "walltime", "disk_full", "total_power", "node_lost", "unknown",
)
CONTEXT = "@context"  # category: the stage's category (from a `task` group, else the line's stage)
FROM_GROUP = "@cat"  # category: the text of the `cat` group (runner's category=...)
RESOURCE_PRIORITY = 90  # rules at or above this are never demoted by a later stage
WARN_PENALTY = 40
SUPERSEDED_PENALTY = 30
EXCERPT_BEFORE = 2
EXCERPT_AFTER = 2
MAX_EXCERPT_LINE = 300
CHUNK_CHARS = 4 << 20


@dataclass(frozen=True)
class Rule:
    """One failure signature: ``pattern`` (case-insensitive regex) -> ``category``.

    ``needles`` are lowercase substrings, one of which must occur in the message before the
    regex runs (a cheap prefilter); empty means always try. ``levels`` restricts the rule
    to CASA lines of those levels. ``keep`` says which occurrence is decisive when a rule
    fires repeatedly in the same stage. ``default`` is the category of a ``@context`` rule
    when the stage is unknown.
    """

    name: str
    category: str
    priority: int
    pattern: str
    needles: tuple[str, ...] = ()
    keep: str = "last"
    levels: tuple[str, ...] = ()
    default: str = "unknown"
    stage: str | None = None
    description: str = ""

    @property
    def regex(self) -> re.Pattern:
        """The compiled pattern (cached per rule)."""
        return _compiled(self.pattern)


_REGEX_CACHE: dict[str, re.Pattern] = {}


def _compiled(pattern: str) -> re.Pattern:
    """``pattern`` compiled case-insensitively, once."""
    if pattern not in _REGEX_CACHE:
        _REGEX_CACHE[pattern] = re.compile(pattern, re.IGNORECASE)
    return _REGEX_CACHE[pattern]


_ERRWORDS = r"(?:error|fail\w*|exception|abort\w*|crash\w*|cannot|could not|unable)"

RULES: tuple[Rule, ...] = (
    # --- disk_full (100): the root cause whatever stage hit it
    Rule("no-space-left", "disk_full", 100,
         r"No space left on device|\bENOSPC\b|\[Errno 28\]|errno\s*[=:]?\s*28\b",
         ("no space left", "enospc", "errno 28", "errno=28", "errno: 28"),
         keep="first", description="write failed: the file system is full"),
    Rule("disk-quota", "disk_full", 100, r"Disk quota exceeded|\bEDQUOT\b|quota exceeded|over (?:disk )?quota",
         ("quota", "edquot"), keep="first", description="user or group disk quota exceeded"),
    Rule("disk-full-words", "disk_full", 100,
         r"\b(?:disk|file ?system|partition|volume|scratch|device)\b[^\n]{0,40}\bis full\b|\b(?:disk|filesystem) full\b"
         r"|(?:not enough|insufficient) (?:free )?(?:disk|scratch|storage) space|out of (?:disk|storage) space"
         r"|Wrote only \d+ of \d+ bytes|short write",
         ("is full", "disk full", "filesystem full", "space", "wrote only", "short write"), keep="first", description="disk full, in words"),
    Rule("runner-refused-scratch", "disk_full", 100,
         r"ari-runner:\s*refused:[^\n]*\bfree\b", ("ari-runner",),
         keep="first", description="the runner refused to start a stage for lack of scratch space"),
    # --- memory (95)
    Rule("python-memoryerror", "memory", 95, r"\b(?:\w+\.)*_?\w*MemoryError\b", ("memoryerror",),
         keep="first", description="Python MemoryError (numpy's _ArrayMemoryError too)"),
    Rule("bad-alloc", "memory", 95, r"\bbad_alloc\b|bad allocation", ("bad_alloc", "bad alloc"),
         keep="first", description="C++ std::bad_alloc from casacore/CASA"),
    Rule("cannot-allocate", "memory", 95,
         r"Cannot allocate memory|\bENOMEM\b|Unable to allocate [\d.]+\s*[KMGTPE]i?B"
         r"|(?:out of|insufficient|not enough) (?:virtual |physical |available )?memory\b(?! ranges)"
         r"|memory allocation (?:fail|error)|\b(?:cannot|can ?not|can't|unable to|failed to|could not|couldn't) allocate\b",
         ("allocat", "memory", "enomem"), keep="first", description="an allocation failed"),
    Rule("oom-kill", "memory", 95,
         r"oom[-_ ]?kill|invoked oom|Out of memory: Kill|Killed process \d+|Memory cgroup out of memory",
         ("oom", "out of memory", "killed process"), keep="first", description="the kernel's OOM killer"),
    Rule("batch-memory-limit", "memory", 95,
         r"Exceeded (?:job|step) memory limit|(?-i:\bOUT_OF_MEMORY\b|\bOOM\b)|killed:?\s*(?:v?mem|pmem|memory)\b"
         r"|\b(?:v?mem|pmem|rss)\s+[\d.]+\s*\w*\s+exceeded (?:the )?limit|memory (?:limit|budget)\b[^\n]{0,40}(?:exceeded|reached)"
         r"|exceeded (?:its |the )?(?:requested |allowed )?memory|memory budget [\d.]+\s*\w+ exceeded|over (?:its |the )?memory limit"
         r"|\bTERM_MEMLIMIT\b|\bRSS limit\b[^\n]{0,40}exceeded",
         ("memory", "mem ", "oom", "killed", "term_memlimit", "rss limit"), keep="first", description="Slurm/PBS/runner memory limit"),
    # --- walltime / node_lost (90)
    Rule("time-limit", "walltime", 90,
         r"DUE TO TIME LIMIT|(?-i:\bTIMEOUT\b)|time limit (?:exceeded|reached)|job (?:exceeded|reached) (?:its )?time|\bTERM_RUNLIMIT\b|run ?time limit|reaching [^\n]{0,20}run ?limit",
         ("time limit", "timeout", "exceeded its time", "reached its time", "term_runlimit", "run limit", "runlimit"),
         keep="first", description="Slurm time limit (or sacct state TIMEOUT)"),
    Rule("walltime-exceeded", "walltime", 90,
         r"wall ?(?:time|clock)\b[^\n]{0,40}\bexceed|exceeded\b[^\n]{0,30}\bwall ?(?:time|clock)|killed:?\s*wall ?time|\bh_rt\b[^\n]{0,40}exceed"
         r"|CPU time limit exceeded|\bSIGXCPU\b",
         ("walltime", "wall time", "wallclock", "wall clock", "cpu time", "sigxcpu"),
         keep="first", description="PBS/runner walltime, CPU time limit"),
    Rule("node-failure", "node_lost", 90,
         r"DUE TO NODE FAIL|(?-i:\bNODE_FAIL)|node fail(?:ure|ed)|(?:sister|mother superior|MOM)\b[^\n]{0,80}\b(?:EOF|lost|down|died|unreachable)"
         r"|\bnodes?\b[^\n]{0,40}\b(?:went down|is down|down|unreachable|not responding|lost|rebooted|crashed|powered off)\b|failure of node|setting DOWN"
         r"|requested job (?:terminate|die)|lost (?:contact|connection) (?:with|to) (?:the )?(?:node|host)|ari-runner:\s*(?:node lost|heartbeat lost)"
         r"|ssh: connect to host \S+ port \d+: (?:Connection timed out|No route to host|Host is down)|Connection to \S+ closed by remote host",
         ("node", "sister", "mother superior", "mom", "requested job", "lost", "heartbeat", "setting down", "ssh:",
          "closed by remote host"),
         keep="first", description="the node died or left the cluster"),
    # --- total_power (80)
    Rule("total-power", "total_power", 80,
         r"total[- ]power|single[- ]dish|\bTP\b (?:array|data|MOUS|data ?set)|auto-?correlations? only|no cross-?correlation",
         ("total power", "total-power", "single dish", "single-dish", "tp ", "autocorr", "auto-corr", "cross-corr", "crosscorr"),
         keep="first", description="total-power data set (needs the hsd recipe)"),
    # --- runner-declared categories
    Rule("runner-category-resource", FROM_GROUP, 85,
         r"ari-runner:[^\n]*\bcategory=(?P<cat>memory|walltime|disk_full|node_lost|download)\b", ("ari-runner",),
         description="the runner enforced or saw a resource failure"),
    Rule("runner-category", FROM_GROUP, 50, r"ari-runner:[^\n]*\bcategory=(?P<cat>\w+)", ("ari-runner",),
         description="the runner's own category for a failed stage"),
    # --- download (75)
    Rule("http-error", "download", 75,
         r"HTTP ?Error:?\s*[45]\d\d|HTTP/\d(?:\.\d)?\"?\s+[45]\d\d|\b[45]\d\d:? (?:Service Unavailable|Not Found|Forbidden|Internal Server Error|Bad Gateway|Gateway Time-?out|Unauthorized|Too Many Requests)"
         r"|urllib\.error\.\w+|requests\.exceptions\.\w+|\bHTTPError\b|\bURLError\b",
         ("http", "urlerror", "requests.exceptions", "service unavailable", "not found", "gateway"),
         stage="download", keep="first", description="HTTP error from the archive"),
    Rule("checksum-mismatch", "download", 75,
         r"checksums?\b[^\n]{0,60}(?:mismatch|error|fail|differ|not match|wrong|bad)|(?:md5|sha\d*|adler32|crc32?)(?: ?sum)?\b[^\n]{0,60}(?:mismatch|differ|not match|fail)"
         r"|^\S+: FAILED(?: open or read)?$"
         r"|(?:tar|gzip|unzip): [^\n]*(?:unexpected (?:end|eof)|not in gzip|invalid|not recoverable|short read)"
         r"|corrupt(?:ed)? (?:download|tarball|archive file)|(?:truncated|incomplete) (?:download|tarball)",
         ("checksum", "md5", "sha", "adler", "crc", "tar:", "gzip:", "unzip:", "corrupt", "truncated", "incomplete", ": failed"),
         stage="download", keep="first", description="downloaded file is corrupt"),
    Rule("download-failed", "download", 75,
         r"curl: \(\d+\)|\bwget\b[^\n]*(?:error|fail)|\bERROR [45]\d\d: |(?:failed|unable|could not) to (?:download|retrieve|fetch)"
         r"|(?:could not|cannot|unable to|failed to) be (?:downloaded|retrieved|fetched)|(?:status|response) code:? [45]\d\d"
         r"|\barchive\b[^\n]{0,60}\b(?:fail\w*|error|unavailable|not available|timed out)"
         r"|(?<!stage )download\w*\b[^\n]{0,60}(?:fail|error|incomplete|abort|timed out)|(?:request handler|rh\.alma|almascience)[^\n]{0,80}(?:error|fail|refused|timed out)",
         ("curl", "wget", "error 4", "error 5", "download", "retriev", "fetch", "request handler", "rh.alma", "almascience",
          "status code", "response code", "archive"),
         stage="download", keep="first", description="download tool reported a failure"),
    Rule("network-error", CONTEXT, 45,
         r"Connection (?:refused|reset|timed out|aborted)|Read timed out|Temporary failure in name resolution|Name or service not known"
         r"|Could not resolve host|\bSSL(?:Error|: )|RemoteDisconnected|IncompleteRead|ConnectionResetError|ConnectionRefusedError|Network is unreachable"
         r"|Remote end closed connection|closed the connection|connection (?:was )?(?:closed|dropped|lost)|giving up after \d+ (?:attempts|retries|tries)",
         ("connection", "timed out", "name resolution", "name or service", "resolve host", "ssl", "remotedisconnected",
          "incompleteread", "unreachable", "giving up"),
         default="download", description="network failure (download unless the stage says otherwise)"),
    # --- pipeline and CASA specifics (70)
    Rule("size-mitigation", "makeimlist", 70,
         r"Size mitigation (?:error|fail)|No targets were processed|\bmakeimlist\b[^\n]{0,100}" + _ERRWORDS
         + r"|(?:empty|no) (?:clean|imaging) targets?(?: list)?\b|imlist is empty|(?:product|cube) size (?:limit )?(?:exceeded|too large)",
         ("mitigation", "no targets", "makeimlist", "clean target", "imaging target", "imlist", "product size", "cube size"),
         keep="first", description="hif_makeimlist / checkproductsize could not make an imaging list"),
    Rule("findcont", "findcont", 70,
         r"No continuum (?:frequency )?(?:ranges|channels|regions) (?:were )?(?:found|detected)|\bfindcont\w*\b[^\n]{0,100}" + _ERRWORDS
         + r"|(?:could not|unable to|cannot|failed to) (?:find|determine|identify) (?:the )?continuum|continuum (?:finding|detection|identification) fail",
         ("continuum", "findcont"), keep="first", description="hif_findcont found no continuum / failed"),
    Rule("uvcontfit", "uvcontfit", 70,
         r"\buvcont(?:fit|sub)\w*\b[^\n]{0,160}(?:" + _ERRWORDS[3:-1] + r"|invalid|no match)"
         r"|\b(?:fitspw|fitspec|fitorder)\b[^\n]{0,80}(?:error|invalid|no match|cannot|could not|out of range|not valid)"
         r"|continuum (?:subtraction|fit(?:ting)?) (?:fail|error)",
         ("uvcont", "fitspw", "fitspec", "fitorder", "continuum"), keep="first", description="continuum fit/subtraction failed"),
    Rule("imaging-failure", "imaging", 70,
         r"Cleaning failure|\btclean failed|failed to produce an? (?:image|cube|psf)|Cleaning diverged|\bRMS is NaN\b"
         r"|clean(?:ing)? (?:has )?(?:diverged|did not converge)|Exception from hif_tclean|(?:Error|Exception) in making (?:PSF|residual|model|image|primary beam|PB)"
         r"|Error in (?:running )?(?:major|minor) cycle|(?:PSF|psf|beam) (?:fit|fitting|calculation) (?:failed|error)",
         ("cleaning", "tclean failed", "failed to produce", "diverg", "rms is nan", "did not converge", "exception from",
          "in making", "major cycle", "minor cycle", "psf fit", "beam fit", "psf calc", "beam calc"),
         keep="first", description="tclean / hif_makeimages could not make an image"),
    Rule("calibration-failure", "calibration", 70,
         r"scriptForPI\b[^\n]{0,120}" + _ERRWORDS + r"|" + _ERRWORDS + r"[^\n]{0,120}scriptForPI"
         r"|(?:cal(?:ibration)? ?table|caltable|gaintable)s?\b[^\n]{0,120}(?:does not exist|not found|missing|cannot be opened|could not be opened|no such|corrupt)"
         r"|Table \S+\.(?:tbl|cal|G\d*|B\d*|K\d*|bcal|gcal|tsys|wvr|fluxscale|flux\.csv)\b\S* does not exist"
         r"|(?:applycal|calibration restore|restore (?:of )?(?:the )?calibration|restoredata)\b[^\n]{0,120}" + _ERRWORDS
         + r"|failed to apply (?:the )?calibration|no valid (?:calibration )?solutions",
         ("scriptforpi", "caltable", "cal table", "calibration table", "gaintable", "does not exist", "applycal",
          "restore", "failed to apply", "valid solutions", "valid calibration"),
         keep="first", description="calibration restore (scriptForPI / applycal) failed"),
    Rule("casa-version-needed", "calibration", 72,
         r"(?:requires?|required|needs?|expects?)\s+CASA\s+(?:version\s+)?\d+\.\d+|CASA\s+(?:version\s+)?\d+\.\d+[\w.\-]*\s+(?:is\s+)?(?:required|needed)"
         r"|wrong CASA version|CASA version mismatch|(?:this|the) CASA version (?:is )?not supported",
         ("casa version", "requires casa", "require casa", "needs casa", "need casa", "expects casa", "expect casa",
          " required", " needed"), keep="first",
         description="the calibration needs another CASA version than the node's (list it in casa_versions)"),
    Rule("importdata-failure", "importdata", 70,
         r"(?-i:\bASDM\b)[^\n]{0,120}(?:does not exist|not found|conversion error|" + _ERRWORDS[3:-1] + r"|invalid|corrupt)"
         r"|ConversionException|\basdm2MS\b|\bimportasdm\b[^\n]{0,120}" + _ERRWORDS
         + r"|\bimport_?data\b[^\n]{0,120}" + _ERRWORDS + r"|\bBDF\w*\b[^\n]{0,60}(?:missing|not found|error)|the asdm parameter must be",
         ("asdm", "conversionexception", "importasdm", "importdata", "import_data", "bdf"),
         keep="first", description="the ASDM could not be imported"),
    Rule("export-failure", "export", 70,
         r"(?<!stage )\bexport(?:fits|data|_\w+)?\b[^\n]{0,120}(?:" + _ERRWORDS[3:-1] + r"|exists)"
         r"|" + _ERRWORDS + r"[^\n]{0,60}\bexport|\bFITS (?:file|image)\b[^\n]{0,80}(?:exists|cannot|could not|error|fail)"
         r"|(?:failed|unable|could not) to (?:write|create) (?:the )?FITS|\bfitsimage\b[^\n]{0,60}(?:exists|error|must be)",
         ("export", "fits file", "fits image", "fitsimage", " fits"), keep="first", description="FITS export / products packaging failed"),
    # --- generic, category from the stage (60 .. 10)
    Rule("pipeline-task-error", CONTEXT, 60,
         r"(?:Error (?:executing|in) pipeline task:?|Exception (?:from|in|raised by)|Failure in|failed in)\s*(?P<task>h(?:ifa|ifv|if|sd|sdn)?_\w+)",
         ("pipeline task", "exception from", "exception in", "exception raised by", "failure in", "failed in"),
         description="the pipeline names the stage that failed"),
    Rule("pipeline-task-failed", CONTEXT, 55,
         r"\b(?P<task>h(?:ifa|ifv|if|sd|sdn)_\w+)\b[^\n]{0,60}\b(?:failed|failure|error|exception|terminated|aborted)",
         ("hif", "hsd"),
         description="a pipeline stage reported failure"),
    Rule("casa-task-exception", CONTEXT, 55,
         r"Task (?P<task>\w+) raised an exception|error occurred running task (?P<task_b>\w+)|(?P<task_c>\w+) failed to complete",
         ("raised an exception", "running task", "failed to complete"),
         description="a CASA task raised an exception (category of the task)"),
    Rule("killed-sigkill", "memory", 50,
         r"^\s*Killed\s*$|\b\d+ Killed\b|: Killed\b|exit(?:ed)? (?:with )?(?:code|status|value)?[ =:]*137\b|\bsignal 9\b|\bSIGKILL\b",
         ("killed", "137", "signal 9", "sigkill"),
         description="SIGKILL without a stated reason: almost always the OOM killer"),
    Rule("python-exception", CONTEXT, 40,
         r"^(?:[A-Za-z_]\w*\.)*_?[A-Z]\w*(?:Error|Exception)\b(?::|$)|^\s*what\(\):\s+\S|^(?-i:Exception):\s+\S",
         ("error", "exception", "what():"),
         description="the exception at the bottom of a traceback"),
    Rule("crash", CONTEXT, 35,
         r"Segmentation fault|core dumped|\bSIG(?:SEGV|ABRT|BUS)\b|terminate called after throwing|Fatal Python error|double free|stack smashing|\bAborted\b",
         ("segmentation", "core dumped", "sigsegv", "sigabrt", "sigbus", "terminate called", "fatal python", "double free", "stack smashing", "aborted"),
         description="a crash of CASA or Python"),
    Rule("runner-stage-failed", CONTEXT, 35, r"ari-runner:\s*stage (?P<task>\w+) failed", ("ari-runner",),
         description="the runner saw a stage fail (category of the stage)"),
    Rule("severe-line", CONTEXT, 30, r"", (), levels=("SEVERE", "ERROR", "FATAL"),
         description="any other SEVERE line (the last one)"),
    Rule("error-word", CONTEXT, 20,
         r"(?-i:\b(?:ERROR|FATAL|CRITICAL)\b)|^\s*(?:\w+:\s*)?(?:error|fatal)\s*:",
         ("error", "fatal", "critical"), description="an error word in a non-CASA line"),
    Rule("fail-word", CONTEXT, 18,
         r"\b(?:failed|failure|exiting with failure|aborted|aborting)\b", ("fail", "abort"),
         description="a failure word in a non-CASA line (when nothing more specific is found)"),
    Rule("memory-warning", "memory", 25,
         r"memory available[^\n]*(?:close to|less than|below|insufficient)[^\n]*required memory|not enough memory",
         ("memory available", "not enough memory"), description="CASA warned that memory is short and nothing else explains the failure"),
    Rule("pipeline-terminated", CONTEXT, 15,
         r"errorexit|Terminating procedure execution|Pipeline (?:procedure |execution |run )?(?:failed|terminated|aborted)|procedure (?:failed|aborted)",
         ("errorexit", "terminating", "pipeline", "procedure"),
         description="executeppr gave up (errorexit file) without a better reason"),
)

NOISE: tuple[str, ...] = (
    r"Leap second table TAI_UTC seems out-of-date",
    r"outside the range of the IERS table|IERS table|\bIERS\b[^\n]*(?:old|out of date|missing)",
    r"not being maintained by casaconfig|measures data[^\n]*(?:out of date|old)|casaconfig|data_update|measures_update",
    r"libGL error|QStandardPaths|Fontconfig|cannot connect to X server|Could not open display|\bXvfb\b|qt\.qpa",
    r"\b(?:Deprecation|Future|Pending|Runtime|User)Warning\b",
    # A banner stating a version (not "CASA version 4.7.2 required").
    r"^\W*(?:Python|CASA) version\W*[\w.\-]+(?:\s*\([^)]*\))?\W*$|\b(?:Python|CASA) version\W*[\w.\-]+(?:\s*\([^)]*\))?\s*$",
)
_NOISE_RE = re.compile("|".join(f"(?:{p})" for p in NOISE), re.IGNORECASE)
_NOISE_NEEDLES = ("leap second", "iers", "casaconfig", "measures", "data_update", "libgl", "qstandardpaths",
                  "fontconfig", "x server", "display", "xvfb", "qt.qpa", "warning", "version")
_NOISE_NEEDLE_SET = frozenset(_NOISE_NEEDLES)

# A stage (pipeline task, CASA task, runner stage) -> category. First match wins.
STAGE_CATEGORIES: tuple[tuple[str, str], ...] = (
    (r"^hsdn?_|^(?:ts?)?sd\w*$|^importnro$", "total_power"),
    (r"^download|^fetch|^retrieve|^stage_?in$", "download"),
    (r"importdata|^importasdm$|^importuvfits$|^importfits$|^import$", "importdata"),
    (r"makeimlist|checkproductsize|editimlist|imageprecheck", "makeimlist"),
    (r"findcont", "findcont"),
    (r"uvcont", "uvcontfit"),
    (r"makeimages|tclean|^clean$|^image$|^imaging$|selfcal|^hif_mstransform$|^deconvolve$|^sdintimaging$", "imaging"),
    (r"export|^tar$|^products?$", "export"),
    (r"^hifa?_|^hifv_|restore|applycal|gaincal|bandpass|fluxscale|setjy|flagdata|flagmanager|scriptforpi|calibrat|^split$|^mstransform$|^listobs$", "calibration"),
)
_STAGE_CATEGORY_RES = tuple((re.compile(p, re.IGNORECASE), c) for p, c in STAGE_CATEGORIES)

_PIPELINE_TASK = re.compile(r"^(?:hifa|hifv|hif|hsd|hsdn)_\w+$")
_CASA_DATE = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d")
_CASA_LEVELS = frozenset(("INFO", "INFO1", "INFO2", "INFO3", "INFO4", "INFO5", "WARN", "SEVERE", "ERROR",
                          "DEBUG", "DEBUG1", "DEBUG2", "DEBUGGING", "NORMAL", "FATAL"))
_SPACED_CASA = re.compile(r"^\d{4}-\d\d-\d\d[ T][\d:.]+\s+(INFO\d?|WARN|SEVERE|ERROR|DEBUG\d?)\s+(.*)$")
_BANNER = re.compile(r"#{3,}\s*Begin Task:\s*(\w+)")
_STAGE_MARKERS = (
    (re.compile(r"ari-runner:\s*stage\s+(\w+)\s+(?:started|starting|begins?|running)", re.I), "runner"),
    (re.compile(r"^\s*(?:Executing(?: command| task| pipeline task)?:?\s+|Running\s+)?((?:hifa|hifv|hif|hsd|hsdn)_\w+)\s*\("), "call"),
    (re.compile(r"Executing (?:command|task|pipeline task):?\s+((?:hifa|hifv|hif|hsd|hsdn)_\w+)"), "call"),
)
_FRAME_TASK = re.compile(r"/casatasks/(?:private/task_)?(\w+)\.py\"|/pipeline/(hifa|hifv|hif|hsd|hsdn)/tasks/(\w+)/")
_REFINED_BY_TRACEBACK = frozenset(("pipeline-task-error", "pipeline-task-failed", "casa-task-exception",
                                   "runner-stage-failed", "severe-line", "error-word", "fail-word",
                                   "pipeline-terminated"))
# A non-CASA line that says it is only a warning ("WARNING: retry 1 of 3", python logging).
_PLAIN_WARN = re.compile(r"^\W{0,3}(?:\S+\s+){0,3}?\[?(?:WARNING|WARN|Warning)\]?(?::|\s)")
# A line that announces another try (download retries, curl/wget, HTTP clients): the problem it
# names was transient unless a later line says the tries ran out, so it weighs like a warning.
_TRANSIENT = re.compile(r"\btry \d+ ?/ ?\d+\b[^\n]{0,20}\bin \d|\bwill retry\b|\bRetrying\b|\bretry(?:ing)? (?:in|after) \d"
                        r"|\bretry \d+ (?:of|/) \d+", re.I)
_CARETS = re.compile(r"^\s*[\^~]+\s*$")
_DIGITS = re.compile(r"\d+")
# Rules that look at particular numbers (errno 28, exit 137, HTTP 503, signal 9): lines with
# these words are never answered from the cache of quiet WARN shapes.
_DIGIT_SENSITIVE = re.compile(r"errno|signal|http|curl|code|exit|status|137|error \d|\[\d")
QUIET_CACHE = 10000
_STAGE_NAMING = re.compile(r"Error executing pipeline task|raised an exception|error occurred running task|Traceback \(most recent", re.I)
CAUSE_WINDOW = 20
# Lines a block scan must look at: everything but plain CASA INFO lines (banners are found apart).
_CANDIDATE = re.compile(r"\n(?!.{19}\tINFO\t)")
_BANNER_NEEDLE = "Begin Task:"


@dataclass
class Verdict:
    """Why an attempt failed: category, stage, decisive line (1-based), excerpt, evidence.

    ``stage`` is where the decisive line belongs: the pipeline stage (``hif_findcont``), else
    the CASA task (``tclean``), else the runner stage (``download``); None if unknown.
    ``line`` is None when no line was decisive (nothing found, or only the caller's hint).
    ``signature`` is the decisive message masked for grouping; ``evidence`` the strongest
    candidates (line, rule, category, effective priority, message); ``source`` the log
    that decided when several were given.
    """

    category: str
    stage: str | None
    line: int | None
    excerpt: str
    evidence: list[str]
    signature: str
    rule: str | None = None
    priority: int = 0
    message: str = ""
    source: str | None = None


@dataclass
class Group:
    """Attempts that failed with one signature: one cause an operator fixes once."""

    signature: str
    category: str
    count: int
    example_uids: list[str]


@dataclass
class _Candidate:
    rule: Rule
    category: str
    stage: str | None
    line: int
    message: str
    seq: int
    penalty: int
    before: list[str]
    text: str = ""
    after: list[str] = field(default_factory=list)
    cause: "_Candidate | None" = None
    after_needed: int = EXCERPT_AFTER


@functools.lru_cache(maxsize=4096)
def stage_category(stage: str | None) -> str | None:
    """The failure category a stage or task name implies, or None.

    >>> stage_category("hif_findcont"), stage_category("tclean"), stage_category("hsd_baseline")
    ('findcont', 'imaging', 'total_power')
    """
    if not stage:
        return None
    for regex, category in _STAGE_CATEGORY_RES:
        if regex.search(stage):
            return category
    return None


@dataclass(frozen=True)
class _NeedleIndex:
    """Which rules a line can match, from the needles it contains, in one regex pass.

    ``scan`` finds, at every position, the longest needle starting there (a trie-shaped
    regex, so the engine dispatches on one character instead of trying every needle);
    every shorter needle that starts at the same place is a prefix of it, so
    ``implied`` maps each needle to itself and its needle prefixes.
    """

    scan: re.Pattern
    implied: dict[str, tuple[str, ...]]
    rules: dict[str, tuple[Rule, ...]]
    always: tuple[Rule, ...]

    def present(self, low: str) -> set[str]:
        """The needles (rule and noise needles) that occur in the lowercased line."""
        found = self.scan.findall(low)
        return {n for f in set(found) for n in self.implied[f]} if found else set()

    def candidates(self, present: set[str]) -> list[Rule]:
        """Rules with a needle in ``present``, plus the needle-less ones."""
        seen: dict[str, Rule] = {}
        for needle in present:
            for rule in self.rules.get(needle, ()):
                seen[rule.name] = rule
        return list(self.always) + list(seen.values())


def _trie_pattern(words: Iterable[str]) -> str:
    """A regex matching the longest of ``words`` at a position, shaped as a character trie.

    >>> re.findall(_trie_pattern(["mem", "memory", "oom"]), "oom: memory")
    ['oom', 'memory']
    """
    trie: dict = {}
    for word in words:
        node = trie
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}

    def build(node: dict) -> str:
        alts = [re.escape(ch) + build(child) for ch, child in sorted(node.items()) if ch]
        if not alts:
            return ""
        body = alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"
        if "" in node:
            return "(?:" + body + ")?"
        return body

    return build(trie)


@functools.lru_cache(maxsize=16)
def _needle_index(rules: tuple[Rule, ...]) -> _NeedleIndex:
    """The needle index of ``rules`` (rules without needles are always tried); built once per rule set."""
    table: dict[str, list[Rule]] = {}
    always: list[Rule] = []
    for rule in rules:
        if not rule.needles:
            always.append(rule)
        for needle in rule.needles:
            table.setdefault(needle, []).append(rule)
    needles = sorted(set(table) | set(_NOISE_NEEDLES))
    implied = {n: tuple(m for m in needles if n.startswith(m)) for n in needles}
    scan = re.compile("(?=(" + _trie_pattern(needles) + "))") if needles else re.compile(r"(?!)")
    return _NeedleIndex(scan, implied, {k: tuple(v) for k, v in table.items()}, tuple(always))


class _Scanner:
    """The streaming state: fed blocks of whole lines, keeps a bounded set of candidates."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = tuple(rules)
        self.index = _needle_index(tuple(r for r in self.rules if not r.levels))
        self.level_rules = tuple(r for r in self.rules if r.levels)
        self.lines_seen = 0
        self.tail: list[str] = []
        self.pipeline_stage: str | None = None
        self.casa_task: str | None = None
        self.runner_stage: str | None = None
        self.seq = 0
        self.noise_origin: str | None = None
        self.noise_line = -1
        self.first: dict[str, _Candidate] = {}
        self.last: dict[str, _Candidate] = {}
        self.pending: list[_Candidate] = []
        self.prev_severe: _Candidate | None = None
        self.frame_line = -2
        self.quiet: dict[str, None] = {}

    # -- block level -------------------------------------------------------------------
    def feed(self, chunk: str) -> None:
        """Scan a block of whole lines (it ends with a newline unless it is the last)."""
        if not chunk:
            return
        self._fill_pending(chunk)
        prefix = "".join(self.tail)
        buf = "\n" + prefix + chunk
        start = 1 + len(prefix)
        positions = [m.start() + 1 for m in _CANDIDATE.finditer(buf, start - 1)]
        banner = buf.find(_BANNER_NEEDLE, start)
        if banner != -1:
            extra = []
            while banner != -1:
                extra.append(buf.rfind("\n", 0, banner) + 1)
                banner = buf.find(_BANNER_NEEDLE, banner + 1)
            positions = sorted(set(positions).union(extra))
        counted_to, lineno = start, self.lines_seen
        for pos in positions:
            if pos >= len(buf):
                break
            lineno += buf.count("\n", counted_to, pos)
            counted_to = pos
            end = buf.find("\n", pos)
            end = len(buf) if end == -1 else end
            self._line(buf[pos:end].rstrip("\r"), lineno + 1, buf, pos, end)
        lineno += buf.count("\n", counted_to)
        self.lines_seen = lineno + (0 if chunk.endswith("\n") else 1)
        self.tail = (self.tail + _last_lines(chunk, EXCERPT_BEFORE))[-EXCERPT_BEFORE:]

    def _fill_pending(self, chunk: str) -> None:
        """Give candidates whose excerpt ran past the last block their following lines."""
        if not self.pending:
            return
        parts = chunk.split("\n", EXCERPT_AFTER)
        head = parts[:-1] + ([parts[-1]] if parts[-1] and len(parts) <= EXCERPT_AFTER else [])
        for cand in self.pending:
            take = head[: cand.after_needed]
            cand.after.extend(_clip(x) for x in take)
            cand.after_needed -= len(take)
        self.pending = [c for c in self.pending if c.after_needed > 0]

    # -- line level --------------------------------------------------------------------
    def _line(self, text: str, lineno: int, buf: str, pos: int, end: int) -> None:
        """Update stage context from one line and record the rules it matches."""
        level, origin, message = _split_casa(text)
        if origin is not None and origin.endswith("+"):
            if self.noise_line == lineno - 1 and self.noise_origin == origin[:-1]:
                self.noise_line = lineno
                return
        if lineno == self.frame_line + 1 and message[:1].isspace() or _CARETS.match(message):
            return  # the source line under a traceback frame, or its ^^^^ markers: code, not a message
        if self._stage_event(message, lineno):
            return
        key = None
        if level == "WARN" or level == "DEBUG":
            key = _DIGITS.sub("0", text[20:])
            if key in self.quiet:
                return
        low = message.lower()
        present = self.index.present(low)
        if present and not _NOISE_NEEDLE_SET.isdisjoint(present) and _NOISE_RE.search(message):
            self.noise_origin = (origin or "").rstrip("+")
            self.noise_line = lineno
            return
        if level is not None and level.startswith("INFO"):
            return
        origin_task = _origin_task(origin)
        matched: set[str] = set()
        if key is not None and not _DIGIT_SENSITIVE.search(low):
            self._remember_quiet(key)  # undone below if a rule matches
        for rule in self.index.candidates(present):
            m = rule.regex.search(message)
            if m:
                matched.add(rule.name)
                self._record(rule, m, level, origin_task, text, message, lineno, buf, pos, end)
        if matched and key is not None:
            self.quiet.pop(key, None)
        if level in ("SEVERE", "ERROR", "FATAL"):
            for rule in self.level_rules:
                if level in rule.levels and rule.regex.search(message):
                    self._record(rule, None, level, origin_task, text, message, lineno, buf, pos, end)

    def _remember_quiet(self, key: str) -> None:
        """Note a WARN line shape that matched nothing, so its repeats skip the rules (bounded)."""
        if len(self.quiet) >= QUIET_CACHE:
            self.quiet.clear()
        self.quiet[key] = None

    def _stage_event(self, message: str, lineno: int) -> bool:
        """Track stage banners, runner stages and traceback frames; True for a pure banner line."""
        if "Begin Task" in message:
            m = _BANNER.search(message)
            if m:
                self._enter(m.group(1), "banner")
                return True
        if "ari-runner" in message or "_" in message and ("hif" in message or "hsd" in message):
            for regex, kind in _STAGE_MARKERS:
                m = regex.search(message)
                if m:
                    self._enter(m.group(1), kind)
                    return kind != "runner"
        if "File \"" in message:
            m = _FRAME_TASK.search(message)
            if m:
                if m.group(1):
                    self.casa_task = m.group(1)
                else:
                    self.pipeline_stage = f"{m.group(2)}_{m.group(3)}"
            self.frame_line = lineno
            return True
        return False

    def _enter(self, name: str, kind: str) -> None:
        """A new stage or task started; later stages make earlier failures less decisive."""
        if kind == "runner":
            self.runner_stage = name
            self.pipeline_stage = None
            self.casa_task = None
            self.seq += 1
        elif _PIPELINE_TASK.match(name):
            if name != self.pipeline_stage:
                self.seq += 1
            self.pipeline_stage = name
            self.casa_task = None
        else:
            if self.pipeline_stage is None and name != self.casa_task:
                self.seq += 1
            self.casa_task = name

    def _context(self, origin_task: str | None) -> tuple[str | None, str | None]:
        """(stage, category) of the current line from the origin and the tracked banners."""
        names = []
        if origin_task and _PIPELINE_TASK.match(origin_task):
            names.append(origin_task)
        names.append(self.pipeline_stage)
        if origin_task and not _PIPELINE_TASK.match(origin_task):
            names.append(origin_task)
        names += [self.casa_task, self.runner_stage]
        for name in names:
            category = stage_category(name)
            if category:
                return name, category
        tracked = self.pipeline_stage or self.casa_task or self.runner_stage
        return tracked, None

    def _record(self, rule: Rule, m: re.Match | None, level: str | None, origin_task: str | None,
                text: str, message: str, lineno: int, buf: str, pos: int, end: int) -> None:
        """Keep this match if it is the first (in the current stage) or last of its rule."""
        stage, context_category = self._context(origin_task)
        category = rule.category
        if category == FROM_GROUP:
            category = m.group("cat").lower() if m else "unknown"
            category = category if category in CATEGORIES else "unknown"
        elif category == CONTEXT:
            named = _task_group(m)
            if named and not _PIPELINE_TASK.match(named) and stage_category(self.pipeline_stage):
                named = self.pipeline_stage  # a CASA task inside a pipeline stage fails that stage
            category = stage_category(named) or context_category or rule.default
            stage = named or stage
        if stage is None:
            stage = rule.stage
        if level is None:
            warned = _PLAIN_WARN.match(message) is not None
        else:
            warned = level in ("WARN", "INFO", "DEBUG")
        warned = warned or (rule.priority < RESOURCE_PRIORITY and _TRANSIENT.search(message) is not None)
        penalty = WARN_PENALTY if warned else 0
        cand = _Candidate(rule, category, stage, lineno, message.strip(), self.seq, penalty,
                          _lines_before(buf, pos, EXCERPT_BEFORE), text)
        cand.after = _lines_after(buf, end, EXCERPT_AFTER)
        cand.after_needed = EXCERPT_AFTER - len(cand.after)
        if rule.name in _REFINED_BY_TRACEBACK and rule.name != "severe-line":  # no chains of causes
            prev = self.prev_severe
            if prev and prev.seq == self.seq and 0 < lineno - prev.line <= CAUSE_WINDOW and not prev.penalty:
                cand.cause = prev
        if rule.name == "severe-line":
            self.prev_severe = cand
        old_first = self.first.get(rule.name)
        if old_first is None or old_first.seq < self.seq:
            self.first[rule.name] = cand
        self.last[rule.name] = cand
        if cand.after_needed:
            self.pending.append(cand)

    # -- verdict ---------------------------------------------------------------------
    def candidates(self) -> list[tuple[int, int, _Candidate]]:
        """Every kept candidate with its effective priority and tie-break key, best first."""
        seen: dict[int, _Candidate] = {}
        for cand in list(self.first.values()) + list(self.last.values()):
            seen[id(cand)] = cand
        scored = []
        for cand in seen.values():
            eff = cand.rule.priority - cand.penalty
            if cand.rule.priority < RESOURCE_PRIORITY and cand.seq < self.seq:
                eff -= SUPERSEDED_PENALTY
            order = cand.line if cand.rule.keep == "last" else -cand.line
            scored.append((eff, order, cand))
        scored.sort(key=lambda t: (t[0], t[1]), reverse=True)
        return scored

    def verdict(self) -> Verdict:
        """The decisive candidate as a Verdict (category unknown when nothing matched)."""
        scored = self.candidates()
        evidence = [f"line {c.line}: {c.rule.name} -> {c.category} ({eff}): {c.message[:160]}"
                    for eff, _, c in scored[:5]]
        if not scored:
            return Verdict("unknown", self.pipeline_stage or self.casa_task or self.runner_stage, None, "",
                           [], "", None, 0, "")
        eff, _, best = scored[0]
        shown = self._bottom_exception(best) or best
        excerpt = "\n".join(shown.before + [_clip(shown.text)] + shown.after)
        return Verdict(best.category, best.stage, shown.line, excerpt, evidence, signature(shown.message),
                       best.rule.name, eff, shown.message)

    def _bottom_exception(self, best: _Candidate) -> _Candidate | None:
        """What a stage-naming error line stands for: the traceback's last exception below it,
        else the SEVERE line just before it (same stage, within CAUSE_WINDOW lines).

        "Error executing pipeline task hif_x." or CASA 5's "An error occurred running task
        tclean." say where; the line around them says why, and tells causes apart in a signature.
        """
        if best.rule.name not in _REFINED_BY_TRACEBACK:
            return None
        exc = self.last.get("python-exception")
        if exc and exc.line > best.line and exc.seq == best.seq and exc.category in (best.category, "unknown"):
            return exc
        cause = best.cause
        if cause is not None and cause.rule.name == "severe-line" and not _STAGE_NAMING.search(cause.message):
            return cause
        return None


def _split_casa(text: str) -> tuple[str | None, str | None, str]:
    """(level, origin, message) of a CASA logger line; (None, None, text) otherwise."""
    if len(text) > 20 and text[19] == "\t":
        parts = text.split("\t", 3)
        if len(parts) == 4 and parts[1] in _CASA_LEVELS and _CASA_DATE.match(parts[0]):
            return parts[1], parts[2], parts[3]
    elif text[:1].isdigit():
        m = _SPACED_CASA.match(text)
        if m:
            return m.group(1), None, m.group(2)
    return None, None, text


def _origin_task(origin: str | None) -> str | None:
    """The task a CASA origin names first ('tclean::SIImageStore::x' -> 'tclean')."""
    if not origin:
        return None
    head = origin.split("::", 1)[0].strip().rstrip("+")
    if head.startswith("task_"):
        head = head[5:]
    return head if head and head.replace("_", "a").isalnum() else None


def _task_group(m: re.Match | None) -> str | None:
    """The first non-empty group whose name starts with 'task'."""
    if m is None:
        return None
    for name, value in m.groupdict().items():
        if name.startswith("task") and value:
            return value
    return None


def _clip(line: str) -> str:
    """One excerpt line, at most MAX_EXCERPT_LINE characters."""
    line = line.rstrip("\r\n")
    return line if len(line) <= MAX_EXCERPT_LINE else line[: MAX_EXCERPT_LINE - 1] + "…"


def _lines_before(buf: str, pos: int, n: int) -> list[str]:
    """Up to ``n`` lines that end just before ``pos`` (skipping the leading sentinel)."""
    out: list[str] = []
    end = pos - 1
    while len(out) < n and end > 0:
        start = buf.rfind("\n", 0, end) + 1
        out.append(_clip(buf[start:end]))
        end = start - 1
    return out[::-1]


def _lines_after(buf: str, end: int, n: int) -> list[str]:
    """Up to ``n`` whole lines that follow the line ending at ``end``."""
    out: list[str] = []
    pos = end + 1
    while len(out) < n and pos < len(buf):
        nxt = buf.find("\n", pos)
        if nxt == -1:  # blocks end with a newline, so this is the file's unterminated last line
            out.append(_clip(buf[pos:]))
            break
        out.append(_clip(buf[pos:nxt]))
        pos = nxt + 1
    return out


def _last_lines(text: str, n: int) -> list[str]:
    """The last ``n`` newline-terminated lines of ``text``."""
    out: list[str] = []
    end = len(text)
    while len(out) < n and end > 0:
        start = text.rfind("\n", 0, end - 1) + 1
        out.append(text[start:end])
        end = start
    return out[::-1]


def _blocks_from_lines(lines: Iterable[str]) -> Iterator[str]:
    """Lines (with or without newlines) regrouped into blocks of whole lines."""
    batch: list[str] = []
    size = 0
    for line in lines:
        if not line.endswith("\n"):
            line += "\n"
        batch.append(line)
        size += len(line)
        if size >= CHUNK_CHARS:
            yield "".join(batch)
            batch, size = [], 0
    if batch:
        yield "".join(batch)


def classify_blocks(blocks: Iterable[str], rules: Sequence[Rule] = RULES, hint: str | None = None) -> Verdict:
    """Classify text given as blocks of whole lines (the fast path ``classify_file`` uses)."""
    scanner = _Scanner(rules)
    for block in blocks:
        scanner.feed(block)
    return apply_hint(scanner.verdict(), hint)


def classify(lines: Iterable[str], rules: Sequence[Rule] = RULES, hint: str | None = None) -> Verdict:
    """The failure category, stage, decisive line and excerpt of one log.

    ``hint`` is a category the caller already knows (e.g. the runner's ``status.json``);
    it wins over ordinary failures but not over evidence of a root cause in the log.

    >>> v = classify(["2026-11-25 16:12:50\\tSEVERE\\ttclean::x\\tstd::bad_alloc"])
    >>> v.category, v.stage, v.line
    ('memory', 'tclean', 1)
    """
    if isinstance(lines, str):
        lines = lines.splitlines()
    return classify_blocks(_blocks_from_lines(lines), rules, hint)


HINT_PRIORITY = {"memory": 85, "walltime": 85, "disk_full": 85, "node_lost": 85, "download": 85}


def apply_hint(verdict: Verdict, hint: str | None) -> Verdict:
    """``verdict``, or the caller's hinted category when the log has nothing stronger."""
    if not hint:
        return verdict
    if hint not in CATEGORIES:
        raise UserError(f"hint {hint!r}: not a failure category — use one of {', '.join(CATEGORIES)}")
    priority = HINT_PRIORITY.get(hint, 45)
    if verdict.category == hint or (verdict.priority >= priority and verdict.category != "unknown"):
        return verdict
    return Verdict(hint, verdict.stage, None, "", [f"runner status: category={hint} ({priority})"] + verdict.evidence,
                   f"runner status category={hint}", "status-hint", priority, f"category={hint}", verdict.source)


def classify_many(logs: Iterable[tuple[str, Iterable[str]]], rules: Sequence[Rule] = RULES,
                  hint: str | None = None) -> Verdict:
    """The decisive verdict over several logs of one attempt (casa log, stdout, slurm-*.out).

    ``source`` on the result names the log that decided.

    >>> v = classify_many([("casa.log", ["x\\tINFO\\tok"]), ("slurm-1.out", ["slurmstepd: error: *** JOB 1 ON n1 CANCELLED AT 2026-11-25T16:00:00 DUE TO TIME LIMIT ***"])])
    >>> v.category, v.source, v.line
    ('walltime', 'slurm-1.out', 1)
    """
    verdicts = []
    for name, lines in logs:
        verdict = classify(lines, rules)
        verdict.source = name
        verdicts.append(verdict)
    return apply_hint(decisive(verdicts), hint)


def decisive(verdicts: Iterable[Verdict]) -> Verdict:
    """The verdict that explains an attempt best: a known category, then the highest priority.

    Ties keep the earlier verdict; no verdicts at all give ``unknown``.
    """
    best: Verdict | None = None
    for verdict in verdicts:
        if best is None or _stronger(verdict, best):
            best = verdict
    return best if best is not None else Verdict("unknown", None, None, "", [], "")


def _stronger(a: Verdict, b: Verdict) -> bool:
    """True when verdict ``a`` outranks ``b`` (ties keep the earlier log)."""
    if b.category == "unknown" and a.category != "unknown":
        return True
    if a.category == "unknown":
        return False
    return a.priority > b.priority


# --- files -------------------------------------------------------------------------------

def _open_text(path: Path) -> io.TextIOBase:
    """``path`` opened as text (gzip/bz2/xz by magic bytes), or a UserError saying why not."""
    try:
        with open(path, "rb") as raw:
            magic = raw.read(6)
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory — pass the log files inside it") from None
    except FileNotFoundError:
        raise UserError(f"{path}: no such file — check the path") from None
    except PermissionError:
        raise UserError(f"{path}: permission denied — make it readable or run as its owner") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc}) — check the file") from None
    if magic.startswith(b"\x1f\x8b"):
        binary = gzip.open(path, "rb")
    elif magic.startswith(b"BZh"):
        binary = bz2.open(path, "rb")
    elif magic.startswith(b"\xfd7zXZ"):
        binary = lzma.open(path, "rb")
    else:
        binary = open(path, "rb")
    return io.TextIOWrapper(binary, encoding="utf-8", errors="replace")


def _looks_binary(sample: str) -> bool:
    """True when decoded text is not a log: NUL bytes or mostly undecodable/control characters."""
    if "\x00" in sample:
        return True
    if not sample:
        return False
    bad = sum(1 for ch in sample if ch == "\ufffd" or (ord(ch) < 32 and ch not in "\t\n\r\f\v\x1b"))
    return bad > len(sample) * 0.1


def read_blocks(path: str | Path, size: int = CHUNK_CHARS) -> Iterator[str]:
    """The text of ``path`` in blocks of whole lines; UserError if it is unreadable or binary."""
    path = Path(path)
    text = _open_text(path)
    try:
        carry = ""
        first = True
        while True:
            try:
                block = text.read(size)
            except (OSError, EOFError, lzma.LZMAError, zlib.error) as exc:
                raise UserError(f"{path}: cannot read ({exc}) — the file is damaged; re-fetch it") from None
            if first:
                if _looks_binary(block[:8192]):
                    raise UserError(f"{path}: binary file, not a text log — pass the CASA/pipeline/batch log (casa-*.log, *.out)")
                first = False
            if not block:
                break
            block = carry + block
            cut = block.rfind("\n") + 1
            if cut == 0:
                carry = block
                continue
            carry = block[cut:]
            yield block[:cut]
        if carry:
            yield carry
    finally:
        text.close()


def classify_file(path: str | Path, rules: Sequence[Rule] = RULES, hint: str | None = None) -> Verdict:
    """Classify one log file (plain, gzip, bz2 or xz) streaming in blocks.

    Raises UserError naming the file when it cannot be read or is not text.
    """
    verdict = classify_blocks(read_blocks(path), rules, hint)
    verdict.source = str(path)
    return verdict


# --- signatures and groups ------------------------------------------------------------------

_KEEP_NUMBER_AFTER = ("http error ", "http error: ", "errno ", "code ", "status ", "signal ", "curl: (", "error ", "exit ")
_MASKS: tuple[tuple[re.Pattern, str], ...] = (
    (re.compile(r"uid://\w+/\w+/\w+(?:/\w+)*", re.I), "<uid>"),
    (re.compile(r"\buid___\w+?_\w+?_\w+(?:\.[\w-]+)*", re.I), "<uid>"),
    (re.compile(r"\b\d{4}-\d\d-\d\d(?:[T ]\d\d:\d\d(?::\d\d(?:[.,]\d+)?)?)?Z?"), "<date>"),
    (re.compile(r"\b(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)\w* +(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)\w* +\d+ +[\d:]+(?: +[A-Z]{3,4})?(?: +\d{4})?"), "<date>"),
    (re.compile(r"\b\d\d:\d\d:\d\d(?:\.\d+)?\b"), "<time>"),
    (re.compile(r"(?:[A-Za-z]:)?(?:~|\.{1,2})?(?:/[^\s'\"()\[\],;:]+)+/?|\b[\w.+-]+(?:/[\w.+-]+)+/?"), "<path>"),
    (re.compile(r"\b(?=[\w.+-]*\d)[\w+-]+(?:\.[\w+-]+){2,}\b"), "<name>"),  # data names, not python.dotted.names
    (re.compile(r"\b[\w+-]+\.(?:ms|tbl|cal|fits|image|pbcor|psf|pb|residual|model|mask|cl|log|txt|xml|tar|tgz|gz|py)\b", re.I), "<name>"),
    (re.compile(r"\b(field|source|target|object)(\s*[=:]\s*|\s+)(?!(?:expression|selection|names?|ids?|intent|list|for|of|in|is)\b)(['\"]?)[^\s,'\";:]+\3(?!:)", re.I), r"\1\2<field>"),
    (re.compile(r"\b0x[0-9a-fA-F]+\b"), "<hex>"),
    (re.compile(r"\b(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{8,}\b"), "<hex>"),
)
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
_SPACES = re.compile(r"\s+")
_NUMBER_LIST = re.compile(r"<n>(?:\s*[,;]\s*<n>)+")  # "spw 25, 27, 29" and "spw 17, 19" group together


def _mask_number(m: re.Match) -> str:
    """'<n>' for a number, except an error/exit/signal code that tells causes apart."""
    before = m.string[max(0, m.start() - 12): m.start()].lower()
    if any(before.endswith(k) for k in _KEEP_NUMBER_AFTER) and len(m.group()) <= 4:
        return m.group()
    return "<n>"


def signature(message: str) -> str:
    """``message`` with uids, dates, paths, names, fields, hex and numbers masked.

    >>> signature("Table /scratch/a/uid___A002_X1_X2.ms.hif_bandpass.tbl does not exist.")
    'Table <path> does not exist.'
    >>> signature("urllib.error.HTTPError: HTTP Error 503: retry 3 of uid://A001/X1296/X1d3")
    'urllib.error.HTTPError: HTTP Error 503: retry <n> of <uid>'
    """
    text = message.strip()
    for regex, repl in _MASKS:
        text = regex.sub(repl, text)
    text = _NUMBER.sub(_mask_number, text)
    text = _NUMBER_LIST.sub("<n,...>", text)
    return _SPACES.sub(" ", text).strip()[:240]


def group(items: Iterable[tuple[str, Verdict]], examples: int = 3) -> list[Group]:
    """Attempts ``(uid, verdict)`` grouped by (signature, category), biggest group first.

    >>> v = classify(["MemoryError: Unable to allocate 4.41 TiB"])
    >>> [(g.category, g.count) for g in group([("uid://A/X/1", v), ("uid://A/X/2", v)])]
    [('memory', 2)]
    """
    table: dict[tuple[str, str], Group] = {}
    for uid, verdict in items:
        key = (verdict.signature, verdict.category)
        g = table.setdefault(key, Group(verdict.signature, verdict.category, 0, []))
        g.count += 1
        if len(g.example_uids) < examples and uid not in g.example_uids:
            g.example_uids.append(uid)
    return sorted(table.values(), key=lambda g: (-g.count, g.category, g.signature))


_UID_IN_PATH = re.compile(r"uid(?:___|://|_)(\w+?)[_/](\w+?)[_/](\w+)", re.I)


def uid_from_path(path: str) -> str | None:
    """The MOUS uid a log's path names (``.../uid___A001_X1_X2/...`` -> ``uid://A001/X1/X2``)."""
    m = _UID_IN_PATH.search(path)
    return f"uid://{m.group(1)}/{m.group(2)}/{m.group(3)}" if m else None


def rule_rows(rules: Sequence[Rule] = RULES) -> list[dict]:
    """The rule table as rows (name, category, priority, stage, pattern, description)."""
    return [{"name": r.name, "category": r.category, "priority": r.priority, "stage": r.stage,
             "levels": list(r.levels), "pattern": r.pattern, "description": r.description} for r in rules]
