"""hooks add | list | rm | test | deliveries | deliver: webhooks fed from the catalog's outbox."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from .options import HomeOpt, JsonOpt, open_catalog
from .output import Output

hooks_app = typer.Typer(help="Webhooks: POST signed JSON to a URL when aliases move, versions are added, "
                             "reviews are stored or promotions are refused/requested/decided.",
                        no_args_is_help=True)
HookArg = Annotated[int, typer.Argument(help="Hook id (see `loradex hooks list`).", min=1)]


def register(app: typer.Typer) -> None:
    app.add_typer(hooks_app, name="hooks")


@hooks_app.command("add")
def hooks_add(
    url: Annotated[str, typer.Argument(help="http(s) URL the events are POSTed to.")],
    events: Annotated[str, typer.Option("--events", help="Comma-separated: alias.moved, version.added, "
                                        "review.added, promotion.refused, promotion.requested, "
                                        "promotion.decided.")] = "alias.moved,version.added,review.added,promotion.refused",
    secret: Annotated[Optional[str], typer.Option("--secret", help="Signing secret (16-200 characters; "
                                                  "default: a new random one, shown once).")] = None,
    json: JsonOpt = False, home: HomeOpt = None,
) -> None:
    """Add a webhook. Deliveries carry X-Loradex-Signature: v1,base64(HMAC-SHA256(secret,
    "DELIVERY_ID.TIMESTAMP.BODY")); the secret is shown here once and never printed again."""
    from loradex.registry.remotes.webhooks import add_hook

    created = add_hook(open_catalog(home), url, [events], secret=secret)
    h = created.hook

    def human(c):
        c.print(f"added hook #{h.id} → {h.url} ({', '.join(h.events)})", soft_wrap=True)
        if secret is None:
            c.print("signing secret (copy it now, it is not shown again):", soft_wrap=True)
            c.print(created.secret, soft_wrap=True)

    Output(json_mode=json).result(created.to_dict() if secret is None else h.to_dict(), human)


@hooks_app.command("list")
def hooks_list(json: JsonOpt = False, home: HomeOpt = None) -> None:
    """Webhooks (no secrets) and how many deliveries each has pending."""
    from loradex.registry.remotes.webhooks import list_hooks

    hooks = list_hooks(open_catalog(home))
    out = Output(json_mode=json)
    out.result([h.to_dict() for h in hooks], lambda c: out.table(
        ["id", "url", "events", "pending", "created by"],
        [[h.id, h.url, ", ".join(h.events), h.pending, h.created_by] for h in hooks]))


@hooks_app.command("rm")
def hooks_rm(hook: HookArg, json: JsonOpt = False, home: HomeOpt = None) -> None:
    """Remove a webhook (its pending deliveries are dropped)."""
    from loradex.registry.remotes.webhooks import remove_hook

    h = remove_hook(open_catalog(home), hook)
    Output(json_mode=json).result(h.to_dict(), lambda c: c.print(f"removed hook #{h.id} ({h.url})", soft_wrap=True))


@hooks_app.command("test")
def hooks_test(hook: HookArg, json: JsonOpt = False, home: HomeOpt = None) -> None:
    """Send a hook.test event to this hook now (through the outbox, like every event)."""
    from loradex.registry.remotes.webhooks import deliver_due, list_deliveries, queue_test

    catalog = open_catalog(home)
    delivery_id = queue_test(catalog, hook)
    deliver_due(catalog, max_deliveries=20)
    row = next(d for d in list_deliveries(catalog, hook_id=hook, limit=50) if d.delivery_id == delivery_id)

    def human(c):
        if row.status == "delivered":
            c.print(f"hook #{hook}: delivered test event {delivery_id}")
        else:
            c.print(f"hook #{hook}: test event {delivery_id} pending ({row.last_error or 'earlier events wait'}); "
                    "it is retried with back-off", soft_wrap=True)

    Output(json_mode=json).result(row.to_dict(), human)


@hooks_app.command("deliveries")
def hooks_deliveries(
    hook: Annotated[Optional[int], typer.Option("--hook", min=1, help="Only this hook's.")] = None,
    status: Annotated[Optional[str], typer.Option("--status", help="pending | delivered.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000, help="Newest N.")] = 50,
    json: JsonOpt = False, home: HomeOpt = None,
) -> None:
    """Deliveries, newest first: status, attempts, next try and last error."""
    from loradex.registry.remotes.webhooks import list_deliveries

    rows = list_deliveries(open_catalog(home), hook_id=hook, status=status, limit=limit)
    out = Output(json_mode=json)
    out.result([d.to_dict() for d in rows], lambda c: out.table(
        ["hook", "event", "delivery id", "status", "attempts", "next try", "last error"],
        [[d.hook_id, d.event, d.delivery_id, d.status, d.attempts,
          f"{d.next_attempt_at:%Y-%m-%d %H:%M:%S}" if d.status == "pending" and d.next_attempt_at else "",
          d.last_error] for d in rows]))


@hooks_app.command("deliver")
def hooks_deliver(
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000, help="Try at most N deliveries.")] = 100,
    json: JsonOpt = False, home: HomeOpt = None,
) -> None:
    """Send the due deliveries now (what `serve` does in the background)."""
    from loradex.registry.remotes.webhooks import deliver_due

    report = deliver_due(open_catalog(home), max_deliveries=limit)
    Output(json_mode=json).result(report.to_dict(), lambda c: c.print(
        f"delivered {report.delivered}, failed {report.failed}"
        + (f", {report.waiting} waiting (next at {report.next_at:%Y-%m-%d %H:%M:%S} UTC)" if report.waiting else "")
        + (f" ({'; '.join(report.errors[:3])})" if report.errors else ""), soft_wrap=True))
