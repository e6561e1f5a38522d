"""REQUEST authorizer: allows a connection that presents the expected token."""


def handler(event, context):
    token = (event.get("queryStringParameters") or {}).get("token")
    effect = "Allow" if token == "let-me-in" else "Deny"
    return {
        "principalId": "chat-user",
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{"Action": "execute-api:Invoke", "Effect": effect, "Resource": event["methodArn"]}],
        },
    }
