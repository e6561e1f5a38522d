"""plldb: run the invocations of deployed Python Lambda functions on your machine, under your debugger.

This module is packaged into the helper stack's Lambda code and the debugger layer, so it must stay
importable with the standard library alone.
"""

__version__ = "0.2.0"
