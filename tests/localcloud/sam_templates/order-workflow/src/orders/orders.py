"""Order handlers, each a Lambda task of the orders state machine."""

import os

import boto3

PRICES = {"pen": 3, "ink": 7, "desk": 120}


class InvalidOrder(Exception):
    pass


class StockUnavailable(Exception):
    pass


def validate(order, context):
    print(f"validating {order['id']}")
    if not order.get("items"):
        raise InvalidOrder(f"order {order['id']} has no items")
    total = sum(PRICES[item["sku"]] * item["qty"] for item in order["items"])
    return {"valid": True, "items": len(order["items"]), "total": total}


def price(item, context):
    return {"sku": item["sku"], "qty": item["qty"], "amount": PRICES[item["sku"]] * item["qty"]}


def reserve(request, context):
    """Fails with StockUnavailable for the order's first failTimes attempts (counted in DynamoDB)."""
    attempts = boto3.client("dynamodb").update_item(
        TableName=os.environ["ATTEMPTS_TABLE"],
        Key={"OrderId": {"S": request["orderId"]}},
        UpdateExpression="ADD Attempts :one",
        ExpressionAttributeValues={":one": {"N": "1"}},
        ReturnValues="UPDATED_NEW",
    )["Attributes"]["Attempts"]["N"]
    if int(attempts) <= request["failTimes"]:
        raise StockUnavailable(f"attempt {attempts} for {request['orderId']}")
    return {"reserved": True, "attempts": int(attempts)}


def notify(message, context):
    return {"message": f"order {message['orderId']}: {len(message['lines'])} lines"}
