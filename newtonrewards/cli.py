"""The one entry point, `newtonrewards VERB ...`; each verb lives in its own module under newtonrewards/commands/.

Bad input anywhere ends in one line on stderr naming the file or option and the problem, and exit code 2.
"""

from __future__ import annotations

import argparse
import sys

from newtonrewards import __version__
from newtonrewards.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    from newtonrewards.commands import bench, demo, eval, generate, proxies, score, train

    parser = argparse.ArgumentParser(
        prog="newtonrewards",
        description="Make video generators obey Newton's laws: NewtonBench, physics rewards, post-training.",
    )
    parser.add_argument("--version", action="version", version=f"newtonrewards {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True
    bench.add_parser(verbs)
    eval.add_parser(verbs)
    proxies.add_parser(verbs)
    score.add_parser(verbs)
    train.add_parser(verbs)
    generate.add_parser(verbs)
    demo.add_parser(verbs)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except UserError as exc:
        print(f"newtonrewards: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("newtonrewards: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
