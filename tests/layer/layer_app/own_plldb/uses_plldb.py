import plldb


def handler(event, context):
    return {"value": plldb.VALUE, "file": plldb.__file__}
