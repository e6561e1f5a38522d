"""The local cloud's one account and its defaults."""

from __future__ import annotations

ACCOUNT_ID = "123456789012"  # moto's default account: every resource of the local cloud lives in it
DEFAULT_REGION = "us-east-1"
