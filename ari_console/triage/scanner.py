"""The scanner: blocks of whole lines in, one Verdict out (streaming, flat memory).

A block regex skips plain CASA INFO lines at C speed; every other line (and task banners) goes
through the needle index to the few rules that can match it; a bounded set of candidates (first
and last per rule and stage) is kept, and the best by effective priority decides.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence

from ari_console.errors import UserError
from ari_console.triage.rules import (
    CATEGORIES, CONTEXT, FROM_GROUP, NOISE_NEEDLES, NOISE_RE, RESOURCE_PRIORITY, RULES,
    SUPERSEDED_PENALTY, WARN_PENALTY, Rule, fix_for, stage_category,
)
from ari_console.triage.signatures import signature

EXCERPT_BEFORE = 2
EXCERPT_AFTER = 2
MAX_EXCERPT_LINE = 300
CHUNK_CHARS = 4 << 20
_PIPELINE_TASK = re.compile(r"^(?:hifa|hifv|hif|hsd|hsdn)_\w+$")
_CASA_DATE = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d")
_CASA_LEVELS = frozenset(("INFO", "INFO1", "INFO2", "INFO3", "INFO4", "INFO5", "WARN", "SEVERE", "ERROR",
                          "DEBUG", "DEBUG1", "DEBUG2", "DEBUGGING", "NORMAL", "FATAL"))
_SPACED_CASA = re.compile(r"^\d{4}-\d\d-\d\d[ T][\d:.]+\s+(INFO\d?|WARN|SEVERE|ERROR|DEBUG\d?)\s+"
                          r"(?:(\S*::\S*(?: \(file [^)]*\))?\+?)\s+)?(.*)$")
# casacore imager classes: a SEVERE line from one of them (an MPI server's, say) is tclean's.
_IMAGER_ORIGIN = re.compile(r"\b(?:CubeMajorCycleAlgorithm|CubeMakeImageAlgorithm|CubeMinorCycleAlgorithm|SynthesisImager\w*"
                            r"|SynthesisDeconvolver|SIImageStore\w*|SIMinorCycleController|SDAlgorithm\w*|runCubeGridding)\b")
_GREP_PREFIX = re.compile(r"^[\w./+-]+\.(?:log|out):(?:\d+:)?(?=\d{4}-\d\d-\d\d)")
# A Python logging line: optional "name - " and colour codes, a date, a level, the message.
_LOGGER_LINE = re.compile(r"^(?:\x1b\[[\d;]*m|ESC\[[\d;]*m)?(?:[\w.-]+ - )?\d{4}-\d\d-\d\d[ T][\d:.,]+\s+(?:- )?"
                          r"(INFO|WARNING|WARN|ERROR|CRITICAL|SEVERE|DEBUG)\s*(?::|-)\s*(?:- )?(.*?)(?:\x1b\[0m|ESC\[0m)?$")
_LOGGER_LEVELS = {"INFO": "INFO", "WARNING": "WARN", "WARN": "WARN", "ERROR": "ERROR", "CRITICAL": "SEVERE",
                  "SEVERE": "SEVERE", "DEBUG": "DEBUG"}
# A warning that relays a program's error output is an error ("... stderr: An unhandled exception ...").
_RELAYED_ERROR = re.compile(r"\bstderr\b|\b(?:unhandled|uncaught) exception|Traceback \(most recent", re.I)
_BANNER = re.compile(r"#{3,}\s*Begin Task:\s*(\w+)")
_STAGE_MARKERS = (
    (re.compile(r"ari-runner:\s*stage\s+(\w+)\s+(?:started|starting|begins?|running)", re.I), "runner"),
    (re.compile(r"^\s*(?:Executing(?: command| task| pipeline task)?:?\s+|Running\s+)?((?:hifa|hifv|hif|hsd|hsdn)_\w+)\s*\("), "call"),
    (re.compile(r"Executing (?:command|task|pipeline task):?\s+((?:hifa|hifv|hif|hsd|hsdn)_\w+)"), "call"),
    # A CASA task called at the CASA prompt or logged by the pipeline ("INFO: Executing tclean(vis=...").
    (re.compile(r"^CASA <\d+>: (\w+)\(|\bExecuting (?:command:? )?(?:casatasks\.)?(\w+)\("), "task"),
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
_EXC_CLASS = re.compile(r"^(?:[\w.]+(?:Error|Exception)\w*:\s*)+")
_CARETS = re.compile(r"^\s*[\^~]+\s*$")
_DIGITS = re.compile(r"\d+")
# Rules that look at particular numbers (errno 28, exit 137, HTTP 503, signal 9): lines with
# these words are never answered from the cache of quiet WARN shapes.
_DIGIT_SENSITIVE = re.compile(r"errno|signal|http|curl|code|exit|status|137|error \d|\[\d")
QUIET_CACHE = 10000
_STAGE_NAMING = re.compile(r"Error executing pipeline task|raised an exception|error occurred running task|Traceback \(most recent", re.I)
CAUSE_WINDOW = 20
# Rules at or below this priority only name the most severe line when nothing else matched
# (an unknown verdict's decisive line): the last match per block is enough.
FALLBACK_PRIORITY = 10
# Lines a block scan must look at: everything but plain CASA INFO lines (banners are found apart).
_CANDIDATE = re.compile(r"\n(?!.{19}\tINFO\t)")
_BANNER_NEEDLE = "Begin Task:"
NOISE_NEEDLE_SET = frozenset(NOISE_NEEDLES)


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

    @property
    def fix(self) -> str:
        """What an operator does about it (by rule where the rule says, else by category)."""
        return fix_for(self.category, self.rule)



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
    needles = sorted(set(table) | set(NOISE_NEEDLES))
    implied = {n: tuple(m for m in needles if n.startswith(m)) for n in needles}
    scan = re.compile("(?=(" + _trie_pattern(needles) + "))") if needles else re.compile(r"(?!)")
    return _NeedleIndex(scan, implied, {k: tuple(v) for k, v in table.items()}, tuple(always))


class _Scanner:
    """The streaming state: fed blocks of whole lines, keeps a bounded set of candidates."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = tuple(rules)
        self.index = _needle_index(tuple(r for r in self.rules if not r.levels))
        self.level_rules = tuple(r for r in self.rules if r.levels)
        self.rule_levels = frozenset(level for r in self.level_rules for level in r.levels)
        self.tp_line: int | None = None  # first line that marks a total-power data set
        self.tp_rule = next((r for r in self.rules if r.category == "total_power"), None)
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
        self.continued = False  # the current line continues the previous CASA message (origin ends with +)
        self.origin_context: str | None = None  # the last task a line's origin named (when no banner says)
        self.decided = False  # a rule above FALLBACK_PRIORITY matched: fallback lines can no longer decide
        self.fallback: dict[str, tuple] = {}  # the block's last line of each fallback rule, not yet recorded

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
        for rule, level, origin_task, text, message, lineno, pos, end in self.fallback.values():
            if not self.decided:  # (its stage is the one at the end of the block: it only names a line)
                self._record(rule, None, level, origin_task, text, message, lineno, buf, pos, end)
        self.fallback.clear()
        self.tail = (self.tail + _last_lines(chunk, EXCERPT_BEFORE))[-EXCERPT_BEFORE:]

    def _fill_pending(self, chunk: str) -> None:
        """Give candidates whose excerpt ran past the last block their following lines."""
        if not self.pending:
            return
        parts = chunk.split("\n", EXCERPT_AFTER)
        head = parts[:-1] + ([parts[-1]] if parts[-1] and len(parts) <= EXCERPT_AFTER else [])
        for cand in self.pending:
            take = head[: cand.after_needed]
            cand.after.extend(clip(x) for x in take)
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
            if self.tp_line == lineno and self.tp_rule is not None:
                self._record(self.tp_rule, None, level, None, text, message, lineno, buf, pos, end)
            return
        key = None
        if level == "WARN" or level == "DEBUG":
            key = _DIGITS.sub("0", text[20:])
            if key in self.quiet:
                return
        low = message.lower()
        present = self.index.present(low)
        if present and not NOISE_NEEDLE_SET.isdisjoint(present) and NOISE_RE.search(message):
            self.noise_origin = (origin or "").rstrip("+")
            self.noise_line = lineno
            return
        if level is not None and level.startswith("INFO"):
            return
        origin_task = _origin_task(origin)
        if origin_task is None and ("Synthesis" in text or "Cube" in text or "SIImage" in text) \
                and _IMAGER_ORIGIN.search(text):
            origin_task = "tclean"  # an imager class named in a line whose origin is not parsed
        if origin_task is not None and stage_category(origin_task):
            self.origin_context = origin_task
        self.continued = origin is not None and origin.endswith("+")
        matched: set[str] = set()
        if key is not None and not _DIGIT_SENSITIVE.search(low):
            self._remember_quiet(key)  # undone below if a rule matches
        for rule in self.index.candidates(present):
            m = rule.regex.search(message)
            if m:
                matched.add(rule.name)
                self._match(rule, m, level, origin_task, text, message, lineno, buf, pos, end)
        if matched and key is not None:
            self.quiet.pop(key, None)
        if level in self.rule_levels:
            for rule in self.level_rules:
                if level in rule.levels and rule.regex.search(message):
                    self._match(rule, None, level, origin_task, text, message, lineno, buf, pos, end)

    def _match(self, rule: Rule, m: re.Match | None, level: str | None, origin_task: str | None,
               text: str, message: str, lineno: int, buf: str, pos: int, end: int) -> None:
        """Record a rule's match; a fallback rule's only at the end of the block, and only while no
        other rule has matched (then it can no longer decide)."""
        if rule.priority > FALLBACK_PRIORITY:
            self._record(rule, m, level, origin_task, text, message, lineno, buf, pos, end)
        elif not self.decided:
            self.fallback[rule.name] = (rule, level, origin_task, text, message, lineno, pos, end)

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
                self._enter(m.group(1), "banner", lineno)
                return True
        if "ari-runner" in message or "_" in message and ("hif" in message or "hsd" in message) \
                or "(" in message and ("Executing" in message or "CASA <" in message):
            for regex, kind in _STAGE_MARKERS:
                m = regex.search(message)
                if m:
                    name = m.group(1) or m.group(m.lastindex)
                    if kind == "task" and stage_category(name) is None:
                        continue  # a tool or a function, not a task we know
                    self._enter(name, kind, lineno)
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

    def _enter(self, name: str, kind: str, lineno: int) -> None:
        """A new stage or task started; later stages make earlier failures less decisive."""
        if self.tp_line is None and stage_category(name) == "total_power":
            self.tp_line = lineno
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
        names += [self.casa_task, self.runner_stage, self.origin_context]
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
        seq = self.seq
        if rule.priority > FALLBACK_PRIORITY:
            self.decided = True
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
        warned = warned and not _RELAYED_ERROR.search(message)
        warned = warned or (rule.priority < RESOURCE_PRIORITY and _TRANSIENT.search(message) is not None)
        penalty = WARN_PENALTY if warned else 0
        cand = _Candidate(rule, category, stage, lineno, message.strip(), seq, penalty,
                          _lines_before(buf, pos, EXCERPT_BEFORE), text)
        cand.after = _lines_after(buf, end, EXCERPT_AFTER)
        cand.after_needed = EXCERPT_AFTER - len(cand.after)
        if rule.name in _REFINED_BY_TRACEBACK and rule.name != "severe-line":  # no chains of causes
            prev = self.prev_severe
            if prev and prev.seq == seq and 0 < lineno - prev.line <= CAUSE_WINDOW and not prev.penalty:
                cand.cause = prev
        if rule.name == "severe-line" and not self.continued:
            self.prev_severe = cand
        if category == "total_power" and self.tp_line is None:
            self.tp_line = lineno
        old_first = self.first.get(rule.name)
        if old_first is None or old_first.seq < seq:
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
        excerpt = "\n".join(shown.before + [clip(shown.text)] + shown.after)
        category = best.category
        if self.tp_line is not None and best.rule.priority < RESOURCE_PRIORITY:
            category = "total_power"  # whatever broke, a total-power data set is not ours to image
        return Verdict(category, best.stage, shown.line, excerpt, evidence, signature(shown.message),
                       best.rule.name, eff, shown.message)

    def _bottom_exception(self, best: _Candidate) -> _Candidate | None:
        """What a stage-naming error line stands for: the casacore exception just before it, else
        the traceback's last exception below it, else the SEVERE line just before it (same stage,
        within CAUSE_WINDOW lines).

        "Error executing pipeline task hif_x." or CASA 5's "An error occurred running task
        tclean." say where; the line around them says why, and tells causes apart in a signature.
        """
        if best.rule.name not in _REFINED_BY_TRACEBACK:
            return None
        root = self.first.get("casa-cpp-exception")
        if not (root and root.seq == best.seq and 0 < best.line - root.line <= CAUSE_WINDOW and not root.penalty):
            root = None
        exc = self.last.get("python-exception")
        if exc and exc.line > best.line and exc.seq == best.seq and exc.category in (best.category, "unknown"):
            if root is None or _EXC_CLASS.sub("", exc.message)[:40] in root.message:
                return exc
        if root is not None:
            return root  # the casacore exception that later errors only pass on
        if "following message" in best.message:
            return None  # CASA 6's "Task x raised an exception ... with the following message: why"
        cause = best.cause
        if cause is not None and cause.rule.name == "severe-line" and not _STAGE_NAMING.search(cause.message):
            return cause
        return None


