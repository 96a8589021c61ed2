"""The agent: what the companion runs on the server (over SSH, or locally without a host)."""
