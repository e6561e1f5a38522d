"""Which deliveries this session has seen and how far each got: pure bookkeeping, no I/O, no asyncio.

A delivery is one round of one invocation, named by the layer's identity and its delivery id. A
delivery seen before is never run again: posted again (after a reconnect), it gets its ack again while
it runs and its answer again once answered; a Lambda retry of the same request is a new delivery and
runs. An answer is sent again until the helper stack confirms it (``stored``), at most a few times.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from plldb import protocol
from plldb.local.invocation import Invocation

RESPONSE_RESEND_LIMIT = 3

Key = tuple[str, str]  # (caller, deliveryId)


class Phase(enum.Enum):
    RUNNING = "running"
    ANSWERED = "answered"  # response sent, `stored` not yet received
    CONFIRMED = "confirmed"
    REFUSED = "refused"


class Decision(enum.Enum):
    RUN = "run"
    REPEAT_ACK = "repeat-ack"
    REPEAT_ANSWER = "repeat-answer"
    IGNORE = "ignore"


@dataclass
class Delivery:
    caller: str
    delivery_id: str
    request_id: str
    function_name: str
    phase: Phase = Phase.RUNNING
    invocation: Invocation | None = None
    response: protocol.ResponseMessage | None = None
    acked: bool = False
    sent_at: float = 0.0
    sends: int = 0
    finished_at: float = 0.0

    @property
    def key(self) -> Key:
        return (self.caller, self.delivery_id)

    @property
    def ack(self) -> protocol.AckMessage:
        return protocol.ack_message(self.caller, self.delivery_id)


def key_of(message: Mapping[str, Any]) -> Key | None:
    caller, delivery_id = message.get("caller"), message.get("deliveryId")
    if isinstance(caller, str) and isinstance(delivery_id, str):
        return (caller, delivery_id)
    return None


class Deliveries:
    """The state of every delivery, with a clock a test can drive."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._items: dict[Key, Delivery] = {}

    def __len__(self) -> int:
        return len(self._items)

    def all(self) -> list[Delivery]:
        return list(self._items.values())

    def get(self, key: Key | None) -> Delivery | None:
        return self._items.get(key) if key is not None else None

    def receive(self, invoke: Mapping[str, Any]) -> tuple[Decision, Delivery]:
        """An `invoke` arrived: run it, or repeat what was said for it, or ignore it."""
        key = (str(invoke["caller"]), str(invoke["deliveryId"]))
        existing = self._items.get(key)
        if existing is not None:
            if existing.phase == Phase.RUNNING:
                return Decision.REPEAT_ACK, existing
            if existing.phase == Phase.ANSWERED:
                return Decision.REPEAT_ANSWER, existing
            return Decision.IGNORE, existing
        self.forget_old()
        function = invoke.get("function") or {}
        delivery = Delivery(
            caller=key[0],
            delivery_id=key[1],
            request_id=str(invoke.get("requestId") or ""),
            function_name=str(
                function.get("name") or (invoke.get("context") or {}).get("functionName") or "?"
            ),
        )
        self._items[key] = delivery
        return Decision.RUN, delivery

    def answered(self, delivery: Delivery, response: protocol.ResponseMessage) -> None:
        delivery.phase = Phase.ANSWERED
        delivery.response = response

    def sent(self, delivery: Delivery) -> None:
        delivery.sends += 1
        delivery.sent_at = self._clock()

    def stored(self, key: Key | None) -> Delivery | None:
        """The helper stack stored the answer: the delivery is done (a repeated `stored` returns None)."""
        delivery = self.get(key)
        if delivery is None or delivery.phase != Phase.ANSWERED:
            return None
        self._finish(delivery, Phase.CONFIRMED)
        return delivery

    def refused(self, delivery: Delivery) -> None:
        self._finish(delivery, Phase.REFUSED)

    def due_resends(self, interval: float) -> tuple[list[Delivery], list[Delivery]]:
        """(answers to send again, answers given up after RESPONSE_RESEND_LIMIT sends) as of now."""
        now = self._clock()
        again, given_up = [], []
        for delivery in self._items.values():
            if delivery.phase != Phase.ANSWERED or now - delivery.sent_at < interval:
                continue
            if delivery.sends >= RESPONSE_RESEND_LIMIT:
                given_up.append(delivery)
            else:
                again.append(delivery)
        for delivery in given_up:
            self._finish(delivery, Phase.REFUSED)
        return again, given_up

    def forget_old(self) -> None:
        """Keep finished deliveries as long as the dispatcher could post them again, then drop them."""
        horizon = self._clock() - protocol.INVOCATION_ITEM_TTL_SECONDS
        for key, delivery in list(self._items.items()):
            if delivery.phase in (Phase.CONFIRMED, Phase.REFUSED) and delivery.finished_at < horizon:
                del self._items[key]

    def _finish(self, delivery: Delivery, phase: Phase) -> None:
        delivery.phase = phase
        delivery.response = None
        delivery.finished_at = self._clock()
