"""The tests: fast unit tests (tests/unit), the server tests, and end-to-end tests (marked)."""