def _split_casa(text: str) -> tuple[str | None, str | None, str]:
    """(level, origin, message) of a CASA logger line; (None, None, text) otherwise."""
    if ".log:" in text[:160] or ".out:" in text[:160]:
        m = _GREP_PREFIX.match(text)
        if m:  # a line as `grep -H` prints it: "casa-2022.log:2022-01-21 18:05:38  WARN ..."
            text = text[m.end():]
    if len(text) > 20 and text[19] == "\t":
        parts = text.split("\t", 3)
        if len(parts) == 4 and parts[1] in _CASA_LEVELS and _CASA_DATE.match(parts[0]):
            return parts[1], parts[2], parts[3]
    elif text[:1].isdigit():
        m = _SPACED_CASA.match(text)
        if m:
            return m.group(1), m.group(2), m.group(3)
    if text[:1].isdigit() or text[:1] == "\x1b" or text[:4] == "ESC[" or " - 20" in text[:80]:
        m = _LOGGER_LINE.match(text)
        if m:  # "2022-10-19 09:05:33 INFO: ..." (the pipeline's console), "name - date LEVEL - ..."
            return _LOGGER_LEVELS[m.group(1).upper()], None, m.group(2)
    return None, None, text


@functools.lru_cache(maxsize=4096)
def _origin_task(origin: str | None) -> str | None:
    """The task a CASA origin names first ('tclean::SIImageStore::x' -> 'tclean')."""
    if not origin:
        return None
    head = origin.split("::", 1)[0].strip().rstrip("+")
    if head.startswith("task_"):
        head = head[5:]
    if _IMAGER_ORIGIN.search(origin) and not head.startswith(("h", "tclean", "sdintimaging", "deconvolve")):
        return "tclean"
    return head if head and head.replace("_", "a").isalnum() else None


