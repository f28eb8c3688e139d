"""What Linux's /proc says about this process's hold on ``index.sqlite3``: descriptors on unlinked
files, and the locks held on a path (SQLite's POSIX locks, our open file description locks).

Plain functions without imports beyond ``os``: tests call them, the sharing worker imports them,
and scripts run in OMMX 3's venv get this module's source prepended (``inspect.getsource``).
"""

import os

SHARED = ["READ", 0x40000002, str(0x40000002 + 509)]  # SQLite's SHARED lock range on the database file


def deleted_index_fds() -> list[str]:
    """This process's file descriptors on an unlinked ``index.sqlite3*`` file."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if "index.sqlite3" in target and target.endswith(" (deleted)"):
            out.append(os.path.basename(target))
    return sorted(out)


def _locks_on(path, keep):  # type: ignore[no-untyped-def]
    """``[kind, start, end]`` of the /proc/locks lines on ``path``'s inode that ``keep(fields)`` accepts."""
    inode = str(os.stat(path).st_ino)
    out = []
    with open("/proc/locks") as f:
        for line in f:
            fields = line.split()
            if fields[1] == "->":
                fields = fields[:1] + fields[2:]
            if fields[5].rsplit(":", 1)[1] == inode and keep(fields):
                out.append([fields[3], int(fields[6]), fields[7]])
    return sorted(out)


def held_locks(path):  # type: ignore[no-untyped-def]
    """This process's POSIX locks on ``path``."""
    return _locks_on(path, lambda fields: fields[4] == str(os.getpid()))


def ofd_locks(path):  # type: ignore[no-untyped-def]
    """Open file description locks on ``path`` (pid -1 in /proc/locks; no other process takes any)."""
    return _locks_on(path, lambda fields: fields[1] == "OFDLCK")
