"""Instrumenting and restoring Lambda functions: shared by the developer's plldb and the helper stack.

The developer's plldb uses all of it with the developer's own credentials; the helper stack's manager
uses only the restore, to remove plldb's own additions from the functions of a session that died.
Standard library and boto3 only: it is packaged into the helper stack's Lambda functions.

- ``decisions``: what plldb changes on a function and how to undo it exactly (pure, no AWS calls);
- ``lambda_updates``: Lambda's rules for changing a function (one update at a time, revisions);
- ``functions``: instrument and restore one function, its aliases and its role;
- ``stacks``: a stack reference resolved to its StackId, and the functions it holds.
"""
