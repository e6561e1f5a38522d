"""Code that runs inside AWS Lambda: standard library and boto3 only, Python 3.10 to 3.13."""
