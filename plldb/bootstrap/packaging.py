"""Build the helper stack's Lambda assets: the handlers zip and the debugger layer zip.

Both archives are deterministic (sorted entries, fixed timestamps and permissions, fixed compression)
so their SHA-256 changes exactly when a packaged file changes; `plldb bootstrap setup` uploads them
under content-hash keys, which makes an unchanged setup a no-op and a changed file a redeploy.
"""

from __future__ import annotations

import hashlib
import io
import stat
import zipfile
from pathlib import Path

from plldb.protocol import LAYER_DIRECTORY

PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # the `plldb` package directory
CLOUDFORMATION_DIR = PACKAGE_ROOT / "bootstrap" / "cloudformation"
HANDLERS_DIR = CLOUDFORMATION_DIR / "handlers"
LAYER_DIR = CLOUDFORMATION_DIR / "layer"
TEMPLATE_PATH = CLOUDFORMATION_DIR / "template.yaml"
WRAPPER_NAME = "wrapper"

FIXED_TIMESTAMP = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can carry
FILE_MODE = 0o644
EXECUTABLE_MODE = 0o755

# The Lambda-side modules both archives carry, keeping their package path (plldb/...).
SHARED_MODULES = (
    "__init__.py",
    "protocol.py",
    "lambda_common.py",
    "bootstrap/__init__.py",
    "bootstrap/cloudformation/__init__.py",
)
# Only the helper stack's functions restore functions of dead sessions: the layer never needs these.
INSTRUMENTATION_DIR = PACKAGE_ROOT / "instrumentation"
# The Python runtime's behaviour, which the layer reproduces (the local worker shares it).
LAMBDA_PYTHON_DIR = PACKAGE_ROOT / "lambda_python"


def _package_file(relative: str) -> tuple[str, Path]:
    """(archive name under plldb/, source path) for a file of the plldb package."""
    return "plldb/" + relative, PACKAGE_ROOT / relative


def handler_files() -> list[tuple[str, Path]]:
    """Archive names and sources of the handlers zip (its root is the function's task root)."""
    files = [_package_file(relative) for relative in SHARED_MODULES]
    for folder in (HANDLERS_DIR, INSTRUMENTATION_DIR):
        files += [
            _package_file(path.relative_to(PACKAGE_ROOT).as_posix()) for path in sorted(folder.glob("*.py"))
        ]
    return sorted(files)


def layer_files() -> list[tuple[str, Path]]:
    """Archive names and sources of the layer zip: all under plldb-debugger/ (unpacked to /opt)."""
    files = [_package_file(relative) for relative in SHARED_MODULES]
    for folder in (LAYER_DIR, LAMBDA_PYTHON_DIR):
        files += [
            _package_file(path.relative_to(PACKAGE_ROOT).as_posix()) for path in sorted(folder.glob("*.py"))
        ]
    entries = [(f"{LAYER_DIRECTORY}/{name}", path) for name, path in files]
    wrapper = LAYER_DIR / WRAPPER_NAME
    if wrapper.is_file():
        entries.append((f"{LAYER_DIRECTORY}/{WRAPPER_NAME}", wrapper))
    return sorted(entries)


def _lambda_source_files() -> tuple[Path, ...]:
    sources = {path for _, path in handler_files() + layer_files() if path.suffix == ".py"}
    return tuple(sorted(sources))


# Every Python file that runs inside Lambda (stdlib + boto3 only, Python 3.10 to 3.13).
LAMBDA_SOURCE_FILES: tuple[Path, ...] = _lambda_source_files()


def build_zip(entries: list[tuple[str, Path]], executables: frozenset[str] = frozenset()) -> bytes:
    """A zip whose bytes depend only on the entries' names and contents."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, path in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=FIXED_TIMESTAMP)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # Unix, so external_attr carries the permission bits
            mode = EXECUTABLE_MODE if name in executables else FILE_MODE
            info.external_attr = (stat.S_IFREG | mode) << 16
            archive.writestr(info, path.read_bytes(), compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    return buffer.getvalue()


def build_handlers_zip() -> bytes:
    return build_zip(handler_files())


def build_layer_zip() -> bytes:
    return build_zip(layer_files(), executables=frozenset({f"{LAYER_DIRECTORY}/{WRAPPER_NAME}"}))


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def template_body() -> str:
    return TEMPLATE_PATH.read_text(encoding="utf-8")
