"""API Gateway WebSocket data plane for the local cloud.

Modules: :mod:`.framing` (frames, quotas, close codes), :mod:`.events` (connections, routing and the
event shapes), :mod:`.authorizer` (who may connect), :mod:`.management` (the ``@connections`` API),
:mod:`.server` (the gateway itself).

Serves every WEBSOCKET API found in moto's in-process apigatewayv2 backend the way
``wss://{apiId}.execute-api.{region}.amazonaws.com/{stage}`` behaves on AWS, on one local port:

* ``ws://HOST:PORT/{apiId}/{stage}``: the client endpoint. ``$connect`` runs its REQUEST authorizer and
  its integration while the upgrade request waits; messages go to the route chosen by the API's route
  selection expression (``$default`` otherwise); ``$disconnect`` runs after the connection ends, however
  it ends.
* ``http://HOST:PORT/{apiId}/{stage}/@connections/{connectionId}``: the management API (POST, GET,
  DELETE), so boto3's ``apigatewaymanagementapi`` client works against it unchanged.

Integrations are AWS_PROXY Lambda integrations, invoked through the ``invoke_lambda`` callable with
API Gateway's WebSocket proxy event shapes (MOCK integrations are accepted and do nothing). The AWS
quotas that shape a client's behaviour are enforced and configurable through :class:`WebSocketLimits`.

Behaviour chosen where AWS documents nothing precise (each checked against AWS's docs and reports):

* Message and frame quotas are checked on the raw byte stream, frame by frame, before aiohttp assembles
  messages (:class:`FrameLimitGate`): aiohttp only knows whole-message sizes, while API Gateway also
  refuses any single frame above 32 KB. Either breach closes the connection with 1009 "Message too big".
* Data messages in either direction (client messages, management-API posts, route responses) count as
  activity for the idle timeout; ping/pong control frames are answered but do not count. Idle timeout
  and maximum connection duration both close with 1001 "Going away".
* API Gateway invokes the integration of each message independently: it gives no ordering guarantee
  between a connection's messages and does not wait for one message's integration before the next (AWS
  re:Post answers say so; ordered processing takes an SQS FIFO queue behind the route). This emulator
  hands each message to its route in arrival order without waiting for earlier ones to finish:
  messages of one connection and of different connections run concurrently, at most
  ``WebSocketLimits.messages_in_flight_per_connection`` per connection (a later one waits for a free
  slot before its integration timeout starts).
* ``$disconnect`` runs after the connection's in-flight messages have finished (each is bounded by the
  integration timeout). AWS documents no order here, only that ``$disconnect`` is best-effort and comes
  after the connection closed; the emulator picks the order in which a route never sees messages of a
  connection whose ``$disconnect`` it has already handled.
* A dropped transport (``cut``, ``restart`` or a client vanishing) reaches ``$disconnect`` as
  1006 "Connection closed abnormally"; a client close frame without a status as
  1005 "Client-side close frame status not set", as AWS reports it; DeleteConnection closes with 1000.
"""

from __future__ import annotations

from plldb.localcloud.gateway.authorizer import LambdaFunctionError
from plldb.localcloud.gateway.framing import WebSocketLimits
from plldb.localcloud.gateway.server import WebSocketGateway

__all__ = ["LambdaFunctionError", "WebSocketGateway", "WebSocketLimits"]
