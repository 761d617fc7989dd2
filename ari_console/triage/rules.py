"""The rule table: failure categories, the rules that name them, noise, stage -> category.

Pure data plus two lookups; no I/O. Adding a failure signature is one ``Rule(...)`` row with a
corpus log under ``tests/data/triage/<category>/`` (``tests/test_triage.py`` checks both).
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from typing import Sequence

CATEGORIES = (
    "download", "calibration", "importdata", "makeimlist", "findcont", "uvcontfit", "imaging",
    "export", "memory", "walltime", "disk_full", "total_power", "node_lost", "unknown",
)
CONTEXT = "@context"  # category: the stage's category (from a `task` group, else the line's stage)
FROM_GROUP = "@cat"  # category: the text of the `cat` group (runner's category=...)
RESOURCE_PRIORITY = 90  # rules at or above this are never demoted by a later stage
WARN_PENALTY = 40
SUPERSEDED_PENALTY = 30


@dataclass(frozen=True)
class Rule:
    """One failure signature: ``pattern`` (case-insensitive regex) -> ``category``.

    ``needles`` are lowercase substrings, one of which must occur in the message before the
    regex runs (a cheap prefilter); empty means always try. ``levels`` restricts the rule
    to CASA lines of those levels. ``keep`` says which occurrence is decisive when a rule
    fires repeatedly in the same stage. ``default`` is the category of a ``@context`` rule
    when the stage is unknown. ``corpus`` is the log under ``tests/data/triage/`` that shows
    the message (the tests check the rule matches it); ``fix`` overrides the category's fix.
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
    corpus: str = ""
    fix: str = ""

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
         keep="first", description="write failed: the file system is full",
         corpus="disk_full/untar_no_space_left.log"),
    Rule("disk-quota", "disk_full", 100, r"Disk quota exceeded|\bEDQUOT\b|quota exceeded|over (?:disk )?quota",
         ("quota", "edquot"), keep="first", description="user or group disk quota exceeded",
         corpus="disk_full/untar_disk_quota_exceeded.log"),
    Rule("disk-full-words", "disk_full", 100,
         r"\b(?:disk|file ?system|partition|volume|scratch|device)\b[^\n]{0,40}\bis full\b|\b(?:disk|filesystem) full\b"
         r"|(?:not enough|insufficient) (?:free )?(?:disk|scratch|storage) space|out of (?:disk|storage) space"
         r"|Wrote only \d+ of \d+ bytes|short write",
         ("is full", "disk full", "filesystem full", "space", "wrote only", "short write"), keep="first", description="disk full, in words",
         corpus="disk_full/scriptforpi_not_enough_disk_space.log"),
    Rule("casacore-write-error", "disk_full", 100,
         r"\bwrite error\b[^\n]{0,300}?:\s*(?:Success|File too large)\b|\b(?:FiledesIO|FilebufIO|RegularFileIO|LargeFiledesIO|BucketFile|ByteIO)\b"
         r"[^\n]{0,300}?(?:write|writing)[^\n]{0,300}?:\s*(?:Success|No space left|Disk quota|File too large)",
         ("write error", "filedesio", "filebufio", "regularfileio", "bucketfile", "byteio"), keep="first",
         description="casacore could not write a table file (FiledesIO write error ...: Success is a short write on a full disk)",
         corpus="disk_full/casa6_split_tiny_tmpfs.log"),
    Rule("scriptforpi-disk-space", "disk_full", 100, r"ERROR: (?:probably )?not enough free disk space", ("not enough free disk",),
         keep="first", description="scriptForPI found too little free disk space for the restore",
         corpus="disk_full/scriptforpi_not_enough_disk_space.log"),
    Rule("runner-refused-scratch", "disk_full", 100,
         r"ari-runner:\s*refused:[^\n]*\bfree\b", ("ari-runner",),
         keep="first", description="the runner refused to start a stage for lack of scratch space",
         corpus="disk_full/runner_refused_scratch.log"),
    # --- memory (95)
    Rule("python-memoryerror", "memory", 95, r"\b(?:\w+\.)*_?\w*MemoryError\b", ("memoryerror",),
         keep="first", description="Python MemoryError (numpy's _ArrayMemoryError too)",
         corpus="memory/pipeline_makeimlist_memoryerror.log"),
    Rule("bad-alloc", "memory", 95, r"\bbad_alloc\b|bad allocation", ("bad_alloc", "bad alloc"),
         keep="first", description="C++ std::bad_alloc from casacore/CASA",
         corpus="memory/casa6_tclean_huge_imsize_address_space.log"),
    Rule("cannot-allocate", "memory", 95,
         r"Cannot allocate memory|\bENOMEM\b|Unable to allocate [\d.]+\s*[KMGTPE]i?B"
         r"|(?:out of|insufficient|not enough) (?:virtual |physical |available )?memory\b(?! ranges)"
         r"|memory allocation (?:fail|error)|\b(?:cannot|can ?not|can't|unable to|failed to|could not|couldn't) allocate\b",
         ("allocat", "memory", "enomem"), keep="first", description="an allocation failed",
         corpus="memory/casa6_numpy_memoryerror_in_script.log"),
    Rule("oom-kill", "memory", 95,
         r"oom[-_ ]?kill|invoked oom|Out of memory: Kill|Killed process \d+|Memory cgroup out of memory",
         ("oom", "out of memory", "killed process"), keep="first", description="the kernel's OOM killer",
         corpus="memory/slurm_oom_kill.log"),
    Rule("batch-memory-limit", "memory", 95,
         r"Exceeded (?:job|step) memory limit|(?-i:\bOUT_OF_MEMORY\b|\bOOM\b)|killed:?\s*(?:v?mem|pmem|memory)\b"
         r"|\b(?:v?mem|pmem|rss)\s+[\d.]+\s*\w*\s+exceeded (?:the )?limit|memory (?:limit|budget)\b[^\n]{0,40}(?:exceeded|reached)"
         r"|exceeded (?:its |the )?(?:requested |allowed |virtual )?memory|memory budget [\d.]+\s*\w+ exceeded|over (?:its |the )?memory limit"
         r"|\bTERM_MEMLIMIT\b|\bRSS limit\b[^\n]{0,40}exceeded",
         ("memory", "mem ", "oom", "killed", "term_memlimit", "rss limit"), keep="first", description="Slurm/PBS/runner memory limit",
         corpus="memory/pbs_mem_exceeded.log"),
    Rule("sacct-state-memory", "memory", 95, r"(?-i:\bOUT_OF_ME(?:MORY\b|M?\+))", ("out_of_me",), keep="first",
         description="Slurm job state OUT_OF_MEMORY (sacct prints OUT_OF_ME+ in its default width)",
         corpus="memory/sacct_out_of_me_truncated.log"),
    Rule("pbs-memory-limit", "memory", 95,
         r"exceeded (?:resource )?[pv]?mem\b(?: limit)?|\bExit_status\s*=\s*-2[67]\b|\bJOB_EXEC_KILL_V?MEM\b",
         ("exceeded", "exit_status", "job_exec_kill"), keep="first",
         description="PBS/Torque killed the job over its mem/vmem limit (Exit_status -27 mem, -26 vmem)",
         corpus="memory/pbs_qstat_exit_status_mem.log"),
    # --- walltime / node_lost (90)
    Rule("time-limit", "walltime", 90,
         r"DUE TO TIME LIMIT|(?-i:\bTIMEOUT\b)|time limit (?:exceeded|reached)|job (?:exceeded|reached) (?:its )?time|\bTERM_RUNLIMIT\b|run ?time limit|reaching [^\n]{0,20}run ?limit",
         ("time limit", "timeout", "exceeded its time", "reached its time", "term_runlimit", "run limit", "runlimit"),
         keep="first", description="Slurm time limit (or sacct state TIMEOUT)",
         corpus="walltime/sacct_timeout.log"),
    Rule("walltime-exceeded", "walltime", 90,
         r"wall ?(?:time|clock)\b[^\n]{0,40}\bexceed|exceeded\b[^\n]{0,30}\bwall ?(?:time|clock)|killed:?\s*wall ?time|\bh_rt\b[^\n]{0,40}exceed"
         r"|CPU time limit exceeded|\bSIGXCPU\b",
         ("walltime", "wall time", "wallclock", "wall clock", "cpu time", "sigxcpu"),
         keep="first", description="PBS/runner walltime, CPU time limit",
         corpus="walltime/pbs_walltime_exceeded.log"),
    Rule("batch-state-walltime", "walltime", 90,
         r"(?-i:\bDEADLINE\b)(?:\s+\d+:\d+|\|)|DUE TO DEADLINE|\bExit_status\s*=\s*-2[89]\b|\bJOB_EXEC_KILL_(?:WALLTIME|CPUT)\b|exceeded (?:resource )?(?:the )?cput\b",
         ("deadline", "exit_status", "job_exec_kill", "cput"), keep="first",
         description="Slurm state DEADLINE, PBS Exit_status -29 (walltime) / -28 (cput)",
         corpus="walltime/pbs_qstat_exit_status_walltime.log"),
    Rule("mpi-daemon-lost", "node_lost", 90,
         r"\b(?:ORTE|PRTE|PMIx|The system) has lost communication with (?:a remote|its|the following) daemon"
         r"|(?:ORTE|PRTE) daemon has unexpectedly failed|(?:ORTE|PRTE) was unable to reliably start one or more daemons"
         r"|\bnode_lost\b|(?-i:\bBOOT_FAIL\b)|unable to complete a TCP connection to another process"
         r"|does not know how to route a message to the specified daemon|A daemon \(pid \d+\) died unexpectedly",
         ("lost communication", "unexpectedly failed", "reliably start", "node_lost", "boot_fail", "tcp connection",
          "route a message", "died unexpectedly"),
         keep="first", description="Open MPI / PRRTE lost a daemon or a node (mpicasa); Slurm BOOT_FAIL",
         corpus="node_lost/mpicasa_orte_lost_daemon.log"),
    Rule("node-failure", "node_lost", 90,
         r"DUE TO NODE FAIL|(?-i:\bNODE_FAIL)|node fail(?:ure|ed)|(?:sister|mother superior|MOM)\b[^\n]{0,80}\b(?:EOF|lost|down|died|unreachable)"
         r"|\bnodes?\b[^\n]{0,40}\b(?:went down|is down|down|unreachable|not responding|lost|rebooted|crashed|powered off)\b|failure of node|setting DOWN"
         r"|requested job (?:terminate|die)|lost (?:contact|connection) (?:with|to) (?:the )?(?:node|host)|ari-runner:\s*(?:node lost|heartbeat lost)"
         r"|ssh: connect to host \S+ port \d+: (?:Connection timed out|No route to host|Host is down)|Connection to \S+ closed by remote host",
         ("node", "sister", "mother superior", "mom", "requested job", "lost", "heartbeat", "setting down", "ssh:",
          "closed by remote host"),
         keep="first", description="the node died or left the cluster",
         corpus="node_lost/pbs_sister_eof.log"),
    # --- total_power (80)
    Rule("total-power", "total_power", 80,
         r"total[- ]power|single[- ]dish|\bTP\b (?:array|data|MOUS|data ?set)|auto-?correlations? only|no cross-?correlation"
         r"|scriptForSDCalibration|\bSDcalatmcorr\b|\bhsdn?_calimage\b|\bjyperk\w*\.csv",
         ("total power", "total-power", "single dish", "single-dish", "tp ", "autocorr", "auto-corr", "cross-corr", "crosscorr",
          "scriptforsdcal", "sdcalatmcorr", "hsd_calimage", "hsdn_calimage", "jyperk"),
         keep="first", description="total-power data set (needs the hsd recipe)",
         corpus="total_power/interferometric_recipe_on_tp_data.log"),
    # --- runner-declared categories
    Rule("runner-category-resource", FROM_GROUP, 85,
         r"ari-runner:[^\n]*\bcategory=(?P<cat>memory|walltime|disk_full|node_lost|download)\b", ("ari-runner",),
         description="the runner enforced or saw a resource failure",
         corpus="download/runner_http_503.log"),
    Rule("runner-category", FROM_GROUP, 50, r"ari-runner:[^\n]*\bcategory=(?P<cat>\w+)", ("ari-runner",),
         description="the runner's own category for a failed stage",
         corpus="calibration/runner_transient_download_error_then_missing_caltable.log"),
    # --- download (75)
    Rule("http-error", "download", 75,
         r"HTTP ?Error:?\s*[45]\d\d|HTTP/\d(?:\.\d)?\"?\s+[45]\d\d|\b[45]\d\d:? (?:Service Unavailable|Not Found|Forbidden|Internal Server Error|Bad Gateway|Gateway Time-?out|Unauthorized|Too Many Requests)"
         r"|urllib\.error\.\w+|requests\.exceptions\.\w+|\bHTTPError\b|\bURLError\b",
         ("http", "urlerror", "requests.exceptions", "service unavailable", "not found", "gateway"),
         stage="download", keep="first", description="HTTP error from the archive",
         corpus="calibration/runner_transient_download_error_then_missing_caltable.log"),
    Rule("checksum-mismatch", "download", 75,
         r"checksums?\b[^\n]{0,60}(?:mismatch|error|fail|differ|not match|wrong|bad)|(?:md5|sha\d*|adler32|crc32?)(?: ?sum)?\b[^\n]{0,60}(?:mismatch|differ|not match|fail)"
         r"|^\S+: FAILED(?: open or read)?$"
         r"|(?:tar|gzip|unzip): [^\n]*(?:unexpected (?:end|eof)|not in gzip|invalid|not recoverable|short read)"
         r"|corrupt(?:ed)? (?:download|tarball|archive file)|(?:truncated|incomplete) (?:download|tarball)",
         ("checksum", "md5", "sha", "adler", "crc", "tar:", "gzip:", "unzip:", "corrupt", "truncated", "incomplete", ": failed"),
         stage="download", keep="first", description="downloaded file is corrupt",
         corpus="download/wget_md5_mismatch.log"),
    Rule("archive-error-page", "download", 75,
         r"<title>[^<]{0,40}\b[45]\d\d\b|<h1>[^<]{0,40}\b[45]\d\d\b|\b[45]\d\d (?:Client|Server) Error\b"
         r"|tar: This does not look like a tar archive|\bis (?:an )?HTML(?: document| page)?,? not\b|HTML (?:error )?page instead of",
         ("<title>", "<h1>", "client error", "server error", "tar: this does not look", "html"), stage="download", keep="first",
         description="the archive answered with an HTTP error (an HTML page saved where data was expected)",
         corpus="download/archive_html_error_page_saved_as_tarball.log"),
    Rule("archive-access", "download", 75,
         r"\bBad query\b|RemoteServiceError|\bLoginError\b|(?:authentication|login) (?:is )?(?:required|failed)"
         r"|\bproprietary\b[^\n]{0,80}(?:log ?in|authori[sz]|not (?:public|allowed|accessible)|access)|anonymous cannot access",
         ("bad query", "remoteserviceerror", "loginerror", "authentication", "login", "proprietary", "anonymous"),
         stage="download", keep="first", description="the archive refused the request (proprietary data, not logged in, bad query)",
         corpus="download/archive_403_anonymous.log"),
    Rule("download-failed", "download", 75,
         r"curl: \(\d+\)|\bwget\b[^\n]*(?:error|fail)|\bERROR [45]\d\d: |(?:failed|unable|could not) to (?:download|retrieve|fetch)"
         r"|(?:could not|cannot|unable to|failed to) be (?:downloaded|retrieved|fetched)|(?:status|response) code:? [45]\d\d"
         r"|\barchive\b[^\n]{0,60}\b(?:fail\w*|error|unavailable|not available|timed out)"
         r"|(?<!stage )download\w*\b[^\n]{0,60}(?:fail|error|incomplete|abort|timed out)|(?:request handler|rh\.alma|almascience)[^\n]{0,80}(?:error|fail|refused|timed out)",
         ("curl", "wget", "error 4", "error 5", "download", "retriev", "fetch", "request handler", "rh.alma", "almascience",
          "status code", "response code", "archive"),
         stage="download", keep="first", description="download tool reported a failure",
         corpus="download/curl_operation_timed_out.log"),
    Rule("network-error", CONTEXT, 45,
         r"Connection (?:refused|reset|timed out|aborted)|Read timed out|Temporary failure in name resolution|Name or service not known"
         r"|Could not resolve host|\bSSL(?:Error|: )|RemoteDisconnected|IncompleteRead|ConnectionResetError|ConnectionRefusedError|Network is unreachable"
         r"|Remote end closed connection|closed the connection|connection (?:was )?(?:closed|dropped|lost)|giving up after \d+ (?:attempts|retries|tries)"
         r"|Max retries exceeded with url",
         ("connection", "timed out", "name resolution", "name or service", "resolve host", "ssl", "remotedisconnected",
          "incompleteread", "unreachable", "giving up", "max retries"),
         default="download", description="network failure (download unless the stage says otherwise)",
         corpus="download/runner_http_503.log"),
    # --- pipeline and CASA specifics (70)
    Rule("size-mitigation", "makeimlist", 70,
         r"Size mitigation (?:error|fail)|No targets were processed|\bmakeimlist\b[^\n]{0,100}" + _ERRWORDS
         + r"|(?:empty|no) (?:clean|imaging) targets?(?: list)?\b|imlist is empty|(?:product|cube) size (?:limit )?(?:exceeded|too large)",
         ("mitigation", "no targets", "makeimlist", "clean target", "imaging target", "imlist", "product size", "cube size"),
         keep="first", description="hif_makeimlist / checkproductsize could not make an imaging list",
         corpus="makeimlist/pipeline_size_mitigation_error.log"),
    Rule("findcont", "findcont", 70,
         r"No continuum (?:frequency )?(?:ranges|channels|regions) (?:were )?(?:found|detected)|\bfindcont\w*\b[^\n]{0,100}" + _ERRWORDS
         + r"|(?:could not|unable to|cannot|failed to) (?:find|determine|identify) (?:the )?continuum|continuum (?:finding|detection|identification) fail",
         ("continuum", "findcont"), keep="first", description="hif_findcont found no continuum / failed",
         corpus="findcont/pipeline_no_continuum_ranges.log"),
    Rule("uvcontfit", "uvcontfit", 70,
         r"\buvcont(?:fit|sub)\w*\b[^\n]{0,160}(?:" + _ERRWORDS[3:-1] + r"|invalid|no match)"
         r"|\b(?:fitspw|fitspec|fitorder)\b[^\n]{0,80}(?:error|invalid|no match|cannot|could not|out of range|not valid)"
         r"|continuum (?:subtraction|fit(?:ting)?) (?:fail|error)",
         ("uvcont", "fitspw", "fitspec", "fitorder", "continuum"), keep="first", description="continuum fit/subtraction failed",
         corpus="uvcontfit/casa6_uvcontsub_impossible_fitspec_after_caught_tclean_error.log"),
    Rule("imaging-failure", "imaging", 70,
         r"Cleaning failure|\btclean failed|failed to produce an? (?:image|cube|psf)|Cleaning diverged|\bRMS is NaN\b"
         r"|clean(?:ing)? (?:has )?(?:diverged|did not converge)|Exception from hif_tclean|(?:Error|Exception) in making (?:PSF|residual|model|image|primary beam|PB)"
         r"|Error in (?:running )?(?:major|minor) cycle|(?:PSF|psf|beam) (?:fit|fitting|calculation) (?:failed|error)",
         ("cleaning", "tclean failed", "failed to produce", "diverg", "rms is nan", "did not converge", "exception from",
          "in making", "major cycle", "minor cycle", "psf fit", "beam fit", "psf calc", "beam calc"),
         keep="first", description="tclean / hif_makeimages could not make an image",
         corpus="imaging/casa6_tclean_readonly_dir.log"),
    Rule("calibration-failure", "calibration", 70,
         r"scriptForPI\b[^\n]{0,120}" + _ERRWORDS + r"|" + _ERRWORDS + r"[^\n]{0,120}scriptForPI"
         r"|(?:cal(?:ibration)? ?table|caltable|gaintable)s?\b[^\n]{0,120}(?:does not exist|not found|missing|cannot be opened|could not be opened|no such|corrupt)"
         r"|Table \S+\.(?:tbl|cal|G\d*|B\d*|K\d*|bcal|gcal|tsys|wvr|fluxscale|flux\.csv)\b\S* does not exist"
         r"|(?:applycal|calibration restore|restore (?:of )?(?:the )?calibration|restoredata)\b[^\n]{0,120}" + _ERRWORDS
         + r"|failed to apply (?:the )?calibration|no valid (?:calibration )?solutions",
         ("scriptforpi", "caltable", "cal table", "calibration table", "gaintable", "does not exist", "applycal",
          "restore", "failed to apply", "valid solutions", "valid calibration"),
         keep="first", description="calibration restore (scriptForPI / applycal) failed",
         corpus="calibration/casa6_applycal_missing_caltable.log"),
    Rule("casa-version-needed", "calibration", 72,
         r"(?:requires?|required|needs?|expects?)\s+CASA\s+(?:version\s+)?\d+\.\d+|CASA\s+(?:version\s+)?\d+\.\d+[\w.\-]*\s+(?:is\s+)?(?:required|needed)"
         r"|wrong CASA version|CASA version mismatch|(?:this|the) CASA version (?:is )?not supported",
         ("casa version", "requires casa", "require casa", "needs casa", "need casa", "expects casa", "expect casa",
          " required", " needed"), keep="first",
         description="the calibration needs another CASA version than the node's (list it in casa_versions)",
         corpus="calibration/scriptforpi_needs_another_casa_version.log"),
    Rule("importdata-failure", "importdata", 70,
         r"(?-i:\bASDM\b)[^\n]{0,120}(?:does not exist|not found|conversion error|" + _ERRWORDS[3:-1] + r"|invalid|corrupt)"
         r"|ConversionException|\basdm2MS\b|\bimportasdm\b[^\n]{0,120}" + _ERRWORDS
         + r"|\bimport_?data\b[^\n]{0,120}" + _ERRWORDS + r"|\bBDF\w*\b[^\n]{0,60}(?:missing|not found|error)|the asdm parameter must be",
         ("asdm", "conversionexception", "importasdm", "importdata", "import_data", "bdf"),
         keep="first", description="the ASDM could not be imported",
         corpus="importdata/casa6_importasdm_corrupt_asdm.log"),
    Rule("restore-asdm-missing", "importdata", 72,
         r"ERROR: (?:cannot find raw/\S+|No ASDM found|directory \"?raw\"? not present|the following ASDMs have calibration information but are absent)"
         r"|No such file or directory:? '?[^'\n]*(?:\.ms|\.asdm(?:\.sdm)?|uid___\w+)/\w+\.xml\b",
         ("error: cannot find raw", "error: no asdm", "not present", "are absent", "no such file"), keep="first",
         description="the restore script found no ASDM where it expects one (raw/ empty, Source.xml missing)",
         corpus="real/logs/kb_scriptforpi_sourcexml_missing.log"),
    Rule("scriptforpi-abort", "calibration", 70,
         r"ERROR: (?:Pipeline not available|No calibration script found|Cannot find directory|non-unique|Nothing to process"
         r"|Please start this script|cannot find calibrated/)",
         ("error: pipeline not available", "error: no calibration", "error: cannot find directory", "error: non-unique",
          "error: nothing to process", "error: please start", "error: cannot find calibrated"),
         keep="first", description="scriptForPI stopped before calibrating (wrong directory, no calibration script, no pipeline)",
         corpus="calibration/scriptforpi_pipeline_not_available.log"),
    Rule("export-failure", "export", 70,
         r"(?<!stage )\bexport(?:fits|data|_\w+)?\b[^\n]{0,120}(?:" + _ERRWORDS[3:-1] + r"|exists)"
         r"|" + _ERRWORDS + r"[^\n]{0,60}\bexport|\bFITS (?:file|image)\b[^\n]{0,80}(?:exists|cannot|could not|error|fail)"
         r"|(?:failed|unable|could not) to (?:write|create) (?:the )?FITS|\bfitsimage\b[^\n]{0,60}(?:exists|error|must be)",
         ("export", "fits file", "fits image", "fitsimage", " fits"), keep="first", description="FITS export / products packaging failed",
         corpus="export/casa6_exportfits_existing_file.log"),
    # --- generic, category from the stage (60 .. 10)
    Rule("pipeline-task-error", CONTEXT, 60,
         r"(?:Error (?:executing|in) pipeline task:?|Exception (?:from|in|raised by)|Failure in|failed in)\s*(?P<task>h(?:ifa|ifv|if|sd|sdn)?_\w+)",
         ("pipeline task", "exception from", "exception in", "exception raised by", "failure in", "failed in"),
         description="the pipeline names the stage that failed",
         corpus="export/pipeline_exportdata_permission_denied.log"),
    Rule("pipeline-task-failed", CONTEXT, 55,
         r"\b(?P<task>h(?:ifa|ifv|if|sd|sdn)_\w+)\b[^\n]{0,60}\b(?:failed|failure|error|exception|terminated|aborted)",
         ("hif", "hsd"),
         description="a pipeline stage reported failure",
         corpus="imaging/runner_stdout_tclean_failed.log"),
    Rule("casa-task-exception", CONTEXT, 55,
         r"Task (?P<task>\w+) raised an exception|error occurred running task (?P<task_b>\w+)|(?P<task_c>\w+) failed to complete",
         ("raised an exception", "running task", "failed to complete"),
         description="a CASA task raised an exception (category of the task)",
         corpus="calibration/casa6_gaincal_bad_refant_then_applycal.log"),
    Rule("too-many-open-files", CONTEXT, 65, r"Too many open files|\bEMFILE\b|\bENFILE\b|\[Errno 2[34]\]",
         ("too many open files", "emfile", "enfile", "errno 23", "errno 24"), keep="first",
         description="the per-process open-file limit (ulimit -n) was reached (category of the stage)",
         corpus="imaging/casa6_tclean_open_file_limit.log"),
    Rule("mpi-server-failed", CONTEXT, 58,
         r"\b(?:remainder )?rank \d+ failed\b|cube section failed|MPIServer-\d+\b[^\n]{0,200}(?:Exception|Error)|Exception for chan range"
         r"|MPI_ABORT was invoked|server \d+ (?:has )?(?:failed|died|crashed)",
         ("rank", "cube section", "mpiserver", "mpi_abort", "server", "exception for chan"),
         description="an MPI server failed inside a CASA task (mpicasa tclean cube: imaging)",
         corpus="real/logs/kb_tclean_mpi_psf_degridding.log"),
    Rule("casa-cpp-exception", CONTEXT, 50,
         r"Exception Reported:|^Exception(?: \(std\))?:|\b(?:casa6?core|casacore|casa)::\w*(?:Error|Exception)\b|\bAipsError\b"
         r"|^\*\*\* Error \*\*\*",
         ("exception reported", "exception", "aipserror", "casa6core::", "casacore::", "casa::", "*** error ***"), keep="first",
         description="a casacore/CASA C++ exception (AipsError, ArrayError; CASA 4/5's *** Error ***) in a task (category of the task)",
         corpus="real/logs/kb_tclean_mpi_conformance_segfault.log"),
    Rule("killed-sigkill", "memory", 50,
         r"^\s*Killed\s*$|\b\d+ Killed\b|: Killed\b|exit(?:ed)? (?:with )?(?:code|status|value)?[ =:]*137\b|\bsignal 9\b|\bSIGKILL\b",
         ("killed", "137", "signal 9", "sigkill"),
         description="SIGKILL without a stated reason: almost always the OOM killer",
         corpus="memory/runner_memory_budget.log"),
    Rule("python-exception", CONTEXT, 40,
         r"^(?:[A-Za-z_]\w*\.)*_?[A-Z]\w*(?:Error|Exception)\b(?::|$)|^\s*what\(\):\s+\S|^(?-i:Exception):\s+\S",
         ("error", "exception", "what():"),
         description="the exception at the bottom of a traceback",
         corpus="export/casa6_exportfits_missing_image.log"),
    Rule("crash", CONTEXT, 35,
         r"Segmentation fault|core dumped|\bSIG(?:SEGV|ABRT|BUS)\b|terminate called after throwing|Fatal Python error|double free|stack smashing|\bAborted\b",
         ("segmentation", "core dumped", "sigsegv", "sigabrt", "sigbus", "terminate called", "fatal python", "double free", "stack smashing", "aborted"),
         description="a crash of CASA or Python",
         corpus="unknown/segfault_without_context.log"),
    Rule("libc-abort", CONTEXT, 35,
         r"^\*\*\* Error in `|\bmalloc\(\): |\bfree\(\): |corrupted (?:size|double-linked|top size|unsorted)|libc\+\+abi(?:\.dylib)?: terminating"
         r"|\bAbort trap\b|glibc detected",
         ("*** error in", "malloc(): ", "free(): ", "corrupted", "libc++abi", "abort trap", "glibc detected"), keep="first",
         description="glibc heap-corruption abort or libc++abi uncaught exception (a CASA crash)",
         corpus="real/logs/kb_tclean_malloc_corrupted.log"),
    Rule("mpi-ping-timeout", CONTEXT, 33,
         r"Ping status response from server \d+ not received|Setting its status to 'timeout'",
         ("ping status", "setting its status"), default="node_lost", keep="first",
         description="mpicasa stopped hearing from an MPI server (frozen or lost); category of the task, else node_lost",
         corpus="real/logs/kb_tclean_mpi_conformance_segfault.log"),
    Rule("runner-stage-failed", CONTEXT, 35, r"ari-runner:\s*stage (?P<task>\w+) failed", ("ari-runner",),
         description="the runner saw a stage fail (category of the stage)",
         corpus="calibration/runner_transient_download_error_then_missing_caltable.log"),
    Rule("severe-line", CONTEXT, 30, r"", (), levels=("SEVERE", "ERROR", "FATAL"),
         description="any other SEVERE line (the last one)",
         corpus="calibration/casa6_applycal_missing_caltable.log"),
    Rule("error-word", CONTEXT, 20,
         r"(?-i:\b(?:ERROR|FATAL|CRITICAL)\b)|^\s*(?:\w+:\s*)?(?:error|fatal)\s*:",
         ("error", "fatal", "critical"), description="an error word in a non-CASA line",
         corpus="calibration/scriptforpi_missing_gpcal_table.log"),
    Rule("fail-word", CONTEXT, 18,
         r"\b(?:failed|failure|exiting with failure|aborted|aborting)\b", ("fail", "abort"),
         description="a failure word in a non-CASA line (when nothing more specific is found)",
         corpus="calibration/runner_transient_download_error_then_missing_caltable.log"),
    Rule("memory-warning", "memory", 25,
         r"memory available[^\n]*(?:close to|less than|below|insufficient)[^\n]*required memory|not enough memory",
         ("memory available", "not enough memory"), description="CASA warned that memory is short and nothing else explains the failure",
         corpus="real/logs/kb_tclean_subcube_memory_warn.log"),
    Rule("batch-cancelled", "unknown", 22,
         r"(?-i:\bCANCELLED\b\+?)(?: by \d+)?|(?-i:\bPREEMPTED\b)|DUE TO PREEMPTION|job deleted by|\bqdel\b|Job deleted",
         ("cancelled", "preempt", "deleted", "qdel"), keep="first",
         description="the batch system cancelled or preempted the job (no failure category: see who cancelled it)",
         corpus="unknown/sacct_cancelled_by_user.log"),
    Rule("warn-line", "unknown", 5, r"", (), levels=("WARN",), keep="last",
         description="the most severe line when nothing else matched: the last CASA WARN line",
         corpus="unknown/casa_log_stops_without_error.log"),
    Rule("warning-word", "unknown", 4, r"^\W{0,3}(?:\S+\s+){0,3}?\[?(?-i:WARNING|WARN|Warning)\]?(?::|\s)", ("warn",),
         description="the most severe line when nothing else matched: a warning in a non-CASA line",
         corpus="download/runner_http_503.log"),
    Rule("pipeline-terminated", CONTEXT, 15,
         r"errorexit|Terminating procedure execution|Pipeline (?:procedure |execution |run )?(?:failed|terminated|aborted)|procedure (?:failed|aborted)",
         ("errorexit", "terminating", "pipeline", "procedure"),
         description="executeppr gave up (errorexit file) without a better reason",
         corpus="makeimlist/executeppr_makeimlist_indexerror.log"),
)

