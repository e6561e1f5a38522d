#!/bin/sh
# An AWS_LAMBDA_EXEC_WRAPPER that replaces the runtime with another Python program (probe.py).
exec "$1" "$(dirname "$0")/probe.py" "$@"
