"""The load generator: lean WebSocket and gRPC subscribers, and publishers."""

__all__: list[str] = []
