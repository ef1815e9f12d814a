"""``python -m gateway.openapi_cli`` (also ``python -m gateway.openapi``): the committed files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.openapi_cli import ASYNCAPI_FILE, OPENAPI_FILE, main

ROOT = Path(__file__).resolve().parents[2]


def test_writes_both_documents_as_committed(tmp_path: Path) -> None:
    assert main(["--out", str(tmp_path / "out"), "--proto-root", str(ROOT / "proto")]) == 0
    for name in (OPENAPI_FILE, ASYNCAPI_FILE):
        written = (tmp_path / "out" / name).read_bytes()
        assert written == (ROOT / "openapi" / name).read_bytes(), name


def test_a_directory_without_protos_is_an_error_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--out", str(tmp_path / "out"), "--proto-root", str(tmp_path)]) == 1
    assert f"no .proto files under {tmp_path}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_runs_as_python_dash_m_gateway_openapi(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-W", "error", "-m", "gateway.openapi", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / OPENAPI_FILE).read_bytes() == (ROOT / "openapi" / OPENAPI_FILE).read_bytes()
