#!/bin/sh
# An AWS_LAMBDA_EXEC_WRAPPER: records the command line it was given, then runs it.
printf '%s\n' "$@" > "$WRAPPER_RECORD"
exec "$@"
