"""Wording shared by every greeter function."""


def compose(name: str) -> str:
    return f"Hello, {name}"
