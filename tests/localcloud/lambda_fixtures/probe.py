"""A wrapper's own Python program: records what it sees, then hands over to the runtime's command line.

Run as ``"$1" /opt/probe.py "$@"`` by probe_wrapper.sh, where "$@" is the command line Lambda gave the wrapper.
"""

import importlib.util
import json
import os
import sys

with open(os.environ["WRAPPER_RECORD"], "w") as record:
    json.dump(
        {
            "argv": sys.argv[1:],
            "PYTHONPATH": os.environ.get("PYTHONPATH"),
            "sys_path": sys.path,
            "finds_layer_module": importlib.util.find_spec("from_layer_python") is not None,
        },
        record,
    )
os.execv(sys.argv[1], sys.argv[1:])
