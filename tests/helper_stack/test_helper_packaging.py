"""The handlers and layer zips: deterministic, with the agreed layout and permissions."""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

from plldb.bootstrap import packaging

ROOT = packaging.PACKAGE_ROOT.parent


def _entries(data: bytes) -> dict[str, zipfile.ZipInfo]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {info.filename: info for info in archive.infolist()}


def test_both_archives_are_byte_for_byte_reproducible():
    assert packaging.build_handlers_zip() == packaging.build_handlers_zip()
    assert packaging.build_layer_zip() == packaging.build_layer_zip()
    assert packaging.sha256_hex(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_the_handlers_zip_keeps_the_package_path_of_every_handler_and_of_the_instrumentation():
    names = sorted(_entries(packaging.build_handlers_zip()))
    handlers = [
        f"plldb/bootstrap/cloudformation/handlers/{p.name}" for p in packaging.HANDLERS_DIR.glob("*.py")
    ]
    instrumentation = [f"plldb/instrumentation/{p.name}" for p in packaging.INSTRUMENTATION_DIR.glob("*.py")]
    assert names == sorted(
        [
            "plldb/__init__.py",
            "plldb/protocol.py",
            "plldb/lambda_common.py",
            "plldb/bootstrap/__init__.py",
            "plldb/bootstrap/cloudformation/__init__.py",
            *handlers,
            *instrumentation,
        ]
    )
    assert {
        "plldb/bootstrap/cloudformation/handlers/routes.py",
        "plldb/bootstrap/cloudformation/handlers/dispatcher.py",
        "plldb/bootstrap/cloudformation/handlers/manager.py",
        "plldb/bootstrap/cloudformation/handlers/common.py",
        "plldb/instrumentation/functions.py",
        "plldb/instrumentation/decisions.py",
    } <= set(names)
    assert not [name for name in names if "/local/" in name or "/cli/" in name or "/layer/" in name]


def test_the_layer_zip_lives_under_plldb_debugger_with_an_executable_wrapper():
    entries = _entries(packaging.build_layer_zip())
    layer_modules = sorted(
        f"plldb-debugger/plldb/bootstrap/cloudformation/layer/{p.name}"
        for p in packaging.LAYER_DIR.glob("*.py")
    )
    expected = [
        "plldb-debugger/plldb/__init__.py",
        "plldb-debugger/plldb/protocol.py",
        "plldb-debugger/plldb/lambda_common.py",
        "plldb-debugger/plldb/bootstrap/__init__.py",
        "plldb-debugger/plldb/bootstrap/cloudformation/__init__.py",
        *layer_modules,
        *(
            f"plldb-debugger/plldb/lambda_python/{name}"
            for name in ("__init__.py", "context.py", "errors.py", "handlers.py", "logs.py", "marshalling.py")
        ),
    ]
    if (packaging.LAYER_DIR / "wrapper").is_file():
        expected.append("plldb-debugger/wrapper")
        assert stat.S_IMODE(entries["plldb-debugger/wrapper"].external_attr >> 16) == 0o755
    assert sorted(entries) == sorted(expected)
    for name, info in entries.items():
        assert info.date_time == (1980, 1, 1, 0, 0, 0)
        if name != "plldb-debugger/wrapper":
            assert stat.S_IMODE(info.external_attr >> 16) == 0o644


def test_a_changed_file_changes_the_archive_hash(tmp_path: Path):
    source = tmp_path / "module.py"
    source.write_text("A = 1\n")
    first = packaging.build_zip([("plldb/module.py", source)])
    source.write_text("A = 2\n")
    second = packaging.build_zip([("plldb/module.py", source)])
    assert packaging.sha256_hex(first) != packaging.sha256_hex(second)


def test_lambda_source_files_are_every_python_file_packaged():
    """tests/test_lambda_imports.py checks what these files import, on each Lambda Python."""
    packaged = {
        path for _, path in packaging.handler_files() + packaging.layer_files() if path.suffix == ".py"
    }
    assert set(packaging.LAMBDA_SOURCE_FILES) == packaged
