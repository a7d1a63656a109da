"""Entry point: run the typer app; turn loradex errors into one line and an exit code."""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> None:
    """``argv`` None: the process's own command line (the console script); the process then
    ends without the interpreter's teardown once the command is done (see ``_leave``)."""
    from loradex.cli.app import app_for

    debug = os.environ.get("LORADEX_DEBUG") == "1"
    if not debug:
        # diffusers/transformers chatter (torchvision hints, dtype notes) is not for our users
        for var in ("TRANSFORMERS_VERBOSITY", "DIFFUSERS_VERBOSITY"):
            os.environ.setdefault(var, "error")
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    try:
        app = app_for(sys.argv[1:] if argv is None else argv)
        if argv is None:
            # The whole process: what is imported by now lives until the end, so the cyclic
            # collector need not scan it again (a 10,000-row `list` spent ~20 ms doing that).
            import gc

            gc.freeze()
        rv = app(args=argv, prog_name="loradex", standalone_mode=False)
        _deliver_events()
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - the one place errors become messages
        from loradex.cli.output import terminal_safe

        code, message = describe_error(exc)
        if debug or code is None:
            if not debug:
                sys.stderr.write("loradex: internal error (set LORADEX_DEBUG=1 for the traceback): "
                                 + terminal_safe(f"{type(exc).__name__}: {exc}", one_line=True) + "\n")
                sys.exit(3)
            raise
        sys.stderr.write(f"error: {terminal_safe(message, one_line=True)}\n")
        _deliver_events()  # a refused promotion was recorded (promotion.refused) before the error
        _leave(code, whole_process=argv is None)
    _leave(rv if isinstance(rv, int) else 0, whole_process=argv is None)


def _deliver_events() -> None:
    """A command that wrote catalog events on a local home delivers them now (short and bounded:
    registry.remotes.webhooks.deliver_after_command); only when the outbox module was loaded."""
    events = sys.modules.get("loradex.registry.catalog.events")
    if events is not None and events.WRITTEN_URLS:
        try:
            from loradex.registry.remotes.webhooks import deliver_after_command

            deliver_after_command()
        except Exception:  # noqa: BLE001 — the command is done; what was not sent waits in the outbox
            pass


def _leave(code: int, *, whole_process: bool) -> None:
    """Exit with ``code``. When this call is the whole process and torch is loaded, output is
    flushed and the atexit handlers run (temp-dir finalizers, logging), then the process ends
    with ``os._exit``: unloading torch's modules at interpreter teardown takes ~0.5 s, more than
    many commands' own work. In-process callers (tests, ``main([...])``), live non-daemon threads,
    a torch.distributed group or a profiler/tracer get the ordinary ``sys.exit``."""
    import threading

    torch = sys.modules.get("torch")
    watched = sys.getprofile() is not None or sys.gettrace() is not None  # cProfile / a debugger report at teardown
    fast = whole_process and torch is not None and not watched and not any(
        t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread())
    if fast:
        dist = getattr(torch, "distributed", None)
        fast = not (dist is not None and dist.is_available() and dist.is_initialized())
    if not fast:
        sys.exit(code)
    import atexit

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said
            pass
    atexit._run_exitfuncs()
    os._exit(code)


def describe_error(exc: BaseException) -> tuple[int | None, str]:
    """(exit code, one-line message); code None means a bug."""
    from loradex.registry.errors import LoradexError

    from loradex.families import FamilyNotSupported

    if isinstance(exc, (LoradexError, FamilyNotSupported)):
        return exc.exit_code, " ".join(str(exc).split("\n"))
    # typer (>= 0.20) vendors its own click; match its exceptions by shape, whichever click it is.
    if type(exc).__name__ == "Abort":
        return 130, "aborted"
    if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):
        return exc.exit_code or 1, exc.format_message().replace("\n", " ")
    if isinstance(exc, KeyboardInterrupt):
        return 130, "interrupted"
    if isinstance(exc, OSError):  # the operating system said no: not a loradex bug
        return 1, _os_error_line(exc)
    from sqlalchemy.exc import DBAPIError

    if isinstance(exc, DBAPIError):  # a database failure outside Catalog.transact's mapping
        from loradex.registry.catalog.store import database_failure

        return 1, str(database_failure(exc, "database"))
    return None, str(exc)


def _os_error_line(exc: OSError) -> str:
    import errno

    where = exc.filename or ""
    if exc.errno == errno.ENOSPC:
        return f"no space left on device{f' writing {where}' if where else ''} (free some space and run the command again)"
    if isinstance(exc, PermissionError) or exc.errno == errno.EROFS:
        return (f"permission denied: {where or exc} (check its permissions; "
                "a read-only loradex home serves read commands only)")
    if isinstance(exc, FileNotFoundError):
        return f"no such file: {where or exc}"
    what = exc.strerror or type(exc).__name__
    return f"{what}: {where}" if where else f"{what}: {exc}"


if __name__ == "__main__":  # `python -m loradex.cli.main …` (e.g. under `accelerate launch -m`)
    main()
