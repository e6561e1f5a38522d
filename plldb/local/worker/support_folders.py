"""What plldb adds to a worker's path, and nothing more: links to exactly the folders it needs.

A worker runs with ``-S`` and sees none of plldb's installation: the ``plldb`` package only to start
``plldb.local.worker_main`` (the worker drops it before importing the handler), the AWS SDK the
Lambda Python runtime provides, and the debugger's packages. Each comes from a folder of links made
here for the pool's life; ``plldb_installation_paths`` names the folders the worker removes from its
path whatever put them there.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import plldb
from plldb.errors import PlldbError
from plldb.local import debuggers
from plldb.local.debuggers import DebuggerConfig

RUNTIME_SDK_DISTRIBUTIONS = ("boto3",)  # what the Lambda Python runtime includes, with what it imports


def _distribution_entries(names: Iterable[str]) -> list[Path]:
    """The top-level files and folders of these installed distributions and of everything they require."""
    from importlib import metadata

    entries: list[Path] = []
    pending = list(names)
    seen: set[str] = set()
    while pending:
        name = pending.pop(0)
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        seen.add(key)
        try:
            distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        for requirement in distribution.requires or []:
            if "extra ==" in requirement.replace("extra==", "extra =="):
                continue
            match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
            if match:
                pending.append(match.group())
        tops = {
            Path(str(file)).parts[0]
            for file in distribution.files or []
            if Path(str(file)).parts and Path(str(file)).parts[0] not in ("..", "__pycache__")
        }
        for top in sorted(tops):
            path = Path(str(distribution.locate_file(top)))
            if path.exists() and path not in entries:
                entries.append(path)
    return entries


def _link_all(folder: Path, entries: Iterable[Path]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for entry in entries:
        link = folder / entry.name
        if not link.exists():
            os.symlink(entry, link, target_is_directory=entry.is_dir())
    return folder


def plldb_installation_paths() -> list[Path]:
    """Where plldb and its dependencies are installed: never on a handler's path.

    Under debugpy, the worker's debugger imports its own support module from the parent's
    site-packages (``--preimport``), which leaves that folder on the worker's path.
    """
    import site

    paths = [Path(plldb.__file__).parent.parent, *(Path(p) for p in site.getsitepackages())]
    user_site = site.getusersitepackages() if site.ENABLE_USER_SITE else None
    if isinstance(user_site, str):
        paths.append(Path(user_site))
    return paths


class SupportFolders:
    """Folders holding links to exactly what a worker needs from plldb's installation, nothing more.

    ``boot`` has the ``plldb`` package, for ``-m plldb.local.worker_main`` (the worker removes it from
    its path before importing the handler); ``runtime`` has the AWS SDK the Lambda runtime provides;
    ``debugger`` has the debugger's packages (debugpy, or pydevd-pycharm when installed).
    """

    def __init__(self, debugger: DebuggerConfig | None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="plldb-worker-"))
        try:
            self.boot = _link_all(self.root / "boot", [Path(plldb.__file__).parent])
            self.runtime = _link_all(self.root / "runtime", _distribution_entries(RUNTIME_SDK_DISTRIBUTIONS))
            debugger_entries: list[Path] = []
            if debugger is not None and debugger.kind == debuggers.DEBUGPY:
                debugger_entries = _distribution_entries(["debugpy"])
            elif debugger is not None and debugger.kind == debuggers.PYCHARM:
                debugger_entries = _distribution_entries(["pydevd-pycharm"])
            self.debugger = [_link_all(self.root / "debugger", debugger_entries)] if debugger_entries else []
        except OSError as exc:
            self.close()
            raise PlldbError(f"Could not prepare the workers' folders in {self.root}: {exc}.")

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
