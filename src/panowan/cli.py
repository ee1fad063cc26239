"""The `panowan` command line: one entry point, one module per subcommand in `panowan.commands`.

Each command module provides `HELP` (one line), `add_arguments(parser)` and `run(args) -> int`.
Command modules import heavy libraries (diffusers, torch.distributed) inside `run`, so that
`panowan --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Order is the order a user meets them: make data, prepare it, train, complete, evaluate.
COMMANDS = ("synth", "render", "prepare", "train", "infer", "eval", "demo", "convert")


def _load(name: str):
    return importlib.import_module(f"panowan.commands.{name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="panowan",
        description="Complete multi-view 360° RGB-D panoramas with a dual-stream Wan2.1-I2V model.",
    )
    parser.add_argument(
        "--log_level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging verbosity (default: INFO)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        try:
            module = _load(name)
        except ModuleNotFoundError as e:
            if e.name != f"panowan.commands.{name}":
                raise
            continue
        p = sub.add_parser(
            name,
            help=module.HELP,
            description=module.__doc__,
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args._module.run(args) or 0)
    except ValueError as e:
        # User-input errors: one clear line, no traceback. Internal errors keep theirs.
        print(f"panowan {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
