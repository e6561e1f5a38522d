"""The one patching mechanism of the moto extensions: patch, original, restore."""

from __future__ import annotations

from plldb.localcloud.moto_extensions import core


class Target:
    def greet(self) -> str:
        return "moto"

    @classmethod
    def build(cls) -> str:
        return "built"


def test_patch_keeps_the_original_and_restore_gives_it_back():
    def greet(self: Target) -> str:
        return "patched " + core.original(Target, "greet")(self)

    core.patch(Target, "greet", greet, group="test-greet")
    core.patch(Target, "added", "new", group="test-greet")
    core.patch(Target, "greet", lambda self: "again", group="test-greet")  # the first original is kept
    assert core.original(Target, "greet")(Target()) == "moto"
    assert Target().greet() == "again"
    core.restore("test-greet")
    assert Target().greet() == "moto"
    assert not hasattr(Target, "added")
    assert core.original(Target, "greet")(Target()) == "moto"


def test_a_patched_classmethod_keeps_its_bound_original():
    core.patch(Target, "build", classmethod(lambda cls: "rebuilt"), group="test-build")
    assert (Target.build(), core.original(Target, "build")()) == ("rebuilt", "built")
    core.restore("test-build")
    assert Target.build() == "built"
