"""Command line of `train.py`: config files, overrides, and the inspection modes."""

from __future__ import annotations

import argparse
import errno
import os
import sys

from omegaconf import OmegaConf

from tenfold.config import compose, find_method, parse_overrides, read_yaml, to_plain
from tenfold.errors import TenfoldError, one_line
from tenfold.registry import get_method, locations

USAGE_EXAMPLE = "python train.py --config configs/demo/rdnet.yaml trainer.max_epochs=5"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="train.py",
        description="Train, test and export one tenfold method.",
        epilog=f"example: {USAGE_EXAMPLE}",
    )
    parser.add_argument("--config", action="append", default=[], metavar="FILE",
                        help="YAML config; repeat to layer files (later files win)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="dotted overrides applied last, e.g. trainer.max_steps=5")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--list-methods", action="store_true", help="list the registered methods and exit")
    parser.add_argument("--validate-only", action="store_true",
                        help="build config, data, model and trainer, then exit without training")
    return parser.parse_intermixed_args(argv)  # flags may come after overrides


def load_config(files: list[str], overrides: list[str]):
    sources = [(path, read_yaml(path)) for path in files]
    sources.append(("command line", parse_overrides(overrides)))
    spec = get_method(find_method(sources))
    cfg = compose(spec.config_class, sources)
    if spec.module_class is not None:
        from tenfold.method import check_monitor

        check_monitor(cfg, spec.module_class)
    return cfg


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.list_methods:
            for name, where in sorted(locations().items()):
                extra = f" [needs the '{where.extra}' extra]" if where.extra else ""
                print(f"{name:24s} {where.summary}{extra}")
            return 0
        if not args.config and not args.overrides:
            raise TenfoldError(f"nothing to run: pass --config FILE (e.g. {USAGE_EXAMPLE})")
        cfg = load_config(args.config, args.overrides)
        if args.print_config:
            print(OmegaConf.to_yaml(OmegaConf.create(to_plain(cfg))), end="")
            return 0
        from tenfold.runner import run  # imports Lightning and the methods: only when needed

        run(cfg, validate_only=args.validate_only)
        return 0
    except TenfoldError as exc:
        rank = os.environ.get("LOCAL_RANK") or os.environ.get("RANK")
        prefix = f"[rank {rank}] " if rank not in (None, "0") else ""
        print(f"{prefix}error: {one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        print(f"error: no space left on device: {exc.filename or '?'}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: resume with resume=latest", file=sys.stderr)
        return 130
