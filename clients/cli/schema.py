"""``clearpath schema``: print the catalog, the JSON a bridge serves at ``GET /ws/schema``.

It is built from the installed protos (:func:`core.catalog.catalog`), with the
conflation keys of ``--conflate`` (the bridge setting of the same name; default:
the defaults). A bad ``--conflate`` exits 2 with one line on stderr.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from clients.cli._common import EXIT_OK, EXIT_USAGE, fail
from core.catalog import catalog
from core.errors import InvalidArgument

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add ``schema`` to the subparsers."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "schema",
        help="print the catalog of subscription and event types (what GET /ws/schema serves)",
        description="Print the catalog as JSON: subscription types, event types and their "
        "fields, enums, delivery classes and conflation keys.",
    )
    parser.add_argument(
        "--conflate",
        default="default",
        metavar="SPEC",
        help="conflation keys as a bridge is configured: TOPIC[:FIELD[+FIELD]];... , "
        "'default' or 'none' (default: default)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print the catalog (indented JSON) to stdout."""
    try:
        body = catalog(args.conflate)
    except InvalidArgument as exc:
        return fail(f"--conflate: {exc}", EXIT_USAGE)
    print(json.dumps(body, indent=2, ensure_ascii=False))
    return EXIT_OK
