"""The `inspector` console script: parse arguments, hand off to a command module.

Each command lives in ``inspector/commands/<name>.py`` with two functions:
``add_arguments(parser)`` and ``run(args) -> int`` (the exit code). This file only wires them.

Only the module of the command being run is imported (``inspector --help`` lists the commands
from the table below without importing any): commands like ``stats`` start in a fraction of a
second instead of paying for every other command's imports.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Optional, Sequence

from inspector.names import display_text

# (command, module, one-line help). Order is the order shown in --help.
COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("demo", "inspector.commands.demo", "make synthetic parts, calibrate, run the daemon over them, show the history"),
    ("calibrate", "inspector.commands.calibrate", "fit a model bundle and thresholds from golden (defect-free) images"),
    ("run", "inspector.commands.run", "the daemon: watch sources, inspect every frame, record verdicts"),
    ("history", "inspector.commands.history", "list past inspections (filters; table, CSV or JSON)"),
    ("show", "inspector.commands.show", "print one inspection with its defect regions and heatmap path"),
    ("status", "inspector.commands.status", "is the daemon alive: status file + recent counts from the database"),
    ("stats", "inspector.commands.stats", "counts, yield and score percentiles per hour/day/shift/source/bundle"),
    ("export", "inspector.commands.export", "export a period as CSV files plus the fails' heatmaps and frames"),
    ("report", "inspector.commands.report", "write a self-contained HTML report of a period"),
    ("prune", "inspector.commands.prune", "apply the retention limits: delete old rows and files"),
    ("serve", "inspector.commands.serve", "the operator's console: live verdicts, history, reviews, yield in a web page"),
    ("db", "inspector.commands.db", "database maintenance: `db upgrade` applies schema migrations"),
    ("bench", "inspector.commands.bench", "calibrate and score an MVTec-layout dataset; AUROC and timings"),
    ("build-engine", "inspector.commands.build_engine", "build the TensorRT plan for a bundle ahead of time (GPU machine)"),
)


class _CleanExit(Exception):
    pass


class SafeFormatter(logging.Formatter):
    """Log lines with control characters escaped (``\\x1b``, ``\\u202e``): a file name logged by any
    module cannot repaint the terminal, forge a line of the journal or reverse what is shown.
    A traceback, appended after the message, keeps its lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's naming
        return display_text(super().formatMessage(record))


def named_command(argv: Sequence[str]) -> Optional[str]:
    """The command named in ``argv``: its first argument that is not an option (the top-level
    options are flags, so none of them takes a value); None when there is none or it is unknown."""
    names = {name for name, _, _ in COMMANDS}
    for arg in argv:
        if arg == "--":
            return None
        if not arg.startswith("-"):
            return arg if arg in names else None
    return None


def build_parser(argv: Optional[Sequence[str]] = None) -> argparse.ArgumentParser:
    """The argument parser. Every command is listed, but only the one named in ``argv`` is
    imported and given its arguments; ``argv=None`` imports and sets up all of them."""
    parser = argparse.ArgumentParser(
        prog="inspector",
        description="Industrial visual inspection: learn from golden parts, flag anomalies, record every verdict.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = None if argv is None else named_command(argv)
    for name, module_name, help_text in COMMANDS:
        if argv is not None and name != chosen:
            sub.add_parser(name, help=help_text, description=help_text)  # listed, never parsed
            continue
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip())
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(SafeFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, handlers=[handler])
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    from inspector.errors import InspectorError

    try:
        return int(args._module.run(args) or 0)
    except InspectorError as exc:
        # Expected, user-fixable problems: one line, no traceback (systemd shows it as is).
        print(f"inspector {args.command}: error: {display_text(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
