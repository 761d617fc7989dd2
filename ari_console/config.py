"""``ari.toml`` -> typed, validated configuration.

Every key is declared once, as a dataclass field whose metadata carries its
help text; validation, the starter file and the configuration reference are
all derived from these declarations, so they cannot drift apart.

Every error is one line naming the file, the key (with the node's name) and the
fix::

    ari.toml: node "mup03": walltime_h must be a number of hours, got "2d" — write 48
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserError

DEFAULT_ARCHIVE_URL = "https://almascience.eso.org"
CONFIG_NAME = "ari.toml"
DB_NAME = "ari.db"

TRANSPORTS = ("local", "ssh")
BATCH_SYSTEMS = ("none", "slurm", "pbs")
RECIPES = ("casa6", "alma-pipeline")


def _key(help: str, **kw: Any) -> Any:
    """A config key: a dataclass field whose metadata holds its help text."""
    if "default_factory" not in kw:
        kw.setdefault("default", None)
    return field(metadata={"help": help}, **kw)


@dataclass(frozen=True)
class Campaign:
    """The ``[campaign]`` table: one re-imaging effort."""

    name: str = _key("Campaign name, shown in the console and the report.", default="ari")
    work_dir: Path = _key(
        "Directory holding ari.db, log mirrors and fetched products; relative to ari.toml.",
        default=Path("."),
    )
    archive_url: str = _key(
        "Base URL of the ALMA archive service (TAP, DataLink, downloads).",
        default=DEFAULT_ARCHIVE_URL,
    )
    archive_timeout_s: float = _key(
        "Seconds to wait for each answer of the archive (TAP, DataLink, small files) before giving up.",
        default=60.0,
    )
    max_attempts: int = _key("Attempts per data set before it is held for an operator.", default=3)
    retry_backoff_s: float = _key(
        "Seconds to wait before retrying a download or lost-node failure (doubles each time).",
        default=300.0,
    )
    poll_interval_s: float = _key("Seconds between engine ticks.", default=10.0)
    clean_scratch: bool = _key(
        "Remove a succeeded attempt's data and products from the node's scratch once its products are "
        "fetched and verified (its logs and status stay).",
        default=True,
    )

    @property
    def db_path(self) -> Path:
        return self.work_dir / DB_NAME


@dataclass(frozen=True)
class Node:
    """One ``[[node]]`` table: a transport times a batch system."""

    name: str = _key("Unique node name, used in commands and the console.")
    transport: str = _key("How to reach it: local or ssh.", default="local")
    batch: str = _key("How to get a slot on it: none, slurm or pbs.", default="none")
    host: str | None = _key("Host name or address (ssh only).")
    port: int = _key("SSH port (ssh only).", default=22)
    user: str | None = _key("SSH user name (ssh only; default: your login name).")
    identity_file: Path | None = _key("SSH private key file (ssh only; default: the agent and ~/.ssh).")
    known_hosts: Path | None = _key("known_hosts file to check the SSH host key against (default: ~/.ssh/known_hosts).")
    trust_new_host_keys: bool = _key(
        "Accept and remember an unknown SSH host key instead of refusing it.", default=False
    )
    partition: str | None = _key("Batch partition / queue (slurm, pbs).")
    account: str | None = _key("Batch account to charge (slurm, pbs).")
    qos: str | None = _key("Batch quality of service (slurm).")
    slots: int = _key("Attempts that may run at once on this node.", default=1)
    cpus_per_slot: int = _key("CPU cores one attempt uses.", default=1)
    mem_gb: float = _key("Memory one attempt may use, in GB (10**9 bytes: a 64 GiB machine has 68.7 GB; "
                         "`ari nodes list` shows what the node's probe measured).", default=8.0)
    walltime_h: float | None = _key("Longest an attempt may run, in hours (unset: no limit).")
    speed: float = _key("Relative speed; 1.0 is the reference machine of the runtime predictions.", default=1.0)
    scratch_dir: str = _key("Directory on the node where attempts work.", default="/tmp/ari-scratch")
    scratch_gb: float | None = _key(
        "Scratch space in scratch_dir one attempt can have, in GB (unset: the size of scratch_dir's file system as "
        "the last probe measured it). A data set that needs more (3 GB per GB of its size) is never placed here."
    )
    python: str = _key("Python 3 interpreter on the node that runs the job runner.", default="python3")
    recipe: str = _key("Imaging recipe: casa6 or alma-pipeline.", default="casa6")
    casa_path: str | None = _key(
        "casa6: Python with casatasks (default: python); alma-pipeline: the casa executable."
    )
    casa_versions: tuple[str, ...] = _key(
        "CASA versions installed on the node, for data sets that need a given one.", default=()
    )
    casa: dict[str, str] = _key(
        "CASA installs by version, e.g. { \"6.5.4-9\" = \"/opt/casa-6.5.4/bin/casa\" } (casa6: a Python with "
        "casatasks, or a release's casa executable that runs a manual MOUS's scriptForPI.py; alma-pipeline: the "
        "casa executable): a data set that needs one of these versions runs with it, and only on a node that "
        "lists it. Versions are compared by their numbers, so `6.5.4-9` serves a MOUS whose manifest says "
        "`6.5.4.9`, and `5.1.1-5` one whose script says `5.1.1`; a node key without the build (`6.5.4`) "
        "serves any build of that release.",
        default_factory=dict,
    )
    env: dict[str, str] = _key(
        "Environment variables for every command on the node, e.g. { SLURM_CONF = \"/etc/slurm/slurm.conf\" }.",
        default_factory=dict,
    )

    @property
    def installed_casa_versions(self) -> tuple[str, ...]:
        """Every CASA version the node offers: ``casa_versions`` and the keys of ``casa``."""
        return tuple(dict.fromkeys(tuple(self.casa_versions) + tuple(self.casa)))


@dataclass(frozen=True)
class Config:
    """A whole campaign configuration, as read from ``path``."""

    path: Path
    campaign: Campaign
    nodes: tuple[Node, ...]
    selection: dict = field(default_factory=dict)  # the [selection] table: which archive MOUS to take

    def node(self, name: str) -> Node:
        """The node called ``name``, or a UserError naming the known ones."""
        for node in self.nodes:
            if node.name == name:
                return node
        known = ", ".join(n.name for n in self.nodes) or "none"
        raise UserError(f'{self.path.name}: no node "{name}" (nodes: {known})')


# -- reading -----------------------------------------------------------------

_NUMBER_WORDS = {
    w: i
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve".split()
    )
}
NUMBER_UNIT = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*([a-z]*)\s*$", re.I)
"""A number and a unit word: ``2d``, ``90 min``, ``512 GiB``."""
_MINUTE = ("m", "min", "mins", "minute", "minutes")
HOURS_UNITS = {"h": 1, "hr": 1, "hrs": 1, "hour": 1, "hours": 1, "d": 24, "day": 24, "days": 24,
               "w": 168, "week": 168, "weeks": 168, **dict.fromkeys(_MINUTE, 1 / 60)}
"""Hours in one of each unit a duration might be written in."""
GB_UNITS = {"g": 1, "gb": 1, "gib": 2 ** 30 / 1e9, "t": 1000, "tb": 1000, "tib": 2 ** 40 / 1e9,
            "mb": 1e-3, "mib": 2 ** 20 / 1e9}
"""GB (10**9 bytes, as everywhere in the console) in one of each unit a size might be written in."""
SECONDS_UNITS = {"s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1, **dict.fromkeys(_MINUTE, 60),
                 "h": 3600, "hour": 3600, "hours": 3600}
_CLOCK = re.compile(r"^\s*(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?\s*$")
"""A batch system's time limit: Slurm's ``[days-]hours[:minutes[:seconds]]`` after a day count, its
(and PBS's) ``hours:minutes:seconds`` and ``minutes:seconds`` without one."""


def clock_hours(text: str) -> float | None:
    """Hours of a Slurm or PBS time limit (``48:00:00``, ``2-00:00:00``, ``90:00``), or None.

    >>> clock_hours("48:00:00"), clock_hours("2-12"), clock_hours("90:00"), clock_hours("48")
    (48.0, 60.0, 1.5, None)
    """
    match = _CLOCK.match(text)
    if match is None or (match.group(1) is None and match.group(3) is None):
        return None  # a bare number is read as hours before this
    days, a, b, c = (int(g) if g is not None else None for g in match.groups())
    if days is not None:
        return days * 24 + a + (b or 0) / 60 + (c or 0) / 3600
    if c is None:  # minutes:seconds
        return a / 60 + b / 3600
    return a + b / 60 + c / 3600


def number_fix(value: Any, key: str) -> str:
    """The number a user most likely meant by ``value`` for ``key``, as a literal, or '': a number
    word, a number in quotes, or (by the key's unit: hours for ``*_h``/``*hours``, GB for ``*_gb``,
    seconds for ``*_s``) a number with a unit or a batch time limit. Read alike in ``ari.toml`` and
    in an estimate's files.

    >>> [number_fix(v, k) for v, k in [("two", "slots"), ("2d", "walltime_h"), ("90 min", "hours"),
    ...  ("48:00:00", "walltime_h"), ("512 GiB", "mem_gb"), ("2m", "poll_interval_s"), ("2 months", "walltime_h")]]
    ['2', '48', '1.5', '48', '549.7558', '120', '']
    """
    if not isinstance(value, str):
        return ""
    text = value.strip().lower()
    if text in _NUMBER_WORDS:
        return str(_NUMBER_WORDS[text])
    try:
        return fmt_number(float(text))
    except ValueError:
        pass
    units = (HOURS_UNITS if key.endswith(("_h", "hours")) else GB_UNITS if key.endswith("_gb")
             else SECONDS_UNITS if key.endswith("_s") else {})
    clock = clock_hours(text) if units is HOURS_UNITS else None
    if clock is not None:
        return fmt_number(round(clock, 4))
    match = NUMBER_UNIT.match(text)
    if match and match.group(2) in units:
        return fmt_number(round(float(match.group(1)) * units[match.group(2)], 4))
    return ""


def fmt_number(x: float) -> str:
    """``x`` as a literal to write: a whole number without its ``.0``."""
    return str(int(x)) if float(x).is_integer() else repr(x)


def _type_name(tp: Any, key: str) -> str:
    if key.endswith("_h"):
        return "a number of hours"
    if key.endswith("_gb"):
        return "a number of GB"
    if key.endswith("_s"):
        return "a number of seconds"
    return {int: "a whole number", float: "a number", bool: "true or false",
            str: "a string", Path: "a path"}.get(tp, "a list of strings")


NONZERO = ("slots", "speed", "cpus_per_slot", "max_attempts", "mem_gb", "walltime_h", "poll_interval_s", "port",
           "scratch_gb")
FLOORS = {"poll_interval_s": 0.5}  # below this an engine tick would busy-loop the console and the nodes


def _coerce(where: str, key: str, tp: str, value: Any) -> Any:
    """``value`` as type ``tp`` or a UserError naming where, key, and the fix."""
    base = {"str": str, "int": int, "float": float, "bool": bool, "Path": Path}
    name = tp.split("|")[0].strip()
    kind = base.get(name, name)
    shown = f'"{value}"' if isinstance(value, str) else repr(value)
    if kind in (int, float):
        ok = isinstance(value, int) and not isinstance(value, bool)
        ok = ok or (kind is float and isinstance(value, float))
        if ok:
            if not math.isfinite(value):
                raise UserError(f"{where}{key} must be a finite number, got {value!r} — write a number like "
                                f"{fmt_number(FLOORS.get(key, 1))}")
            if key in FLOORS and value < FLOORS[key]:
                raise UserError(f"{where}{key} must be at least {fmt_number(FLOORS[key])}, got {value!r} — "
                                f"write {fmt_number(FLOORS[key])} or more")
            if value < 0 or (value == 0 and key in NONZERO):
                raise UserError(f"{where}{key} must be positive, got {value!r}")
            return kind(value)
        fix = number_fix(value, key)
        if kind is int and fix and not fix.isdigit():
            fix = ""
        hint = f" — write {fix}" if fix else ""
        raise UserError(f"{where}{key} must be {_type_name(kind, key)}, got {shown}{hint}")
    if kind is bool:
        if isinstance(value, bool):
            return value
        hint = " — write true or false, without quotes"
        raise UserError(f"{where}{key} must be true or false, got {shown}{hint}")
    if kind in (str, Path):
        if isinstance(value, str) and value.strip():
            return Path(value).expanduser() if kind is Path else value
        raise UserError(f"{where}{key} must be a non-empty {'path' if kind is Path else 'string'}, "
                        f"got {shown} — write it in quotes")
    if name.startswith("dict"):
        if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
            return dict(value)
        raise UserError(f'{where}{key} must be a table of strings, got {shown} — write {key} = {{ NAME = "value" }}')
    if name.startswith("tuple"):
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise UserError(f'{where}{key} must be a list of strings, got {shown} — write ["6.5.4"]')
    raise AssertionError(f"unhandled config type {tp!r}")  # our bug, not the user's


def _build(cls: type, table: dict, where: str, file: str) -> Any:
    """An instance of dataclass ``cls`` from a TOML table, strictly checked."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in table:
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f' — did you mean "{close[0]}"?' if close else f" — known keys: {', '.join(fields)}"
            raise UserError(f"{file}: {where}unknown key \"{key}\"{hint}")
    values = {}
    for name, f in fields.items():
        if name in table:
            values[name] = _coerce(f"{file}: {where}", name, str(f.type).replace("None", "").strip(" |"), table[name])
    return cls(**values)


def parse_config(text: str, path: Path) -> Config:
    """A Config from TOML ``text``; ``path`` anchors relative paths and names errors.

    >>> cfg = parse_config('[[node]]\\nname = "here"\\n', Path("/c/ari.toml"))
    >>> cfg.nodes[0].name, cfg.campaign.work_dir
    ('here', PosixPath('/c'))
    """
    file = path.name
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{file}: not valid TOML: {exc} — check quotes and brackets there") from None
    tables = ["campaign", "node", "selection"]
    for key in data:
        if key not in tables:
            close = difflib.get_close_matches(key, tables, n=1)
            hint = f' — did you mean "{close[0]}"?' if close else " — use [campaign], [selection] and [[node]] tables"
            raise UserError(f'{file}: unknown table "{key}"{hint}')
    selection = data.get("selection", {})
    if not isinstance(selection, dict):
        raise UserError(f"{file}: selection must be a table — write [selection]")
    if selection:
        from .archive.selection import rules_from_mapping  # noqa: PLC0415 (validation only)

        rules_from_mapping(selection, source=f"{file}: [selection]")
    camp_table = data.get("campaign", {})
    if not isinstance(camp_table, dict):
        raise UserError(f"{file}: campaign must be a table — write [campaign]")
    campaign = _build(Campaign, camp_table, "[campaign]: ", file)
    work_dir = campaign.work_dir
    if not work_dir.is_absolute():
        work_dir = (path.parent / work_dir).resolve()
    campaign = dataclasses.replace(campaign, work_dir=work_dir)

    node_tables = data.get("node", [])
    if isinstance(node_tables, dict):
        raise UserError(f"{file}: node must be an array of tables — write [[node]], not [node]")
    nodes: list[Node] = []
    for i, table in enumerate(node_tables, start=1):
        label = table.get("name")
        where = f'node "{label}": ' if isinstance(label, str) and label else f"node #{i}: "
        if "name" not in table:
            raise UserError(f'{file}: {where}name is missing — add name = "node{i}"')
        node = _anchor_paths(_build(Node, table, where, file), path.parent)
        _check_node(node, where, file)
        if any(n.name == node.name for n in nodes):
            raise UserError(f'{file}: {where}name is used by two nodes — give each node its own name')
        nodes.append(node)
    return Config(path=path, campaign=campaign, nodes=tuple(nodes), selection=dict(selection))


def _anchor_paths(node: Node, base: Path) -> Node:
    """The node with its paths on this machine resolved against ari.toml's directory (never the shell's)."""
    changes: dict[str, Any] = {}
    for key in ("identity_file", "known_hosts"):
        value = getattr(node, key)
        if value is not None and not value.is_absolute():
            changes[key] = (base / value).resolve()
    if node.transport == "local" and not node.scratch_dir.startswith(("/", "~")):
        changes["scratch_dir"] = str((base / node.scratch_dir).resolve())
    return dataclasses.replace(node, **changes) if changes else node


def _check_node(node: Node, where: str, file: str) -> None:
    """Cross-key checks of one node that a single key's type cannot express."""
    choices = {"transport": TRANSPORTS, "batch": BATCH_SYSTEMS, "recipe": RECIPES}
    for key, allowed in choices.items():
        value = getattr(node, key)
        if value not in allowed:
            close = difflib.get_close_matches(value, allowed, n=1)
            fix = f"write {close[0]}" if close else f"one of {', '.join(allowed)}"
            raise UserError(f'{file}: {where}{key} must be one of {", ".join(allowed)}, got "{value}" — {fix}')
    if node.transport == "ssh" and not node.host:
        raise UserError(f'{file}: {where}host is missing — an ssh node needs host = "name.or.address"')
    if node.transport == "ssh" and not node.scratch_dir.startswith("/"):
        raise UserError(f'{file}: {where}scratch_dir must be an absolute path on the node, got "{node.scratch_dir}" '
                        f'— write e.g. "/scratch/{node.user or "ari"}/ari"')
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", node.name):
        raise UserError(f'{file}: {where}name may hold only letters, digits, "_", "." and "-"')


