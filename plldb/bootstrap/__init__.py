"""The helper stack: its CloudFormation template, Lambda handlers and layer, and the code that deploys it.

Lambda-side code lives under ``plldb.bootstrap.cloudformation`` and may import only the standard
library, boto3/botocore and other Lambda-side modules (enforced by tests/test_lambda_imports.py).
"""