_RULES_BY_NAME = {rule.name: rule for rule in RULES}

NOISE: tuple[str, ...] = (
    r"Leap second table TAI_UTC seems out-of-date",
    r"outside the range of the IERS table|IERS table|\bIERS\b[^\n]*(?:old|out of date|missing)",
    r"not being maintained by casaconfig|measures data[^\n]*(?:out of date|old)|casaconfig|data_update|measures_update",
    r"libGL error|QStandardPaths|Fontconfig|cannot connect to X server|Could not open display|\bXvfb\b|qt\.qpa",
    r"\b(?:Deprecation|Future|Pending|Runtime|User)Warning\b",
    # A banner stating a version (not "CASA version 4.7.2 required").
    r"^\W*(?:Python|CASA) version\W*[\w.\-]+(?:\s*\([^)]*\))?\W*$|\b(?:Python|CASA) version\W*[\w.\-]+(?:\s*\([^)]*\))?\s*$",
)
NOISE_RE = re.compile("|".join(f"(?:{p})" for p in NOISE), re.IGNORECASE)
NOISE_NEEDLES = ("leap second", "iers", "casaconfig", "measures", "data_update", "libgl", "qstandardpaths",
                 "fontconfig", "x server", "display", "xvfb", "qt.qpa", "warning", "version")

