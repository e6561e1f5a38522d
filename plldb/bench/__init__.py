"""`make bench` (``python -m plldb.bench``): what plldb costs, measured on the local cloud.

overhead.py measures the layer against the floor of the same network hops at several concurrencies,
with DynamoDB requests per invocation and per second at a breakpoint; attach_bench.py times the real
`plldb attach` command (attach, detach, payload round trips). report.py writes bench/results/.
docs/performance.md explains every figure and what dominates it.
"""
