#!/usr/bin/env python
"""easel: run YAML jobs. ``python run.py CONFIG [CONFIG ...]``; see ``--help``.

argv -> load configs -> for each: build job -> job.run() -> cleanup. No ML logic lives here.
"""

from __future__ import annotations

import argparse
import signal
import sys
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from toolkit.errors import EaselError, Interrupted, is_disk_full  # noqa: E402
from toolkit.log import log, setup_console  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="run.py",
        description="easel: declarative YAML jobs for training and using LoRA adapters on diffusion models.",
        epilog="Examples: python run.py config/examples/quickstart.yaml | python run.py --dry-run my.yaml "
               "| python run.py my.yaml --set config.process.0.train.lr=2e-4",
    )
    parser.add_argument("configs", nargs="*", metavar="CONFIG",
                        help="config files, run in order; a name is also looked up under config/ with .yaml/.yml/.json")
    parser.add_argument("-r", "--recover", action="store_true", help="go on after a failing job; exit non-zero at the end")
    parser.add_argument("-n", "--name", help="value of [name] in the configs")
    parser.add_argument("-s", "--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. config.process.0.train.lr=2e-4 (repeatable; list items by index)")
    parser.add_argument("--dry-run", action="store_true",
                        help="validate, scan datasets and print the resolved config and a plan, without loading any model")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--ui", action="store_true",
                        help="start the web UI on 127.0.0.1:8675 (its options: python run.py --ui --help)")
    args = parser.parse_args(argv)
    if not args.configs:
        parser.error("give at least one CONFIG (or --ui for the web UI)")
    return args


def _terminate(signum: int, _frame: object) -> None:
    raise Interrupted(signum)


def run_config(name: str, args: argparse.Namespace, registry: "object") -> None:
    from toolkit.config.job import find_config, load_job_config
    from toolkit.job import Job, RunOptions
    from toolkit.registry import load_object

    path = find_config(name, ROOT)
    loaded = load_job_config(path, registry, name=args.name, overrides=args.set)  # type: ignore[arg-type]
    if loaded.ignored:
        log.warning(f"warning: {path}: ignored keys (accepted from ai-toolkit, not used by easel): {', '.join(loaded.ignored)}")
    for line in loaded.warnings:
        log.warning(f"warning: {path}: {line}")
    for note in loaded.notes:
        log.info(f"{path}: {note}")
    job_class: type[Job] = load_object(loaded.spec.runner)
    job = job_class(loaded, registry, RunOptions(dry_run=args.dry_run, debug=args.debug))  # type: ignore[arg-type]
    try:
        if args.dry_run:
            from toolkit.output import dump_yaml

            plan = job.plan()  # may fail (a missing folder): then the config is not printed either
            print(f"# resolved config: {path}\n{dump_yaml(loaded.resolved)}")
            print(plan)
        else:
            job.run()
    finally:
        job.cleanup()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--ui" in argv:  # the web UI has its own options (host, port, folders, token)
        from ui.server import main as ui_main

        return ui_main([arg for arg in argv if arg != "--ui"])
    args = parse_args(argv)
    setup_console()
    signal.signal(signal.SIGTERM, _terminate)
    from toolkit.deps import check_installed
    from toolkit.registry import Registry

    failed = 0
    try:
        check_installed()
        registry = Registry.discover(("jobs",), ROOT / "extensions")
        for name, error in registry.broken.items():
            log.warning(f"warning: extension '{name}' failed to load and is skipped: {error.splitlines()[-1]}")
        for name in args.configs:
            try:
                run_config(name, args, registry)
            except EaselError as err:
                if args.debug:
                    traceback.print_exc()
                log.error(f"error: {err}")
                failed = failed or err.exit_code
            except Exception as err:  # a bug or an environment failure, not a config problem
                if args.debug:
                    traceback.print_exc()
                if is_disk_full(err):  # a write that does not go through toolkit.output (a library's own file)
                    log.error(f"error: {name}: no space left on device ({type(err).__name__}: {err}). Free space and run again.")
                    failed = failed or 2
                else:
                    log.error(f"error: {name}: unexpected {type(err).__name__}: {err}\n(rerun with --debug for the traceback)")
                    failed = failed or 1
            if failed and not args.recover:
                break
    except EaselError as err:  # e.g. two extensions declaring one name
        if args.debug:
            traceback.print_exc()
        log.error(f"error: {err}")
        return err.exit_code
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    except Interrupted as stop:
        log.error(f"stopped by signal {stop.signum}")
        return stop.exit_code
    return failed


if __name__ == "__main__":
    sys.exit(main())