# A stage (pipeline task, CASA task, runner stage) -> category. First match wins.
STAGE_CATEGORIES: tuple[tuple[str, str], ...] = (
    (r"^hsdn?_|^(?:ts?)?sd\w*$|^importnro$", "total_power"),
    (r"^download|^fetch|^retrieve|^stage_?in$", "download"),
    (r"importdata|^importasdm$|^importuvfits$|^importfits$|^import$", "importdata"),
    (r"makeimlist|checkproductsize|editimlist|imageprecheck", "makeimlist"),
    (r"findcont", "findcont"),
    (r"uvcont", "uvcontfit"),
    (r"makeimages|tclean|^clean$|^image$|^imaging$|selfcal|^hif_mstransform$|^deconvolve$|^sdintimaging$"
     r"|^makemask$|^imregrid$|^immath$|^impbcor$|^imsmooth$|^imsubimage$|^imrebin$|^feather$|^widebandpbcor$", "imaging"),
    (r"export|^tar$|^products?$", "export"),
    (r"^hifa?_|^hifv_|restore|applycal|gaincal|bandpass|fluxscale|setjy|flagdata|flagmanager|scriptforpi|calibrat|^split$|^mstransform$|^listobs$", "calibration"),
)
_STAGE_CATEGORY_RES = tuple((re.compile(p, re.IGNORECASE), c) for p, c in STAGE_CATEGORIES)


