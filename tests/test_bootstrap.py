"""The test infrastructure itself: side venv, registry fixtures, skopeo, bench helpers, CI script."""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import sqlite3
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from types import ModuleType

import pytest
from helpers.oci_registry import OciRegistry
from helpers.ommx3 import Ommx3Driver

REPO_ROOT = Path(__file__).resolve().parent.parent


def _get(url: str, auth: tuple[str, str] | None = None) -> int:
    request = urllib.request.Request(url)
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _load_bench_common() -> ModuleType:
    name = "bench_common_under_test"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "bench" / "_common.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


# --- registry-root isolation ---------------------------------------------------------


def test_each_test_gets_its_own_registry_root(registry_root: Path, tmp_path: Path) -> None:
    assert registry_root == tmp_path / "registry"
    assert os.environ["OMMX_LOCAL_REGISTRY_ROOT"] == str(registry_root)


# --- OMMX 3 side venv ----------------------------------------------------------------


def test_side_venv_has_ommx_3_0_0b7(ommx3: Ommx3Driver, registry_root: Path) -> None:
    out = ommx3.run_json(
        """
        import importlib.metadata, json
        import ommx.experiment
        has = hasattr(ommx.experiment, "Experiment")
        print(json.dumps({"version": importlib.metadata.version("ommx"), "has": has}))
        """,
        root=registry_root,
    )
    assert out == {"version": "3.0.0b7", "has": True}
    assert ommx3.version() == "3.0.0b7"


def test_ommx3_commit_writes_sqlite_index_v2(ommx3: Ommx3Driver, registry_root: Path) -> None:
    out = ommx3.run_json(
        """
        import json
        from ommx.experiment import Experiment
        with Experiment("example.com/bootstrap/exp:v1") as exp:
            with exp.run() as run:
                run.log_parameter("x", 1)
        print(json.dumps({"image_name": exp.image_name}))
        """,
        root=registry_root,
    )
    assert out == {"image_name": "example.com/bootstrap/exp:v1"}
    db = sqlite3.connect(registry_root / "index.sqlite3")
    try:
        assert db.execute("PRAGMA user_version").fetchone() == (2,)
        refs = db.execute("SELECT name, reference, manifest_digest FROM refs").fetchall()
    finally:
        db.close()
    assert [(n, r) for n, r, _ in refs] == [("example.com/bootstrap/exp", "v1")]
    digest = refs[0][2]
    assert digest.startswith("sha256:")
    assert (registry_root / "blobs" / "sha256" / digest.removeprefix("sha256:")).is_file()


def test_ommx3_driver_reports_script_failure_with_stderr(ommx3: Ommx3Driver, registry_root: Path) -> None:
    with pytest.raises(AssertionError, match="boom-from-ommx3-script"):
        ommx3.run("raise SystemExit('boom-from-ommx3-script')", root=registry_root)
    assert ommx3.run("raise SystemExit(3)", root=registry_root, check=False).returncode == 3


def test_ommx3_driver_run_json_rejects_non_json_last_line(ommx3: Ommx3Driver, registry_root: Path) -> None:
    with pytest.raises(AssertionError, match="not JSON"):
        ommx3.run_json("print('{}'); print('not json')", root=registry_root)


def test_ommx3_driver_sets_root_and_hides_pythonpath(
    ommx3: Ommx3Driver, registry_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT / "src"))
    out = ommx3.run_json(
        "import json, os; print(json.dumps([os.environ['OMMX_LOCAL_REGISTRY_ROOT'], os.environ.get('PYTHONPATH')]))",
        root=registry_root,
    )
    assert out == [str(registry_root), None]


# --- loopback OCI registries ---------------------------------------------------------


def test_oci_registry_answers_v2(oci_registry: OciRegistry) -> None:
    assert oci_registry.host.startswith("127.0.0.1:")
    assert oci_registry.url == f"http://{oci_registry.host}"
    assert oci_registry.creds is None
    assert _get(f"{oci_registry.url}/v2/") == 200
    assert Path(f"/proc/{oci_registry.pid}").exists()


def test_oci_registry_auth_requires_credentials(oci_registry_auth: OciRegistry) -> None:
    url = f"{oci_registry_auth.url}/v2/"
    assert (oci_registry_auth.username, oci_registry_auth.password) == ("alice", "s3cret")
    assert _get(url) == 401
    assert _get(url, ("alice", "wrong")) == 401
    assert _get(url, ("alice", "s3cret")) == 200


def test_skopeo_runs(skopeo: Path) -> None:
    out = subprocess.run([str(skopeo), "--version"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("skopeo version ")


# --- benchmark helpers ---------------------------------------------------------------


def test_bench_make_file_writes_exact_size_of_random_bytes(tmp_path: Path) -> None:
    common = _load_bench_common()
    size = 8 * 1024 * 1024 + 123
    path = common.make_file(tmp_path / "f.bin", size)
    data = path.read_bytes()
    assert len(data) == size
    assert data[:4096] != data[8 * 1024 * 1024 : 8 * 1024 * 1024 + 4096]  # chunks differ
    assert common.fmt_mb(size) == 8.0


def test_bench_measure_reports_the_child_peak_not_ours(tmp_path: Path) -> None:
    common = _load_bench_common()
    _, small = common.measure(["true"])
    _, big = common.measure([sys.executable, "-c", "b = bytearray(96 << 20)"])
    assert big >= 96 << 20
    if common.GNU_TIME.exists():
        assert small < 16 << 20  # GNU time isolates the child from this process's RSS
    with pytest.raises(RuntimeError, match="exited 1"):
        common.measure(["false"])


def test_bench_measure_callable_and_run_python(tmp_path: Path) -> None:
    common = _load_bench_common()
    _, peak = common.measure(lambda: bytearray(64 << 20))
    assert peak >= 64 << 20
    result = common.run_python("import json; print('noise'); print(json.dumps({'ok': 1}))", python=Path(sys.executable))
    assert result.data == {"ok": 1}
    assert result.peak_rss_bytes > 0
    with pytest.raises(RuntimeError, match="exited"):
        common.run_python("raise SystemExit(2)", python=Path(sys.executable))


def test_bench_runner_prints_one_table_for_baseline(tmp_path: Path) -> None:
    rows_file = tmp_path / "rows.json"
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "run_all.py"), "baseline", "--json", str(rows_file)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(rows_file.read_text())
    assert {(r["benchmark"], r["impl"]) for r in rows} >= {("baseline", "cp"), ("baseline", "sha256sum")}
    assert all(r["seconds"] > 0 for r in rows)
    assert proc.stdout.count("ommx-experiment benchmarks") == 1
    bad = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "run_all.py"), "no_such_bench"], capture_output=True, text=True
    )
    assert bad.returncode != 0 and "unknown benchmark" in bad.stderr


# --- CI entry point --------------------------------------------------------------------


def test_ci_script_is_executable_and_strict() -> None:
    script = REPO_ROOT / ".ci" / "run"
    assert script.stat().st_mode & stat.S_IXUSR
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text and "make test" in text
