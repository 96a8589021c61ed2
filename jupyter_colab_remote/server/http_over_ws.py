"""The http-over-websocket protocol (placeholder while it is being written)."""

HTTP_OVER_WS_HANDLERS: list = []
