"""The protocol between companion and agent, and the runtime file the extension writes."""
