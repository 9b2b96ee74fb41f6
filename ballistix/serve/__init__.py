"""The examiners' review app: ``ballistix serve --store DIR`` (issue 18).

A local web application over a case store: the review queue (links waiting for an examiner,
candidates, decisions), each comparison drawn with its pose and congruent cells, the decision
form that appends to the store's audit log (`CaseStore.confirm`), the groups, the graph and the
report, each linked to the comparisons behind them. See docs/store.md, "The review app".

Flask (with Jinja2, which escapes every value put on a page) and the waitress server are an
extra: ``pip install 'ballistix[serve]'``. Nothing else in ballistix imports them; `review`
holds what the pages show without the framework.
"""

from __future__ import annotations

__all__ = ["create_app", "serve", "check_binding", "SERVE_EXTRA"]

#: What to install for the app.
SERVE_EXTRA = "pip install 'ballistix[serve]'"


def create_app(*args, **kwargs):
    """The Flask application (see `ballistix.serve.app.create_app`)."""
    from .app import create_app as make

    return make(*args, **kwargs)


def check_binding(host: str, *, allow_remote: bool, password_hash: str | None) -> None:
    """Refuse to serve anything but this machine unless asked to (``allow_remote``) and behind a
    login (``password_hash``); raises `ParameterError` saying what is missing."""
    from ..errors import ParameterError
    from .app import is_loopback

    if is_loopback(host):
        return
    if not allow_remote:
        raise ParameterError(
            f"--host {host} would serve the store to other machines: add --allow-remote (and a login: "
            f"--password-file or BALLISTIX_SERVE_PASSWORD) to do so"
        )
    if not password_hash:
        raise ParameterError(
            f"--host {host} with --allow-remote needs a login: --password-file FILE (a password hash) or the "
            f"environment variable BALLISTIX_SERVE_PASSWORD"
        )


def serve(
    store_dir,
    *,
    host: str = "127.0.0.1",
    port: int = 8750,
    allow_remote: bool = False,
    password_hash: str | None = None,
    examiner: str | None = None,
    read_only: bool = False,
    threads: int = 4,
    ready=None,
) -> None:
    """Serve the review app of ``store_dir`` with waitress until interrupted.

    Binds to ``host`` (this machine by default); any other interface needs ``allow_remote``
    and a ``password_hash`` (`check_binding`). ``ready(url)`` is called once the server listens.
    """
    from waitress import create_server

    from .app import LOCAL_NAMES, is_loopback

    check_binding(host, allow_remote=allow_remote, password_hash=password_hash)
    local = is_loopback(host)
    app = create_app(
        store_dir,
        examiner=examiner,
        password_hash=password_hash,
        read_only=read_only,
        hosts=(*LOCAL_NAMES, host) if local else None,
    )
    server = create_server(app, host=host, port=port, threads=threads, ident="ballistix")
    shown = f"[{host}]" if ":" in host else host
    if ready is not None:
        ready(f"http://{shown}:{server.effective_port}/")
    server.run()
