"""The attach end-to-end fixtures: the helper stack, a deployed examples/hello-sam, attach as a subprocess."""

from tests.attach.test_attach_e2e import attach_environment, example, helper, start_attach

__all__ = ["attach_environment", "example", "helper", "start_attach"]
