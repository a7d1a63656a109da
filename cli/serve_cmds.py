"""``serve``: run the server; ``serve token create|list|revoke``; ``serve namespace set|list``;
``serve audit``; ``ui``: the web app over the local home, with a one-time sign-in link."""

from __future__ import annotations

import os
from typing import Annotated, Optional

import typer

from .options import HomeOpt, JsonOpt, open_catalog
from .output import Output

SERVE_TOKEN_ENV = "LORADEX_SERVE_TOKEN"
DEFAULT_RATE_LIMIT = "100/s"


def register(app: typer.Typer) -> None:
    serve = typer.Typer(help="Serve this catalog over HTTP; manage its API tokens and read its audit log.",
                        invoke_without_command=True, no_args_is_help=False)
    app.add_typer(serve, name="serve")

    @serve.callback()
    def serve_cmd(
        ctx: typer.Context,
        host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
        port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8470,
        public_read: Annotated[bool, typer.Option("--public-read", help="Allow reads without a token "
                                                  "(writes always need a write token).")] = False,
        rate_limit: Annotated[str, typer.Option("--rate-limit", help="Requests per token (or per client "
                                                "without one): N/s or N/min, or off.")] = DEFAULT_RATE_LIMIT,
        max_upload_bytes: Annotated[Optional[int], typer.Option(
            "--max-upload-bytes", min=1, help="Largest file a push may upload (default 50 GiB).")] = None,
        public_url: Annotated[Optional[str], typer.Option(
            "--public-url", help="The address clients reach this server at (e.g. https://loras.example.com); "
            "download redirects and upload URLs start with it, never with the request's Host header "
            "(default http://HOST:PORT/ from --host/--port, https with TLS).")] = None,
        tls_cert: Annotated[Optional[str], typer.Option(
            "--tls-cert", help="Serve https with this PEM certificate chain (with --tls-key).")] = None,
        tls_key: Annotated[Optional[str], typer.Option(
            "--tls-key", help="The PEM private key of --tls-cert.")] = None,
        trusted_proxy: Annotated[Optional[list[str]], typer.Option(
            "--trusted-proxy", help="A reverse proxy (IP or network, repeatable) whose X-Forwarded-Proto "
            "and X-Forwarded-For are honoured; without --public-url, links then take the proxy's scheme.")] = None,
        presigned_downloads: Annotated[bool, typer.Option(
            "--presigned-downloads", help="Hub resolve (LFS files) and Civitai downloads redirect to a "
            "short-lived pre-signed URL of the object store instead of streaming through this server "
            "(needs LORADEX_BLOBS=s3://…).")] = False,
        home: HomeOpt = None,
    ) -> None:
        """Serve this catalog over HTTP: the Civitai-style API and the Hugging Face Hub protocol.

        Clients send a token as 'Authorization: Bearer TOKEN': one made with `loradex serve token
        create`, or the admin token in $LORADEX_SERVE_TOKEN."""
        if ctx.invoked_subcommand is not None:
            return
        from loradex.registry.errors import UsageError
        from loradex.registry.server.app import (build_server_app, check_public_url, check_tls,
                                                 check_trusted_proxies, default_public_url, uvicorn_options)
        from loradex.registry.server.guard import parse_rate
        from loradex.registry.server.tokens import has_active_tokens, namespace_settings

        catalog = open_catalog(home)
        token = os.environ.get(SERVE_TOKEN_ENV) or None
        rate = parse_rate(rate_limit)
        tls = check_tls(tls_cert, tls_key)
        proxies = check_trusted_proxies(trusted_proxy)
        scheme = "https" if tls else "http"
        if public_url is not None:
            public = check_public_url(public_url)
        else:  # behind a trusted proxy, links follow the scheme it forwards
            public = None if proxies else default_public_url(host, port, scheme)
        opened = namespace_settings(catalog)
        if token is None and not public_read and not opened and not has_active_tokens(catalog):
            raise UsageError("no token can use this server: create one with `loradex serve token create "
                             f"--scope write`, set {SERVE_TOKEN_ENV}, or pass --public-read")
        import uvicorn

        app_ = build_server_app(catalog, token, public_read=public_read, rate_limit=rate,
                                max_upload_bytes=max_upload_bytes, public_url=public,
                                presigned_downloads=presigned_downloads)
        limit = f"{rate_limit} per token" if rate else "no rate limit"
        reads = "open" if public_read else ("need a token outside public namespaces " + ", ".join(sorted(opened))
                                            if opened else "need a token")
        typer.echo(f"serving on {scheme}://{host}:{port} (reads {reads}, writes need a write token, {limit}; "
                   f"links start with {public or 'the address each connection arrived on'}); "
                   f"the web app is at {public or f'{scheme}://{host}:{port}/'}", err=True)
        from loradex.registry.remotes.webhooks import DeliveryWorker

        deliveries = DeliveryWorker(catalog).start()  # webhooks from the outbox (replicas share it safely)
        try:
            uvicorn.run(app_, **uvicorn_options(host, port, tls=tls, trusted_proxies=proxies))
        finally:
            deliveries.stop()

    @app.command("ui")
    def ui_cmd(
        port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port on 127.0.0.1 (default: a free one).")] = 0,
        no_browser: Annotated[bool, typer.Option("--no-browser", help="Print the sign-in link; do not open a browser.")] = False,
        home: HomeOpt = None,
    ) -> None:
        """Open the web app on this home: serves it on 127.0.0.1 and opens the browser with a
        one-time sign-in link (valid once, for 2 minutes). Ctrl-C stops it."""
        from loradex.registry.server.web.local_ui import LocalUI

        catalog = open_catalog(home)
        ui = LocalUI(catalog, port)
        link = ui.login_link()

        def started():
            typer.echo(f"loradex ui: serving {catalog.home} at {ui.url}/ (127.0.0.1 only); Ctrl-C to stop", err=True)
            typer.echo(f"open this one-time sign-in link (valid once, 2 minutes): {link}")
            if not no_browser:
                import webbrowser

                if not webbrowser.open(link):
                    typer.echo("(no browser could be opened: paste the link into one)", err=True)

        from loradex.registry.remotes.webhooks import DeliveryWorker

        deliveries = DeliveryWorker(catalog).start()  # approvals made in the browser reach webhooks too
        try:
            ui.run(on_started=started)
        except KeyboardInterrupt:
            pass
        finally:
            deliveries.stop()

    token_app = typer.Typer(help="API tokens of this server (stored hashed; shown once).", no_args_is_help=True)
    serve.add_typer(token_app, name="token")

    @token_app.command("create")
    def token_create(
        scope: Annotated[str, typer.Option("--scope", help="read | write (write includes read) | approve (read, and decide promotion requests).")],
        namespace: Annotated[Optional[str], typer.Option("--namespace", help="Write only repos under "
                                                         "NAMESPACE/ (whoami answers this name).")] = None,
        name: Annotated[Optional[str], typer.Option("--name", help="A label for lists and the audit "
                                                    "log (default token-ID).")] = None,
        json: JsonOpt = False, home: HomeOpt = None,
    ) -> None:
        """Create a token and print it once: only its sha256 is kept."""
        from loradex.registry.server.tokens import create_token

        created = create_token(open_catalog(home), scope, namespace=namespace, name=name)
        t = created.token

        def human(c):
            where = f", writes only under {t.namespace}/" if t.namespace else ""
            c.print(f"created token {t.name} (id {t.id}, scope {t.scope}{where}); "
                    "copy it now, it is not shown again:", soft_wrap=True)
            c.print(created.secret, soft_wrap=True)

        Output(json_mode=json).result(created, human)

    @token_app.command("list")
    def token_list(json: JsonOpt = False, home: HomeOpt = None) -> None:
        """Tokens of this server (names and scopes; no secrets)."""
        from loradex.registry.server.tokens import list_tokens

        tokens = list_tokens(open_catalog(home))
        out = Output(json_mode=json)
        out.result([t.to_dict() for t in tokens], lambda c: out.table(
            ["id", "name", "scope", "namespace", "created", "revoked"],
            [[t.id, t.name, t.scope, t.namespace or "", f"{t.created_at:%Y-%m-%d %H:%M}",
              f"{t.revoked_at:%Y-%m-%d %H:%M}" if t.revoked_at else ""] for t in tokens]))

    @token_app.command("revoke")
    def token_revoke(name: Annotated[str, typer.Argument(help="Token name or id.")],
                     json: JsonOpt = False, home: HomeOpt = None) -> None:
        """Revoke a token: it stops working at once (its name stays in the audit log)."""
        from loradex.registry.server.tokens import revoke_token

        t = revoke_token(open_catalog(home), name)
        Output(json_mode=json).result(t, lambda c: c.print(f"revoked token {t.name} (id {t.id})"))

    ns_app = typer.Typer(help="Which namespaces anyone may read without a token.", no_args_is_help=True)
    serve.add_typer(ns_app, name="namespace")

    @ns_app.command("set")
    def namespace_set(
        namespace: Annotated[str, typer.Argument(help="The namespace (the first part of its repos' ids; "
                                                 "'loradex' for the adapters the home made itself).")],
        public: Annotated[bool, typer.Option("--public/--private", help="Public: its models, versions, "
                                             "hash look-ups, search and images answer without a token.")],
        downloads: Annotated[str, typer.Option("--downloads", help="With --public: who may download its "
                                               "files: anyone | token.")] = "anyone",
        json: JsonOpt = False, home: HomeOpt = None,
    ) -> None:
        """Make a namespace public (readable without a token) or private (the default)."""
        from loradex.registry.errors import UsageError
        from loradex.registry.server.tokens import set_namespace_visibility

        if downloads not in ("anyone", "token"):
            raise UsageError(f"unknown --downloads {downloads!r}: use anyone or token")
        visibility = ("public" if downloads == "anyone" else "listed") if public else "private"
        setting = set_namespace_visibility(open_catalog(home), namespace, visibility)
        d = setting.to_dict()
        Output(json_mode=json).result(setting, lambda c: c.print(
            f"namespace {setting.namespace}: metadata {d['metadata']}, downloads {d['downloads']}", soft_wrap=True))

    @ns_app.command("list")
    def namespace_list(json: JsonOpt = False, home: HomeOpt = None) -> None:
        """Namespaces that are not private, and who may download their files."""
        from loradex.registry.server.tokens import NamespaceSetting, namespace_settings

        rows = [NamespaceSetting(n, v).to_dict() for n, v in sorted(namespace_settings(open_catalog(home)).items())]
        out = Output(json_mode=json)
        out.result(rows, lambda c: out.table(["namespace", "metadata", "downloads"],
                                             [[r["namespace"], r["metadata"], r["downloads"]] for r in rows]))

    @serve.command("audit")
    def audit_cmd(limit: Annotated[int, typer.Option("--limit", min=1, help="Newest N entries.")] = 100,
                  json: JsonOpt = False, home: HomeOpt = None) -> None:
        """Write requests the server received: when, which token, what, and the answer."""
        from loradex.registry.server.guard import list_audit

        entries = list_audit(open_catalog(home), limit=limit)
        out = Output(json_mode=json)
        out.result([e.to_dict() for e in entries], lambda c: out.table(
            ["at", "token", "method", "path", "status", "client"],
            [[f"{e.at:%Y-%m-%d %H:%M:%S}", e.token_name, e.method, e.path, e.status, e.client or ""]
             for e in entries]))
