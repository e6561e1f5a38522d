"""Handlers of the helper stack: WebSocket authorizer and routes, and the instrumentation manager."""