# What an operator does about a failure of each category (a rule's ``fix`` overrides it).
FIXES: dict[str, str] = {
    "download": "retry later (archive busy or unreachable); for proprietary data log in or wait for the release",
    "calibration": "check the restore: CASA version the calibration needs, calibration tables, scriptForPI options",
    "importdata": "check the raw data: every ASDM of the MOUS downloaded and unpacked where the restore expects it",
    "makeimlist": "check the imaging targets: product size limits and the selected sources/spws",
    "findcont": "give the continuum ranges (cont.dat) by hand, then retry",
    "uvcontfit": "check the continuum ranges (fitspec/fitspw) against the spws, then retry",
    "imaging": "read the tclean error: fix the imaging parameters or mask, or report the CASA bug; then retry",
    "export": "check the products directory: free space, permissions, files left from an earlier attempt",
    "memory": "retry on a node with more memory (or fewer MPI servers per node)",
    "walltime": "retry with a longer walltime or on a faster node",
    "disk_full": "free space on the node's scratch (or raise the quota), then retry",
    "total_power": "total-power data set: exclude it, or image it with the hsd recipe",
    "node_lost": "retry on another node; check the node (and its network) before giving it work again",
    "unknown": "read the decisive line and its excerpt; add a rule when the cause is known",
}


