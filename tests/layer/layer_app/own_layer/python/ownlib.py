VALUE = "from the function's own layer (/opt/python)"
