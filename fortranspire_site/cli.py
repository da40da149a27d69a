"""The ``fortranspire`` console script.

translate / profile / doctor run on the engine alone and never touch Django or a database; every other
command sets Django up (embedded PostgreSQL unless DATABASE_URL is set) before it runs.
Exit codes: 0 success, 1 a kernel did not verify (or a command failed), 2 usage or input errors.
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    from fortranspire_site import cli_admin, cli_connector, cli_doctor, cli_engine, cli_profile

    parser = argparse.ArgumentParser(
        prog="fortranspire",
        description="Port Fortran kernels to numba CPU / numba.cuda GPU code, verified against gfortran.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    cli_engine.add_commands(sub)
    cli_profile.add_commands(sub)
    cli_doctor.add_commands(sub)
    cli_admin.add_commands(sub)
    cli_connector.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
