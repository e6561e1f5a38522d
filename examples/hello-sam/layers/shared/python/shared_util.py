"""Helpers shared by hello-sam's functions through the SharedLayer layer."""


def format_message(greeting: str, name: str, suffix: str = "") -> str:
    """One greeting line, so both functions word their messages the same way."""
    return f"{greeting}, {name}{suffix}"
