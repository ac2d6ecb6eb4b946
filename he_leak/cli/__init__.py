"""The `he-leak` command line: attack, run, diff, status, table, audit, bench, list. Bad input → one line on stderr and
exit code 2 (he_leak.cli.parser for the options, he_leak.cli.commands for what each does)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from he_leak.cli.commands import COMMANDS, EXIT_UNMET
from he_leak.cli.parser import EXIT_BAD_INPUT, build_parser
from he_leak.errors import HeLeakError

EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C

__all__ = ["EXIT_BAD_INPUT", "EXIT_INTERRUPTED", "EXIT_UNMET", "build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; its exit code (a usage error: one line and EXIT_BAD_INPUT, returned, not raised)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # argparse's usage error (one line, OneLineParser), --help or --version
        return e.code if isinstance(e.code, int) else EXIT_BAD_INPUT
    try:
        return COMMANDS[args.command](args)
    except HeLeakError as e:
        print(f"he-leak: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as e:  # a sweep says how far it got (he_leak.sweep.driver.SweepInterrupted)
        print(f"he-leak: {str(e) or 'interrupted'}", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
