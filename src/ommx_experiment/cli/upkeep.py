"""Registry upkeep: ``rm``, ``restore-ref``, ``gc``, ``prune-anonymous``, ``recover``, ``sync``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from . import common as c

STORAGE_NOTE = "blobs stay until `ommx-experiment gc --delete` removes unreachable ones"


# --- rm / restore-ref -------------------------------------------------------------------------------


def cmd_rm(args: argparse.Namespace) -> int:
    from ..edges.maintenance import remove_image
    from ..errors import RefNotFoundError

    removed = remove_image(args.name, root=c.root_arg(args))
    if removed is None:
        raise RefNotFoundError(f"{args.name} is not in the Local Registry at {c.open_registry(args).root}")
    rollback = c.rollback_command(args, args.name, removed)
    if args.json:
        c.emit_json({"image_name": args.name, "manifest_digest": removed, "rollback": rollback})
        return 0
    out = sys.stdout.write
    out(c.label("Removed", f"{args.name} ({removed})") + "\n")
    out(c.label("Rollback", rollback) + "\n")
    out(c.label("Storage", STORAGE_NOTE) + "\n")
    return 0


def cmd_restore_ref(args: argparse.Namespace) -> int:
    from ..edges.maintenance import restore_image

    inserted = restore_image(args.name, args.digest, root=c.root_arg(args))
    verb = "Restored" if inserted else "Unchanged"
    sys.stdout.write(c.label(verb, f"{args.name} -> {args.digest}") + "\n")
    return 0


# --- gc -------------------------------------------------------------------------------------------


def cmd_gc(args: argparse.Namespace) -> int:
    from ..edges.maintenance import gc
    from ..errors import InvalidInputError

    try:
        report = gc(root=c.root_arg(args), delete=args.delete, grace_period=args.grace_period, exclusive=args.exclusive)
    except InvalidInputError as exc:  # a grace too short to share the root with OMMX 3: a usage error
        raise c.UsageError(str(exc)) from exc
    if args.json:
        c.emit_json(_gc_json(report))
        return 0
    sys.stdout.write(report.summary() + "\n")
    if not args.delete and report.orphan_candidates:
        sys.stdout.write(c.label("Dry Run", "nothing deleted; pass --delete to remove the orphans") + "\n")
    return 0


def _blobs(blobs: Any) -> dict[str, Any]:
    return {"count": len(blobs), "size": sum(b.size for b in blobs), "digests": [b.digest for b in blobs]}


def _gc_json(report: Any) -> dict[str, Any]:
    return {
        "root": str(report.root),
        "delete_applied": report.delete_applied,
        "roots": len(report.roots),
        "reachable": _blobs(report.reachable_blobs),
        "orphan_candidates": _blobs(report.orphan_candidates),
        "deferred": _blobs(report.deferred_blobs),
        "deleted": _blobs(report.deleted_blobs),
        "skipped": _blobs(report.skipped_blobs),
        "missing": [{"digest": m.digest, "kind": m.kind, "referenced_by": m.referenced_by} for m in report.missing_blobs],
        "invalid": [
            {"digest": m.digest, "kind": m.kind, "referenced_by": m.referenced_by, "error": m.error}
            for m in report.invalid_manifests
        ],
    }


# --- prune-anonymous ------------------------------------------------------------------------------------


def cmd_prune_anonymous(args: argparse.Namespace) -> int:
    from ..edges.maintenance import prune_anonymous

    report = prune_anonymous(
        root=c.root_arg(args), delete=args.delete, experiments=args.experiments, older_than=args.older_than
    )
    refs = [_anonymous_json(args, ref, report.delete_applied) for ref in report.refs]
    if args.json:
        c.emit_json({"root": str(report.root), "delete_applied": report.delete_applied, "refs": refs})
        return 0
    _print_prune(report, refs)
    return 0


def _anonymous_json(args: argparse.Namespace, ref: Any, deleted: bool) -> dict[str, Any]:
    out = {"image_name": ref.image_name, "kind": ref.kind, "manifest_digest": ref.digest, "updated_at": ref.updated_at}
    if deleted:
        out["rollback"] = c.rollback_command(args, ref.image_name, ref.digest)
    return out


def _print_prune(report: Any, refs: list[dict[str, Any]]) -> None:
    write = sys.stdout.write
    if not refs:
        write(c.label("Clean", f"no anonymous refs to prune in {report.root}") + "\n")
        return
    out = c.table("NAME", "KIND", "UPDATED", "DIGEST", wide=("NAME", "DIGEST"))
    for ref in refs:
        out.add_row(c.text(ref["image_name"]), ref["kind"], c.when(ref["updated_at"]), c.text(ref["manifest_digest"][:19]))
    c.console().print(out)
    if not report.delete_applied:
        write(c.label("Dry Run", f"{len(refs)} candidate(s); pass --delete to remove them") + "\n")
        return
    write(c.label("Removed", f"{len(refs)} ref(s)") + "\n")
    for ref in refs:
        write(c.label("Rollback", ref["rollback"]) + "\n")
    write(c.label("Storage", STORAGE_NOTE) + "\n")


# --- sync -----------------------------------------------------------------------------------------


def cmd_sync(args: argparse.Namespace) -> int:
    registry = c.open_registry(args)
    entries = registry.sync()
    if args.json:
        c.emit_json({"root": str(registry.root), "entries": entries})
    else:
        sys.stdout.write(c.label("Synced", f"{registry.root / 'index.json'} ({entries} refs)") + "\n")
    return 0


# --- recover -----------------------------------------------------------------------------------------


def cmd_recover(args: argparse.Namespace) -> int:
    from ..edges.recovery import recover
    from ..engine.root import get_local_registry_root

    root = c.root_arg(args) or get_local_registry_root()
    report = recover(root=root, dry_run=args.dry_run, adopt_unreferenced=not args.no_adopt_unreferenced)
    if args.json:
        c.emit_json({
            "root": str(report.root),
            "state": report.state,
            "dry_run": report.dry_run,
            "rebuilt": report.rebuilt,
            "moved_aside": [str(p) for p in report.moved_aside],
            "registry_id": report.registry_id,
            "restored": [vars_of(r) for r in report.restored],
            "skipped": [vars_of(r) for r in report.skipped],
            "journal_rows": report.journal_rows,
            "salvage_errors": list(report.salvage_errors),
            "foreign_entries": report.foreign_entries,
        })
        return 0
    sys.stdout.write(report.summary() + "\n")
    return 0


def vars_of(ref: Any) -> dict[str, str]:
    return {"image_name": ref.image_name, "manifest_digest": ref.manifest_digest, "source": ref.source, "note": ref.note}


# --- registration ----------------------------------------------------------------------------------


def register(sub: Any, root: argparse.ArgumentParser, js: argparse.ArgumentParser) -> None:
    p = c.add_command(
        sub, "rm", cmd_rm, parents=[root, js],
        summary="remove an image ref (blobs stay until gc); prints the rollback command",
        example="ommx-experiment rm example.com/team/sweep:v1",
    )
    c.add_name(p)

    p = c.add_command(
        sub, "restore-ref", cmd_restore_ref, parents=[root],
        summary="re-create a removed ref pointing to a stored manifest (the rollback of rm)",
        example="ommx-experiment restore-ref 'example.com/team/sweep:v1' 'sha256:<64 hex>'",
    )
    c.add_name(p)
    p.add_argument("digest", metavar="DIGEST", type=c.digest, help="manifest digest (sha256:...)")

    p = c.add_command(
        sub, "gc", cmd_gc, parents=[root, js],
        summary="find (dry run, the default) or delete blobs no ref, checkpoint or subject chain reaches",
        example="ommx-experiment gc\nommx-experiment gc --delete\nommx-experiment gc --delete --grace-period 1h --exclusive",
    )
    p.add_argument("--delete", action="store_true", help="delete the orphan blobs (default: report only)")
    p.add_argument("--grace-period", metavar="D", type=c.duration, default="24h",
                   help="keep orphans younger than D: 30s, 15m, 24h, 7d (default: 24h; "
                        "with --delete, shorter than 24h needs --exclusive)")
    p.add_argument("--exclusive", action="store_true",
                   help="assert that no OMMX 3 process writes to this root, allowing --delete with a grace "
                        "shorter than 24h (OMMX 3's in-flight blobs are protected only by their age)")

    p = c.add_command(
        sub, "prune-anonymous", cmd_prune_anonymous, parents=[root, js],
        summary="list (dry run, the default) or remove anonymous refs; run gc afterwards to free space",
        example="ommx-experiment prune-anonymous --experiments --older-than 7d --delete",
    )
    p.add_argument("--delete", action="store_true", help="remove the refs (default: list candidates only)")
    p.add_argument("--experiments", action="store_true", help="include anonymous experiments")
    p.add_argument("--older-than", metavar="D", type=c.duration, help="only refs updated at least D ago")

    p = c.add_command(
        sub, "recover", cmd_recover, parents=[root, js],
        summary="rebuild a lost, emptied or corrupt index.sqlite3 from the damaged file, index.json and the blobs",
        example="ommx-experiment recover --dry-run\nommx-experiment recover --root /data/ommx",
    )
    p.add_argument("--dry-run", action="store_true", help="change nothing; report what would be restored")
    p.add_argument("--no-adopt-unreferenced", action="store_true",
                   help="only list OMMX manifests no ref reaches (default: give each a recovered.local/... ref)")

    c.add_command(
        sub, "sync", cmd_sync, parents=[root, js],
        summary="rebuild index.json (the OCI layout view) from the SQLite index",
        example="ommx-experiment sync --root /data/ommx",
    )
