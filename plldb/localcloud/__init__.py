"""The local cloud: moto with extensions, real Lambda execution environments, and an API Gateway WebSocket emulator."""
