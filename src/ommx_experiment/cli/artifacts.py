"""Moving artifacts: ``inspect``, ``export``, ``import``, ``push``, ``pull``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from . import common as c

# --- inspect --------------------------------------------------------------------------------------


def cmd_inspect(args: argparse.Namespace) -> int:
    target = Path(args.target)
    if target.exists():
        found = _inspect_archive(target)
    else:
        found = _inspect_ref(args, _name_or_usage(args.target))
    if args.json:
        c.emit_json(found)
    else:
        sys.stdout.write(json.dumps(found["manifest"], indent=2, ensure_ascii=False) + "\n")
    return 0


def _name_or_usage(text: str) -> str:
    try:
        return c.image_name(text)
    except argparse.ArgumentTypeError as exc:
        raise c.UsageError(f"{text!r} is neither an existing archive/directory nor a valid image name: {exc}") from None


def _inspect_archive(path: Path) -> dict[str, Any]:
    from ..lifecycle.artifact import Artifact

    found = Artifact.inspect_archive(path)
    return {
        "source": str(path),
        "image_name": found.image_name,
        "manifest_digest": found.manifest_digest,
        "manifest": found.manifest.to_dict(),
    }


def _inspect_ref(args: argparse.Namespace, name: str) -> dict[str, Any]:
    registry = c.open_registry(args)
    digest = c.require_local(args, name)
    data, _ = registry.read_manifest(digest)
    return {"source": str(registry.root), "image_name": name, "manifest_digest": digest, "manifest": json.loads(data)}


# --- export / import ------------------------------------------------------------------------------


def cmd_export(args: argparse.Namespace) -> int:
    from ..lifecycle.artifact import Artifact

    c.use_root(args)
    c.require_local(args, args.name)
    artifact = Artifact.load(args.name)
    artifact.save(args.file)
    sys.stdout.write(c.label("Exported", f"{artifact.image_name} -> {args.file}") + "\n")
    sys.stdout.write(c.label("Digest", artifact.manifest_digest) + "\n")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from ..lifecycle.artifact import Artifact

    c.use_root(args)
    registry = c.open_registry(args)
    original = Artifact.inspect_archive(args.file).image_name if args.name else None
    existed = original is not None and registry.resolve(original) is not None
    artifact = Artifact.import_archive(args.file)
    name = artifact.image_name
    if args.name and args.name != name:
        registry.alias(args.name, artifact.manifest_digest)  # publish: refuses a name that points elsewhere
        if not existed:  # the archive's own name was only a step on the way
            registry.remove(name, expected_digest=artifact.manifest_digest)
        name = args.name
    sys.stdout.write(c.label("Imported", name) + "\n")
    sys.stdout.write(c.label("Digest", artifact.manifest_digest) + "\n")
    return 0


# --- push / pull ----------------------------------------------------------------------------------


def cmd_push(args: argparse.Namespace) -> int:
    from ..lifecycle.artifact import Artifact

    c.use_root(args)
    c.require_local(args, args.name)
    artifact = Artifact.load(args.name)
    artifact.push()
    sys.stdout.write(c.label("Pushed", artifact.image_name) + "\n")
    sys.stdout.write(c.label("Digest", artifact.manifest_digest) + "\n")
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from ..lifecycle.artifact import Artifact

    c.use_root(args)
    before = c.open_registry(args).resolve(args.name)
    artifact = Artifact.load(args.name)
    verb = "Present" if before == artifact.manifest_digest else "Pulled"
    sys.stdout.write(c.label(verb, artifact.image_name) + "\n")
    sys.stdout.write(c.label("Digest", artifact.manifest_digest) + "\n")
    return 0


# --- registration -----------------------------------------------------------------------------------


def register(sub: Any, root: argparse.ArgumentParser, js: argparse.ArgumentParser) -> None:
    p = c.add_command(
        sub, "inspect", cmd_inspect, parents=[root, js],
        summary="print the manifest JSON of a local image, a .ommx archive or an OCI layout directory",
        description="Print the OCI manifest (pretty JSON). A path that exists is read as an archive or "
        "layout directory without importing it; anything else is a local image name.",
        example="ommx-experiment inspect example.com/team/sweep:v1\nommx-experiment inspect sweep.ommx",
    )
    p.add_argument("target", metavar="NAME|ARCHIVE", help="image name, .ommx file or OCI layout directory")

    p = c.add_command(
        sub, "export", cmd_export, parents=[root],
        summary="write a local image as a .ommx archive (OMMX 3 compatible; FILE must not exist)",
        example="ommx-experiment export example.com/team/sweep:v1 sweep.ommx",
    )
    c.add_name(p)
    p.add_argument("file", metavar="FILE", type=Path, help="archive to create")

    p = c.add_command(
        sub, "import", cmd_import, parents=[root],
        summary="import a .ommx archive or an OCI layout directory into the Local Registry",
        example="ommx-experiment import sweep.ommx\nommx-experiment import sweep.ommx --name example.com/me/sweep:copy",
    )
    p.add_argument("file", metavar="FILE", type=Path, help=".ommx file or OCI layout directory")
    p.add_argument("--name", metavar="NAME", type=c.image_name, help="publish under NAME instead of the archive's ref name")

    p = c.add_command(
        sub, "push", cmd_push, parents=[root],
        summary="push a local image to the remote registry its name points to",
        example="ommx-experiment push ghcr.io/my-org/sweep:v1",
    )
    c.add_name(p, "image name (not a .ommx.local name)")

    p = c.add_command(
        sub, "pull", cmd_pull, parents=[root],
        summary="pull an image from its remote registry into the Local Registry",
        example="ommx-experiment pull ghcr.io/my-org/sweep:v1",
    )
    c.add_name(p)
