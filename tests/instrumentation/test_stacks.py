"""Stacks as plldb sees them: a name or a StackId resolved to one live stack, and all of its functions."""

from __future__ import annotations

import pytest

from plldb.instrumentation import stacks


@pytest.fixture(scope="module")
def deployed(plldb, app) -> dict[str, str]:
    role = app.new_role()
    stack_id = app.create_stack(
        {
            "HelloFunction": app.function_resource(role, {"GREETING": "hello"}),
            "Topic": {"Type": "AWS::SNS::Topic"},
        },
        nested={
            "Api": {"Handler": app.function_resource(role), "Queue": {"Type": "AWS::SQS::Queue"}},
            "Workers": {"Worker": app.function_resource(role)},
        },
    )
    return {"id": stack_id, "name": stack_id.split("/")[1]}


def test_a_name_and_its_stack_id_resolve_to_the_same_stack(plldb, deployed):
    by_name = stacks.resolve_stack(plldb.cloudformation, deployed["name"])
    by_id = stacks.resolve_stack(plldb.cloudformation, deployed["id"])
    assert by_name == by_id == stacks.Stack(deployed["id"], deployed["name"], "CREATE_COMPLETE")


@pytest.mark.parametrize(
    "reference", ["no-such-stack", "arn:aws:cloudformation:us-east-1:123456789012:stack/gone/1a2b"]
)
def test_a_stack_that_does_not_exist_resolves_to_nothing(plldb, reference):
    assert stacks.resolve_stack(plldb.cloudformation, reference) is None


@pytest.mark.parametrize(
    "reference", ["", "has space", "bad_name", "arn:aws:s3:::bucket", "x" * 2000, "name\n"]
)
def test_what_is_not_a_stack_reference_is_never_sent_to_cloudformation(plldb, reference):
    plldb.recorder.take()
    assert stacks.resolve_stack(plldb.cloudformation, reference) is None
    assert plldb.recorder.take() == []


def test_a_deleted_stack_resolves_to_nothing_by_its_stack_id(plldb, app):
    stack_id = app.create_stack({"Topic": {"Type": "AWS::SNS::Topic"}})
    app.cloudformation.delete_stack(StackName=stack_id)
    assert stacks.resolve_stack(plldb.cloudformation, stack_id) is None


def test_every_function_of_the_stack_and_its_nested_stacks_is_found_with_its_path(plldb, app, deployed):
    found = stacks.list_stack_functions(plldb.cloudformation, deployed["id"])

    assert sorted(f.path for f in found) == ["Api/Handler", "HelloFunction", "Workers/Worker"]
    assert {f.path: f.logical_id for f in found} == {
        "Api/Handler": "Handler",
        "HelloFunction": "HelloFunction",
        "Workers/Worker": "Worker",
    }
    names = stacks.function_names(found)
    assert {name: f.path for name, f in names.items()} == {f.function_name: f.path for f in found}
    for function in found:
        assert app.configuration(function.function_name)["FunctionName"] == function.function_name
