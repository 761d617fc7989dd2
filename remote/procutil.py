"""Process and file helpers for the node side (Python stdlib only, Linux /proc).

What the runner needs and nothing more: the RSS of a whole process tree, read
from ``/proc``; killing that tree; free space on the scratch file system; and
writing a JSON file atomically so a reader never sees a torn document.

Memory and disk are counted in bytes; ``GB`` in limits and messages means 10**9
bytes, the one convention of the whole project (docs/config.md, "Sizes": the archive
gives sizes in bytes and the console shows them in decimal units; Slurm's MiB are
converted on the console's side). Written for Python 3.4+ (no f-strings, no
dataclasses): old workstations run it with their system ``python3``.
"""

import hashlib
import json
import os
import signal
import time

GB = 1e9
"""Bytes in one GB (decimal, as everywhere in the project)."""


def page_size() -> int:
    """The kernel page size in bytes (``statm`` counts pages)."""
    try:
        return os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4096


def children_map() -> dict:
    """``{ppid: [pid, ...]}`` for every process visible in ``/proc``."""
    tree = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        ppid = parent_pid(int(name))
        if ppid is not None:
            tree.setdefault(ppid, []).append(int(name))
    return tree


def parent_pid(pid: int):
    """The parent pid of ``pid`` from ``/proc/PID/stat``, or None if it is gone.

    The command name (field 2) may hold spaces and parentheses, so fields are
    counted after the last ``)``.
    """
    try:
        with open("/proc/%d/stat" % pid, "rb") as fh:
            text = fh.read().decode("ascii", "replace")
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()
    try:
        return int(fields[1])
    except (IndexError, ValueError):
        return None


def descendants(pid: int, tree=None) -> list:
    """Every descendant pid of ``pid`` (not ``pid`` itself), parents first."""
    tree = children_map() if tree is None else tree
    found, todo = [], list(tree.get(pid, []))
    while todo:
        child = todo.pop(0)
        found.append(child)
        todo.extend(tree.get(child, []))
    return found


def rss_bytes(pid: int) -> int:
    """Resident set size of one process in bytes; 0 if it is gone or a zombie."""
    try:
        with open("/proc/%d/statm" % pid) as fh:
            return int(fh.read().split()[1]) * page_size()
    except (OSError, IndexError, ValueError):
        return 0


def tree_rss_bytes(pid: int, include_self: bool = True) -> int:
    """Sum of RSS over ``pid`` (optionally) and all its descendants.

    Shared pages are counted once per process, as ``ps`` and Slurm's
    ``jobacct_gather/linux`` do, so this errs on the high side.
    """
    pids = descendants(pid) + ([pid] if include_self else [])
    return sum(rss_bytes(p) for p in pids)


def kill_tree(pid: int, grace_s: float = 3.0, include_self: bool = True) -> list:
    """SIGTERM ``pid``'s tree, wait up to ``grace_s``, then SIGKILL what is left.

    Returns the pids that were signalled. The tree is read before signalling,
    so children re-parented to init when their parent dies are still killed.
    """
    pids = descendants(pid) + ([pid] if include_self else [])
    for p in pids:
        _signal(p, signal.SIGTERM)
    deadline = time.time() + grace_s
    while time.time() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)
    for p in pids:
        if alive(p):
            _signal(p, signal.SIGKILL)
    return pids


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except OSError:
        pass


def alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as fh:
            text = fh.read().decode("ascii", "replace")
    except OSError:
        return False
    state = text[text.rfind(")") + 2:].split()[:1]
    return state != ["Z"]


PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Make orphaned descendants re-parent to this process instead of init (Linux >= 3.4).

    Then a grandchild whose parent exited (a double fork, a daemonising helper)
    still counts in the tree's RSS and still dies with the tree. True if it worked.
    """
    try:
        import ctypes  # noqa: PLC0415

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def reap_orphans(keep=()) -> list:
    """Collect exited children of this process other than ``keep`` (pids a Popen still waits for).

    A subreaper inherits orphans; when they exit they stay zombies until reaped.
    """
    reaped = []
    for pid in children_map().get(os.getpid(), []):
        if pid in keep or alive(pid):
            continue
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                reaped.append(pid)
        except OSError:
            pass
    return reaped


def free_bytes(path: str) -> int:
    """Bytes available to an unprivileged user on the file system of ``path``.

    >>> free_bytes("/") > 0
    True
    """
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def write_json_atomic(path: str, doc) -> None:
    """Write ``doc`` as JSON to ``path`` so readers see the old or the new file, never a mix.

    Temp file in the same directory, flush + fsync, then ``os.replace`` (an
    atomic rename on POSIX), then fsync the directory so the rename survives a crash.
    """
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, ".%s.%d.tmp" % (os.path.basename(path), os.getpid()))
    with open(tmp, "w") as fh:
        json.dump(doc, fh, indent=1, sort_keys=True)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_json(path: str, default=None):
    """The JSON document at ``path``, or ``default`` if it is missing or unreadable."""
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return default


def sha256_file(path: str, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def format_amount(value: float) -> str:
    """A limit as written in runner messages: one decimal, more only when needed.

    >>> format_amount(8), format_amount(0.2), format_amount(0.002)
    ('8.0', '0.2', '0.002')
    """
    one = "%.1f" % value
    if abs(float(one) - value) < 1e-9 or value >= 1:
        return one
    return "%g" % value


def format_measured(value: float, limit=None) -> str:
    """A measured amount in runner messages: one decimal (two if that would equal ``limit``).

    >>> format_measured(8.43), format_measured(8.04, 8.0), format_measured(0.0048)
    ('8.4', '8.04', '0.0048')
    """
    if value < 0.1:
        return "%.2g" % value
    one = "%.1f" % value
    if limit is not None and one == "%.1f" % limit:
        return "%.2f" % value
    return one
