"""The debugger layer: the runtime started by AWS_LAMBDA_EXEC_WRAPPER."""
