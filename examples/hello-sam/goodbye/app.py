"""GoodbyeFunction: says goodbye. Same handler name as HelloFunction, in a different CodeUri folder."""

import os

import shared_util


def lambda_handler(event, context):
    """Return a farewell with the event echoed back."""
    name = event.get("name", "world")
    return {
        "function": "goodbye",
        "greeting": os.environ["GREETING"],
        "message": shared_util.format_message("Goodbye", name),
        "input": event,
    }