def fix_for(category: str, rule_name: str | None = None) -> str:
    """The fix an operator applies for a failure of ``category`` decided by ``rule_name``.

    >>> fix_for("walltime")
    'retry with a longer walltime or on a faster node'
    """
    rule = _RULES_BY_NAME.get(rule_name or "")
    return (rule.fix if rule is not None and rule.fix else "") or FIXES.get(category, FIXES["unknown"])


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



def rule_rows(rules: Sequence[Rule] = RULES) -> list[dict]:
    """The rule table as rows: name, category, priority, stage, what it matches (``pattern``,
    ``needles``, ``levels``), ``corpus`` (its log under tests/data/triage/), description, fix."""
    return [{"name": r.name, "category": r.category, "priority": r.priority, "stage": r.stage,
             "levels": list(r.levels), "pattern": r.pattern, "needles": list(r.needles), "corpus": r.corpus or None,
             "description": r.description, "fix": fix_for(r.category, r.name) if r.category in FIXES else r.fix or None}
            for r in rules]


def rules_version(rules: Sequence[Rule] = RULES) -> str:
    """A short fingerprint of the rule table (names, categories, priorities, patterns, noise):
    a stored verdict can say which rules made it, and old verdicts can be found and redone."""
    text = "\n".join(f"{r.name}|{r.category}|{r.priority}|{r.pattern}|{r.levels}|{r.keep}" for r in rules)
    return hashlib.sha1((text + "\n" + "\n".join(NOISE)).encode()).hexdigest()[:12]