def load_config(path: Path) -> Config:
    """The Config in file ``path``, or a UserError saying how to make one."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file — run `ari init` to write a starter config") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read it ({exc.__class__.__name__}) — point --config at ari.toml") from None
    return parse_config(text, path.resolve())


def reference() -> list[tuple[str, str, str, str]]:
    """(table, key, default, help) for every config key, in declaration order."""
    rows = []
    for table, cls in (("[campaign]", Campaign), ("[[node]]", Node)):
        for f in dataclasses.fields(cls):
            default = "" if f.default in (None, dataclasses.MISSING) else str(f.default)
            rows.append((table, f.name, default, f.metadata["help"]))
    return rows


STARTER = '''\
# ari.toml: one re-imaging campaign. Reference: docs/config.md (`ari config reference`).

[campaign]
name = "{name}"
# Where ari.db, log mirrors and fetched products live (relative to this file).
work_dir = "."
# The ALMA archive (TAP, DataLink, downloads). The demo points this at a local service.
archive_url = "{archive_url}"
# Seconds to wait for each answer of the archive before giving up.
archive_timeout_s = 60
# Attempts per data set before it is held for an operator.
max_attempts = 3

# Which archive MOUS `ari datasets import --project/--mous` takes; every exclusion keeps its reason.
# preset = "ari-l" starts from ARI-L's rules (project codes 2013/2015/2016, not already imaged by
# the imaging pipeline, and the rules below); keys written here override the preset.
[selection]
public_only = true
qa2_states = ["Pass", "SemiPass"]
exclude_full_stokes = true
exclude_vlbi = true
exclude_total_power = true
exclude_solar = true
exclude_pipeline_imaged = false
# preset = "ari-l"
# project_years = [2013, 2015, 2016]
# max_size_gb = 500

# One [[node]] table per machine. transport: local | ssh; batch: none | slurm | pbs.
[[node]]
name = "local"
transport = "local"
batch = "none"
# Attempts at once, memory each may use (GB), and the longest one may run (hours; omit for none).
slots = 1
mem_gb = {mem_gb}
# walltime_h = 48
# 1.0 = the reference machine of the runtime predictions; an old workstation might be 0.6.
speed = 1.0
scratch_dir = "{scratch}"
# Python that runs the job runner, and (recipe casa6) the Python that has casatasks.
python = "{python}"
recipe = "casa6"
casa_path = "{python}"
# CASA versions installed here (data sets whose calibration needs another one go elsewhere).
{casa_versions}
# Environment for every command on the node; CASASITECONFIG keeps CASA offline (measures from casadata).
{env}

# An SSH workstation, for example:
# [[node]]
# name = "ws01"
# transport = "ssh"
# host = "ws01.example.org"
# user = "ari"
# identity_file = "~/.ssh/id_ed25519"
# slots = 1
# mem_gb = 24
# speed = 0.6
'''


def starter_config(name: str, python: str, scratch: str, mem_gb: float,
                   archive_url: str = DEFAULT_ARCHIVE_URL, casa_version: str | None = None,
                   casa_site_config: str | None = None) -> str:
    """The commented starter ``ari.toml`` that ``ari init`` writes (CASA version and site config where known).

    >>> text = starter_config("c", "/py", "/s", 8, casa_version="6.7.0-31", casa_site_config="/v/site.py")
    >>> 'casa_versions = ["6.7.0-31"]' in text, 'env = { CASASITECONFIG = "/v/site.py" }' in text
    (True, True)
    """
    versions = f'casa_versions = ["{casa_version}"]' if casa_version else '# casa_versions = ["6.7.0-31"]'
    env = (f'env = {{ CASASITECONFIG = "{casa_site_config}" }}' if casa_site_config
           else '# env = { CASASITECONFIG = "/path/to/casasiteconfig.py" }')
    return STARTER.format(name=name, python=python, scratch=scratch, mem_gb=fmt_number(mem_gb),
                          archive_url=archive_url, casa_versions=versions, env=env)


def reference_markdown() -> str:
    """docs/config.md: every key of ari.toml with its default and meaning, generated from the dataclasses."""
    lines = ["# ari.toml reference", "",
             "Generated from `ari_console/config.py` by `ari config reference --markdown`; do not edit by hand.",
             "Every key is checked when the file is read: a wrong type or an unknown key is one line naming",
             "the file, the table (and node), the key and the fix. Numbers are plain numbers in the key's unit",
             "(`_h` hours, `_gb` GB, `_s` seconds): one written with a unit (`2d`, `48:00:00`, `512 GiB`, `2 min`)",
             "is refused with the number to write instead (`48`, `48`, `549.7558`, `120`).", ""]
    table = None
    for tbl, key, default, help_text in reference():
        if tbl != table:
            table = tbl
            lines += ["", f"## `{tbl}`", "", "| key | default | meaning |", "| --- | --- | --- |"]
        lines.append(f"| `{key}` | {('`' + default + '`') if default else ''} | {help_text} |")
    lines += ["", "## `[selection]`", "",
              "Which archive MOUS `ari datasets import --project/--mous` queues; the rest are kept as",
              "`excluded` with their reason. Keys: `public_only`, `qa2_states`, `exclude_full_stokes`,",
              "`exclude_vlbi`, `exclude_total_power`, `exclude_solar`, `exclude_pipeline_imaged`, `cycles`,",
              "`project_years`, `min_size_gb`, `max_size_gb`, and `preset` (a named rule set that the other",
              "keys override: `\"ari-l\"` = ARI-L's rules — project codes 2013/2015/2016, public, QA2",
              "Pass/SemiPass, no full Stokes, VLBI, total power or Sun, not already imaged by the imaging",
              "pipeline). Without a preset: public, QA2 Pass/SemiPass, no full Stokes, VLBI, total power or Sun.", ""]
    return "\n".join(lines)