def _task_group(m: re.Match | None) -> str | None:
    """The first non-empty group whose name starts with 'task'."""
    if m is None:
        return None
    for name, value in m.groupdict().items():
        if name.startswith("task") and value:
            return value
    return None


def clip(line: str) -> str:
    """One excerpt line, at most MAX_EXCERPT_LINE characters."""
    line = line.rstrip("\r\n")
    return line if len(line) <= MAX_EXCERPT_LINE else line[: MAX_EXCERPT_LINE - 1] + "…"


def _lines_before(buf: str, pos: int, n: int) -> list[str]:
    """Up to ``n`` lines that end just before ``pos`` (skipping the leading sentinel)."""
    out: list[str] = []
    end = pos - 1
    while len(out) < n and end > 0:
        start = buf.rfind("\n", 0, end) + 1
        out.append(clip(buf[start:end]))
        end = start - 1
    return out[::-1]


def _lines_after(buf: str, end: int, n: int) -> list[str]:
    """Up to ``n`` whole lines that follow the line ending at ``end``."""
    out: list[str] = []
    pos = end + 1
    while len(out) < n and pos < len(buf):
        nxt = buf.find("\n", pos)
        if nxt == -1:  # blocks end with a newline, so this is the file's unterminated last line
            out.append(clip(buf[pos:]))
            break
        out.append(clip(buf[pos:nxt]))
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


