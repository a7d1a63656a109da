"""``serve``: run the server; ``serve token create|list|revoke``; ``serve audit``."""

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
            "(default http://HOST:PORT/ from --host/--port).")] = None,
        home: HomeOpt = None,
    ) -> None:
        """Serve this catalog over HTTP: the Civitai-style API and the Hugging Face Hub protocol.

        Clients send a token as 'Authorization: Bearer TOKEN': one made with `loradex serve token
        create`, or the admin token in $LORADEX_SERVE_TOKEN."""
        if ctx.invoked_subcommand is not None:
            return
        from loradex.registry.errors import UsageError
        from loradex.registry.server.app import build_server_app, check_public_url, default_public_url
        from loradex.registry.server.guard import parse_rate
        from loradex.registry.server.tokens import has_active_tokens

        catalog = open_catalog(home)
        token = os.environ.get(SERVE_TOKEN_ENV) or None
        rate = parse_rate(rate_limit)
        public = check_public_url(public_url) if public_url is not None else default_public_url(host, port)
        if token is None and not public_read and not has_active_tokens(catalog):
            raise UsageError("no token can use this server: create one with `loradex serve token create "
                             f"--scope write`, set {SERVE_TOKEN_ENV}, or pass --public-read")
        import uvicorn

        app_ = build_server_app(catalog, token, public_read=public_read, rate_limit=rate,
                                max_upload_bytes=max_upload_bytes, public_url=public)
        limit = f"{rate_limit} per token" if rate else "no rate limit"
        typer.echo(f"serving on http://{host}:{port} (reads {'open' if public_read else 'need a token'}, "
                   f"writes need a write token, {limit}; links start with "
                   f"{public or 'the address each connection arrived on'})", err=True)
        uvicorn.run(app_, host=host, port=port, log_level="warning")

    token_app = typer.Typer(help="API tokens of this server (stored hashed; shown once).", no_args_is_help=True)
    serve.add_typer(token_app, name="token")

    @token_app.command("create")
    def token_create(
        scope: Annotated[str, typer.Option("--scope", help="read | write (write includes read).")],
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
