"""Faults on demand, for tests of what a WebSocket client and its backend do when API Gateway misbehaves
within what AWS documents.

* ``$disconnect`` is best effort: "As the connection is already closed when it is executed, $disconnect
  is a best-effort event. API Gateway will try its best to deliver the $disconnect event to your
  integration, but it cannot guarantee delivery." (API Gateway developer guide, "Manage connected users
  and client apps: $connect and $disconnect routes"). :meth:`GatewayFaults.drop_disconnects` makes the
  gateway drop them.
* Protocol-level pings are a transport detail API Gateway does not promise to answer;
  :meth:`GatewayFaults.ignore_pings` makes the gateway read ping frames and send no pong, as a half-dead
  connection would.

Each fault applies to one connection or to all, from the moment it is set until :meth:`clear`; every
dropped event is recorded, so a test can wait for the drop itself instead of waiting for time to pass.
"""

from __future__ import annotations

import threading

ALL = "*"


class GatewayFaults:
    """The faults a gateway injects now, and a record of those it injected."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._drop_disconnects: set[str] = set()
        self._ignore_pings: set[str] = set()
        self.dropped_disconnects: list[str] = []  # connection ids whose $disconnect was dropped
        self.ignored_pings: list[str] = []  # connection id of every ping frame left without a pong

    def drop_disconnects(self, connection_id: str | None = None) -> None:
        """Never run the ``$disconnect`` route of this connection (of every connection when None)."""
        with self._changed:
            self._drop_disconnects.add(connection_id or ALL)

    def ignore_pings(self, connection_id: str | None = None) -> None:
        """Answer no ping frame of this connection (of every connection when None) with a pong."""
        with self._changed:
            self._ignore_pings.add(connection_id or ALL)

    def clear(self) -> None:
        """Behave again; the record of what was dropped stays."""
        with self._changed:
            self._drop_disconnects.clear()
            self._ignore_pings.clear()

    def wait_for_dropped_disconnect(self, connection_id: str, timeout: float = 10.0) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: connection_id in self.dropped_disconnects, timeout)

    def wait_for_ignored_pings(self, connection_id: str, count: int = 1, timeout: float = 10.0) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self.ignored_pings.count(connection_id) >= count, timeout)

    # --- what the gateway asks -----------------------------------------------------------------------
    def disconnect_dropped(self, connection_id: str) -> bool:
        """Whether this connection's ``$disconnect`` is dropped (and if so, record it)."""
        with self._changed:
            if not ({ALL, connection_id} & self._drop_disconnects):
                return False
            self.dropped_disconnects.append(connection_id)
            self._changed.notify_all()
            return True

    def ping_ignored(self, connection_id: str) -> bool:
        """Whether this ping of the connection goes unanswered (and if so, record it)."""
        with self._changed:
            if not ({ALL, connection_id} & self._ignore_pings):
                return False
            self.ignored_pings.append(connection_id)
            self._changed.notify_all()
            return True