def _blocks_from_lines(lines: Iterable[str], chunk_chars: int = CHUNK_CHARS) -> Iterator[str]:
    """Lines (with or without newlines) regrouped into blocks of about ``chunk_chars`` characters."""
    batch: list[str] = []
    size = 0
    for line in lines:
        if not line.endswith("\n"):
            line += "\n"
        batch.append(line)
        size += len(line)
        if size >= chunk_chars:
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


def classify(lines: Iterable[str], rules: Sequence[Rule] = RULES, hint: str | None = None,
             chunk_chars: int = CHUNK_CHARS) -> Verdict:
    """The failure category, stage, decisive line and excerpt of one log.

    ``hint`` is a category the caller already knows (e.g. the runner's ``status.json``);
    it wins over ordinary failures but not over evidence of a root cause in the log.
    ``chunk_chars`` is the size of the blocks the lines are scanned in (the verdict does not
    depend on it).

    >>> v = classify(["2026-11-25 16:12:50\\tSEVERE\\ttclean::x\\tstd::bad_alloc"])
    >>> v.category, v.stage, v.line
    ('memory', 'tclean', 1)
    """
    if isinstance(lines, str):
        lines = lines.splitlines()
    return classify_blocks(_blocks_from_lines(lines, chunk_chars), rules, hint)


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
