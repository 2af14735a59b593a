"""The ``vizjax`` command: a thin layer that parses arguments and calls the library.

Every user-facing problem is a :class:`vizjax.errors.VizjaxError`, printed as one line
(``vizjax: ...``) with exit status 2, never a traceback.

The package, one file per job::

    options   argument types, the shared ascent and model arguments, and parsed arguments ->
              Recipe, Execution, Weights
    parser    build_parser: the commands and their arguments
    commands  the ``cmd_*`` functions and the printing of their results
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence

from vizjax.cli.commands import _print_summary
from vizjax.cli.options import MODEL_NAMES as MODEL_NAMES  # tests/test_models.py checks it
from vizjax.cli.options import _check_environment, _probe_inputs
from vizjax.cli.options import _execution as _execution  # tests/test_cli.py calls it
from vizjax.cli.parser import build_parser
from vizjax.engine.execution import enable_compilation_cache, prefer_fast_cpu_compiles
from vizjax.errors import Interrupted, VizjaxError


def main(argv: Sequence[str] | None = None) -> int:
    prefer_fast_cpu_compiles()  # LLVM -O1 on a CPU-only install: compiles ~1.5x faster, same speed
    args = build_parser().parse_args(argv)
    enable_compilation_cache()  # kept between runs; VIZJAX_COMPILATION_CACHE=0 turns it off
    try:
        _check_environment(args)
        _probe_inputs(args)
        return int(args.func(args) or 0)
    except VizjaxError as e:
        print(f"vizjax: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader of stdout left early (`vizjax info A | head -1`): what it read is what it
        # wanted. Point stdout at /dev/null so the interpreter's final flush does not fail too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Interrupted as e:
        # SIGINT/SIGTERM: the run stopped after the chunk in flight, everything before is kept.
        if e.summary and getattr(args, "json", False):
            name = signal.Signals(e.signum).name
            _print_summary(
                e.summary, json_out=True, quiet=getattr(args, "quiet", False), interrupted=name
            )
        done = sum(s["computed"] for s in e.summary.get("layers", {}).values())
        saved = f"; {done} filters computed by this run are saved" if e.summary else ""
        print(f"vizjax: {e}{saved}; rerun the same command to resume", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print("vizjax: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
