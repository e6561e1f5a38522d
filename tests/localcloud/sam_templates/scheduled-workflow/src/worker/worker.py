"""Worker: processes job messages from the queue."""


def handle(event, context):
    return {"processed": len(event.get("Records", []))}
