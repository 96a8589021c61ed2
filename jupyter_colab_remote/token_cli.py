"""`jupyter colabremote token list|new|rotate|revoke`: manage the running server's tokens."""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

from .protocol.runtime_file import running_servers
from .tokens import TokenStore, default_token_file


def parse_duration(text: str) -> float:
    """'90s', '30m', '12h', '7d' -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        value = float(text[:-1]) if text[-1] in units else float(text)
        seconds = value * units.get(text[-1], 1)
    except (ValueError, IndexError):
        raise argparse.ArgumentTypeError(
            f"invalid duration {text!r}: use e.g. 90s, 30m, 12h or 7d"
        ) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError("a duration must be positive")
    return seconds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the token subcommand's arguments."""
    parser.add_argument(
        "--token-file",
        help=f"token store to use (default: the running server's, else {default_token_file()})",
    )
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    sub.add_parser("list", help="list tokens (names and times; never the tokens)")
    for action, text in (
        ("new", "create a token and show it once"),
        ("rotate", "replace a token's secret; the old one stops working at once"),
    ):
        p = sub.add_parser(action, help=text)
        p.add_argument("name", help="token name")
        p.add_argument("--expires-in", type=parse_duration, help="e.g. 12h or 7d")
    p = sub.add_parser("revoke", help="delete a token; its users are refused from now on")
    p.add_argument("name", help="token name")


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def run(args: argparse.Namespace) -> int:
    """Carry out a token action; return the exit code."""
    servers = running_servers()
    if args.token_file:
        path = Path(args.token_file)
    elif servers:
        path = Path(servers[-1]["token_file"])
    else:
        path = default_token_file()
    store = TokenStore(path)
    # The URL is only known for a server using this very store.
    url = next((s["url"] for s in servers if Path(s["token_file"]) == path), None)

    if args.action == "list":
        records = store.records()
        if not records:
            print(f"no tokens in {path}")
            return 0
        print(f"{'NAME':20} {'CREATED':19}  {'EXPIRES':19}  {'LAST USED':19}")
        for r in records:
            expires = "expired" if r.expired() else _when(r.expires)
            print(f"{r.name:20} {_when(r.created):19}  {expires:19}  {_when(r.last_used):19}")
        return 0
    if args.action == "revoke":
        store.revoke(args.name)
        print(f"revoked {args.name!r}; requests using it are refused from now on")
        return 0
    if args.action == "new":
        secret = store.create(args.name, args.expires_in)
    else:
        secret = store.rotate(args.name, args.expires_in)
    print(f"token {args.name!r} (shown once, stored only as a hash):", file=sys.stderr)
    print(f"{url}?token={secret}" if url else secret)
    return 0
