"""Power-loss order, shown with strace: temp file → write → fsync → link/rename → fsync(dir),
and every blob of a commit durable BEFORE the SQLite WAL write that publishes its ref.

Issue 8, "Power-loss order". A subprocess commits one experiment (and, separately, saves it
as a ``.ommx`` archive) under ``strace -f``; we rebuild the fd → path map from ``openat``/
``close`` results and check the order of events. SQLite writes its WAL with ``pwrite64``,
so that is traced too; the ref-publishing WAL frame is the first one whose page bytes
contain the committed manifest's digest.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from workers.reliability_worker import INLINE_NOTE

from ommx_experiment.engine.digest import sha256_digest

from . import _support as sup

SYSCALLS = "openat,close,write,pwrite64,fsync,fdatasync,rename,renameat,renameat2,link,linkat,unlink"
_LINE = re.compile(r"^(\d+)\s+(\w+)\((.*)\)\s+=\s+(-?\d+|\?)")
_STR = re.compile(r'"((?:[^"\\]|\\.)*)"')
_HEX = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Event:
    index: int
    call: str
    path: str | None = None  # fd calls: the file; link/rename: the source
    target: str | None = None  # link/rename destination
    data: str = ""  # write payload as strace printed it
    size: int = 0  # write / pwrite64: bytes written
    offset: int | None = None  # pwrite64: file offset


@dataclass
class Trace:
    events: list[Event] = field(default_factory=list)

    def of(self, call: str | tuple[str, ...], path: str | None = None) -> list[Event]:
        calls = (call,) if isinstance(call, str) else call
        return [e for e in self.events if e.call in calls and (path is None or e.path == path)]

    def syncs(self, path: str) -> list[int]:
        return [e.index for e in self.of(("fsync", "fdatasync"), path)]


def _merge_unfinished(lines: list[str]) -> list[str]:
    """Join ``<unfinished ...>`` / ``<... call resumed>`` pairs (strace -f, several threads)."""
    pending: dict[str, str] = {}
    out = []
    for line in lines:
        pid = line.split(None, 1)[0] if line.strip() else ""
        if line.endswith("<unfinished ...>"):
            pending[pid] = line[: -len("<unfinished ...>")].rstrip()
            continue
        resumed = re.match(r"^(\d+)\s+<\.\.\. \w+ resumed>(.*)$", line)
        if resumed and resumed.group(1) in pending:
            out.append(pending.pop(resumed.group(1)) + resumed.group(2))
            continue
        out.append(line)
    return out


def parse(text: str) -> Trace:
    trace = Trace()
    fds: dict[int, str] = {}
    for line in _merge_unfinished(text.splitlines()):
        match = _LINE.match(line)
        if match is None or match.group(4) in ("?",) or int(match.group(4)) < 0:
            continue
        call, args, result = match.group(2), match.group(3), int(match.group(4))
        strings = _STR.findall(args)
        index = len(trace.events)
        if call == "openat" and strings:
            fds[result] = strings[0]
            trace.events.append(Event(index, call, strings[0]))
        elif call == "close":
            fds.pop(int(args.split(",")[0]), None)
        elif call in ("write", "pwrite64", "fsync", "fdatasync"):
            fd = int(args.split(",", 1)[0])
            offset = int(args.rsplit(",", 1)[1]) if call == "pwrite64" else None
            data = strings[0] if strings else ""
            trace.events.append(Event(index, call, fds.get(fd), data=data, size=result, offset=offset))
        elif call in ("link", "linkat", "rename", "renameat", "renameat2") and len(strings) >= 2:
            kind = "link" if call.startswith("link") else "rename"
            trace.events.append(Event(index, kind, strings[0], strings[1]))
        elif call == "unlink" and strings:
            trace.events.append(Event(index, call, strings[0]))
    return trace


def _strace(tmp_path: Path, root: Path, *args: str) -> Trace:
    out = tmp_path / f"trace-{args[0]}.txt"
    proc = sup.run(root, *args, prefix=["strace", "-f", "-qq", "-s", "16384", "-e", f"trace={SYSCALLS}", "-o", str(out)])
    assert proc.returncode == 0, proc.stderr
    return parse(out.read_text(errors="replace"))


def assert_durable_publication(trace: Trace, final: str, *, kind: str) -> tuple[int, int]:
    """temp opened → written → fsync(temp) → link/rename to ``final`` → fsync(folder).

    Returns the indices of the link/rename and of the folder fsync."""
    moves = [e for e in trace.of(kind) if e.target == final]
    assert moves, f"no {kind} onto {final}"
    move = moves[-1]
    tmp = move.path
    assert tmp is not None and Path(tmp).parent == Path(final).parent, (tmp, final)
    opened = [e.index for e in trace.of("openat", tmp) if e.index < move.index]
    assert opened, f"{tmp} was not created before the {kind}"
    writes = [e.index for e in trace.of(("write", "pwrite64"), tmp) if e.index < move.index]
    syncs = [i for i in trace.syncs(tmp) if i < move.index]
    assert syncs, f"{tmp} was never fsynced before it became {final}"
    assert all(w < syncs[-1] for w in writes), f"{tmp}: a write after its last fsync"
    assert opened[0] < syncs[-1] < move.index  # created, then synced (a later open may only read it)
    folder = str(Path(final).parent)
    dir_syncs = [i for i in trace.syncs(folder) if i > move.index]
    assert dir_syncs, f"folder {folder} not fsynced after the {kind} onto {final}"
    return move.index, dir_syncs[0]


@pytest.fixture(scope="module")
def strace_bin() -> str:
    found = shutil.which("strace")
    if found is None:
        from conftest import unavailable

        unavailable("`strace` not found on PATH (installed by `make bootstrap`)")
    return found


def test_commit_publishes_every_blob_durably_before_the_ref(strace_bin: str, tmp_path: Path) -> None:
    root = tmp_path / "registry"
    name = "example.com/rel/strace:v1"
    trace = _strace(tmp_path, root, "commit", name)
    from ommx_experiment.engine.registry import LocalRegistry

    registry = LocalRegistry.at(root)
    manifest = registry.resolve(name)
    assert manifest is not None
    blob_dir = str(root / "blobs" / "sha256")
    linked = {Path(e.target).name: e for e in trace.of("link") if e.target and Path(e.target).parent == Path(blob_dir)}
    assert linked and all(_HEX.match(n) for n in linked)
    wal = str(root / "index.sqlite3-wal")
    hexd = manifest.removeprefix("sha256:")
    ref_writes = [e.index for e in trace.of("pwrite64", wal) if hexd in e.data]
    assert ref_writes, "no WAL frame carries the ref of the committed manifest"
    ref_write = ref_writes[0]
    assert any(i > ref_write for i in trace.syncs(wal)), "the ref transaction was not synced"
    closure = {d.removeprefix("sha256:") for d, _ in registry.closure(manifest)}
    assert closure <= set(linked), "every closure blob was created by this commit (fresh root)"
    for hex_name in closure:
        _, dir_sync = assert_durable_publication(trace, f"{blob_dir}/{hex_name}", kind="link")
        assert dir_sync < ref_write, f"blob {hex_name} became durable only after the ref was written"
    for hex_name in set(linked) - closure:  # pins, drafts: the same protocol
        assert_durable_publication(trace, f"{blob_dir}/{hex_name}", kind="link")
    # Every blob (the experiment-level attachment and its pin, written together in one publish
    # window, included) is durable under its name before the first WAL frame that names it:
    # a ref, an OMMX cache row or a journal row. Except an inline attachment: its journal row
    # holds the bytes and names their digest before any blob exists (spec/experiment.md, "Inline
    # attachments"); the commit stores it, and the closure check above has it durable before the ref.
    inline_hex = sha256_digest(INLINE_NOTE).removeprefix("sha256:")
    assert inline_hex in closure
    for hex_name in set(linked) - {inline_hex}:
        _, dir_sync = assert_durable_publication(trace, f"{blob_dir}/{hex_name}", kind="link")
        named = [e.index for e in trace.of("pwrite64", wal) if hex_name in e.data]
        assert not named or dir_sync < named[0], f"a WAL frame names blob {hex_name} before its name is durable"
    # index.json: a regeneration (here: the fresh root's first one) is temp → fsync → rename →
    # fsync(root); every later ref write patches it in place after its ref is durable.
    index = str(root / "index.json")
    renames = [e for e in trace.of("rename") if e.target == index]
    assert renames
    assert_durable_publication(trace, index, kind="rename")
    assert_in_place_view_writes(trace, index, wal, manifest, ref_write)
    # oci-layout: created once, no clobber
    assert_durable_publication(trace, str(root / "oci-layout"), kind="link")


def assert_in_place_view_writes(trace: Trace, index: str, wal: str, manifest: str, ref_write: int) -> None:
    """index.json patches: each ``pwrite64`` stays inside one 4 KiB page (a SIGKILL never
    leaves half of one), the entry of a ref is written only after that ref's WAL frame is
    synced, and each patch ends by writing the view generation into the header."""
    from ommx_experiment.engine import layout_view

    patches = trace.of("pwrite64", index)
    assert patches, "the commit's ref writes patched index.json in place"
    for e in patches:
        assert e.offset is not None and e.size > 0
        assert e.offset // 4096 == (e.offset + e.size - 1) // 4096, f"pwrite at {e.offset}+{e.size} spans pages"
    entry = [e.index for e in patches if manifest in e.data]
    assert entry, "no in-place write lists the committed manifest"
    assert any(ref_write < i < entry[0] for i in trace.syncs(wal)), "the view listed the ref before it was durable"
    header_end = len(layout_view.header_bytes("0" * 16, 0))
    assert patches[-1].offset is not None and patches[-1].offset + patches[-1].size <= header_end


def test_archive_save_is_temp_fsync_link_dirsync(strace_bin: str, tmp_path: Path) -> None:
    root = tmp_path / "registry"
    name = "example.com/rel/strace:save"
    assert sup.run(root, "commit", name).returncode == 0
    out = tmp_path / "out" / "saved.ommx"
    out.parent.mkdir()
    trace = _strace(tmp_path, root, "save", name, str(out))
    assert out.exists()
    assert_durable_publication(trace, str(out), kind="link")


def test_the_parser_sees_a_missing_fsync() -> None:
    """The checker itself can fail: a trace that renames before fsync is rejected."""
    text = "\n".join(
        [
            '1 openat(AT_FDCWD, "/r/.t.tmp", O_WRONLY|O_CREAT|O_EXCL, 0600) = 3',
            '1 write(3, "abc", 3) = 3',
            '1 rename("/r/.t.tmp", "/r/index.json") = 0',
            '1 fsync(3 <unfinished ...>',
            "1 <... fsync resumed>) = 0",
            '1 openat(AT_FDCWD, "/r", O_RDONLY|O_DIRECTORY) = 4',
            "1 fsync(4) = 0",
        ]
    )
    trace = parse(text)
    assert [e.call for e in trace.events] == ["openat", "write", "rename", "fsync", "openat", "fsync"]
    with pytest.raises(AssertionError, match="never fsynced"):
        assert_durable_publication(trace, "/r/index.json", kind="rename")


def test_the_checker_sees_a_patch_spanning_pages() -> None:
    """An index.json pwrite across a page boundary is rejected by the checker."""
    text = "\n".join(
        [
            '1 openat(AT_FDCWD, "/r/index.sqlite3-wal", O_RDWR) = 3',
            '1 pwrite64(3, "sha256:aa", 9, 0) = 9',
            "1 fsync(3) = 0",
            '1 openat(AT_FDCWD, "/r/index.json", O_WRONLY) = 4',
            '1 pwrite64(4, "sha256:aa", 300, 4000) = 300',
        ]
    )
    trace = parse(text)
    assert trace.of("pwrite64", "/r/index.json")[0].offset == 4000
    with pytest.raises(AssertionError, match="spans pages"):
        assert_in_place_view_writes(trace, "/r/index.json", "/r/index.sqlite3-wal", "sha256:aa", 1)


def test_import_stages_syncs_then_links_every_blob_before_the_ref(strace_bin: str, tmp_path: Path) -> None:
    """An import (and a pull: the same :class:`Staging`) fsyncs each staged blob on a helper
    thread, but links none before all are synced, and syncs the folder before the ref."""
    source = tmp_path / "source"
    name = "example.com/rel/strace:import"
    assert sup.run(source, "commit", name).returncode == 0
    archive = tmp_path / "a.ommx"
    assert sup.run(source, "save", name, str(archive)).returncode == 0
    root = tmp_path / "registry"
    trace = _strace(tmp_path, root, "import-dump", str(archive))
    from ommx_experiment.engine.registry import LocalRegistry

    registry = LocalRegistry.at(root)
    manifest = registry.resolve(name)
    assert manifest is not None
    blob_dir = str(root / "blobs" / "sha256")
    wal = str(root / "index.sqlite3-wal")
    ref_writes = [e.index for e in trace.of("pwrite64", wal) if manifest.removeprefix("sha256:") in e.data]
    assert ref_writes, "no WAL frame carries the ref of the imported manifest"
    closure = [d.removeprefix("sha256:") for d, _ in registry.closure(manifest)]
    moves = []
    for hex_name in closure:
        move, dir_sync = assert_durable_publication(trace, f"{blob_dir}/{hex_name}", kind="link")
        assert dir_sync < ref_writes[0], f"blob {hex_name} became durable only after the ref was written"
        moves.append(move)
    staged = {e.path for e in trace.of("link") if e.target and Path(e.target).parent == Path(blob_dir)}
    last_sync = max(i for path in staged if path for i in trace.syncs(path))
    assert last_sync < min(moves), "a staged blob was linked before every staged blob was synced"
