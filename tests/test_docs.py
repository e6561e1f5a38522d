"""The documents name tests and files that exist: a renamed test or moved module shows up here.

docs/reliability.md and docs/security.md prove their claims by naming tests; a claim whose test was
renamed or deleted would otherwise go on reading as proved.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
TEST_REFERENCE = re.compile(r"`((?:tests/)?[a-z_/]+\.py)::([A-Za-z_][A-Za-z0-9_]*)`")
PATH_REFERENCE = re.compile(r"`((?:plldb|tests|docs|examples|scripts|bench)/[A-Za-z0-9_./-]+)`")


def defined_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
    }


def references(pattern: re.Pattern[str]) -> list[pytest.ParameterSet]:
    found = {
        (document.relative_to(ROOT).as_posix(), match.groups())
        for document in DOCUMENTS
        for match in pattern.finditer(document.read_text(encoding="utf-8"))
    }
    return [pytest.param(doc, ref, id=f"{doc}:{'::'.join(ref)}") for doc, ref in sorted(found)]


@pytest.mark.parametrize(("document", "reference"), references(TEST_REFERENCE))
def test_every_test_a_document_names_exists(document: str, reference: tuple[str, str]):
    file, name = reference
    path = ROOT / (file if file.startswith("tests/") else f"tests/{file}")
    assert path.is_file(), f"{document} names {file}, which does not exist"
    assert name in defined_names(path), f"{document} names {file}::{name}, which does not exist"


@pytest.mark.parametrize(("document", "reference"), references(PATH_REFERENCE))
def test_every_file_a_document_names_exists(document: str, reference: tuple[str]):
    (path,) = reference
    if any(ch in path for ch in "*{<"):
        pytest.skip("a pattern, not a path")
    assert (ROOT / path.rstrip("/")).exists(), f"{document} names {path}, which does not exist"
