"""`collector run | check-config | status | fetch-env | audit | import | verify | emulate | demo`.

`main` parses the command line (parser.py) and turns the errors a person can fix into a message
and exit 2: a bad setting, an unusable spool, and for the commands that take files and
arguments, a bad value or a file that cannot be read.
"""

from __future__ import annotations

import sys

from collector.cli.parser import build_parser
from collector.exceptions import ConfigError, SpoolError

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"collector: {exc}", file=sys.stderr)
        return 2
    except SpoolError as exc:
        print(f"collector: {exc}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as exc:
        if args.command not in ("emulate", "demo", "audit", "import", "verify", "compact"):
            raise
        print(f"collector {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
