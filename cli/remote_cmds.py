"""Remotes: ``remote add|list|rm``, ``pull``, ``push``, ``identify`` (``serve`` is in serve_cmds)."""

from __future__ import annotations

from typing import Annotated, List, Optional

import typer

from .options import HomeOpt, JsonOpt, open_catalog
from .output import Output, human_size


def register(app: typer.Typer) -> None:
    remote = typer.Typer(help="Remotes this catalog pulls from and pushes to.", no_args_is_help=True)
    app.add_typer(remote, name="remote")

    @remote.command("add")
    def remote_add(
        name: Annotated[str, typer.Argument(help="Remote name (used as NAME:… in pull refs).")],
        url: Annotated[str, typer.Argument(help="Endpoint URL, e.g. https://civitai.com.")],
        kind: Annotated[Optional[str], typer.Option("--kind", help="hf | civitai | mirror "
                                                    "(default: guessed from the host).")] = None,
        formats: Annotated[Optional[List[str]], typer.Option("--format", help="hf/mirror: what `push` sends, "
                                                             "kohya (default) and/or diffusers.")] = None,
        json: JsonOpt = False, home: HomeOpt = None,
    ) -> None:
        """Record a remote (no token is stored: tokens come from the environment)."""
        from loradex.registry.remotes import add_remote

        settings = {"formats": list(formats)} if formats else None
        record = add_remote(open_catalog(home), name, url, kind, settings=settings)
        Output(json_mode=json).result(record, lambda c: c.print(f"added remote {record.name} ({record.kind}) {record.url}"))

    @remote.command("list")
    def remote_list(json: JsonOpt = False, home: HomeOpt = None) -> None:
        """Recorded remotes."""
        from loradex.registry.remotes import list_remotes

        records = list_remotes(open_catalog(home))
        out = Output(json_mode=json)
        out.result([r.to_dict() for r in records], lambda c: out.table(
            ["name", "kind", "url"], [[r.name, r.kind, r.url] for r in records]))

    @remote.command("rm")
    def remote_rm(name: Annotated[str, typer.Argument(help="Remote name.")],
                  json: JsonOpt = False, home: HomeOpt = None) -> None:
        """Forget a remote (and its sync state)."""
        from loradex.registry.remotes import remove_remote

        record = remove_remote(open_catalog(home), name)
        Output(json_mode=json).result(record, lambda c: c.print(f"removed remote {record.name}"))

    @app.command("pull")
    def pull_cmd(
        ref: Annotated[str, typer.Argument(help="civitai:VERSION_ID, civitai:hash:HASH, civitai:model:ID, "
                                                "a civitai.com model URL, or REMOTE:… for a recorded remote.")],
        endpoint: Annotated[Optional[str], typer.Option("--endpoint", help="API endpoint (default: "
                                                        "https://civitai.com, or the URL's own host).")] = None,
        file: Annotated[Optional[str], typer.Option("--file", help="Pick this file of the version by name.")] = None,
        file_type: Annotated[Optional[str], typer.Option("--type", help="Pick the first file of this type "
                                                         "(Model, Pruned Model, Training Data…).")] = None,
        name: Annotated[Optional[str], typer.Option("--name", help="Adapter name (default: from the model name).")] = None,
        alias: Annotated[Optional[str], typer.Option("--alias", help="Point this alias at the pulled version.")] = None,
        all_versions: Annotated[bool, typer.Option("--all-versions", help="Hub/mirror: pull every v* tag.")] = False,
        update: Annotated[bool, typer.Option("--update", help="REF is an adapter NAME: take the newest upstream "
                                             "version of its source as a new version (minor bump, lineage); "
                                             "see `loradex outdated`.")] = False,
        any_base: Annotated[bool, typer.Option("--any-base", help="With --update: also take a newer version made "
                                               "for another base model.")] = False,
        json: JsonOpt = False, home: HomeOpt = None,
    ) -> None:
        """Download a version from a remote, verify it and register it with its provenance.

        A download whose size the remote does not announce stops at LORADEX_MAX_DOWNLOAD_BYTES
        (default 4 GiB); a malformed answer is refused in one line and registers nothing."""
        from loradex.registry.remotes import pull

        out = Output(json_mode=json)
        catalog = open_catalog(home)
        if update:
            from loradex.registry.remotes.upstream import pull_update

            with out.progress("pull", transfer=True) as progress:
                updated = pull_update(catalog, ref, any_base=any_base, progress=progress)
            out.result(updated.to_dict(), lambda c: c.print(updated.message))
            return
        if any_base:
            from loradex.registry.errors import UsageError

            raise UsageError("--any-base goes with --update")
        opts = {"file": file, "file_type": file_type, "name": name, "alias": alias}
        if all_versions:
            opts["all_versions"] = True
        if endpoint:
            opts["endpoint"] = endpoint
        with out.progress("pull", transfer=True) as progress:
            result = pull(catalog, ref, progress=progress, **opts)

        def human(c):
            v = result.version
            if getattr(result, "already_present", False):
                c.print(f"{v.ref} is already in the catalog (sha256 {v.sha256[:12]}…); nothing downloaded")
                return
            resumed = f", resumed at {human_size(result.resumed_from)}" if result.resumed_from else ""
            c.print(f"pulled {v.ref} ({human_size(v.size)}{resumed}); sha256 {v.sha256[:12]}… verified")

        out.result(result, human)

    @app.command("push")
    def push_cmd(
        ref: Annotated[str, typer.Argument(help="NAME@VERSION to push.")],
        remote_name: Annotated[str, typer.Argument(metavar="REMOTE", help="A recorded remote.")],
        repo: Annotated[Optional[str], typer.Option("--repo", help="Hub repo id (default: NAMESPACE/NAME).")] = None,
        formats: Annotated[Optional[List[str]], typer.Option("--format", help="kohya (default) and/or diffusers "
                                                             "(adds pytorch_lora_weights.safetensors).")] = None,
        json: JsonOpt = False, home: HomeOpt = None,
    ) -> None:
        """Push a version to a recorded remote (kinds that accept pushes)."""
        from loradex.merge.conventions.convert import convert_file
        from loradex.registry.remotes import push

        out = Output(json_mode=json)
        opts = {"repo": repo, "formats": tuple(formats) if formats else None, "converter": convert_file}
        with out.progress("push", transfer=True) as progress:
            result = push(open_catalog(home), ref, remote_name, progress=progress, **opts)
        out.result(result, lambda c: c.print(str(result)))

    @app.command("identify")
    def identify_cmd(
        refs: Annotated[Optional[List[str]], typer.Argument(help="Versions to look up (default: --all).")] = None,
        all_versions: Annotated[bool, typer.Option("--all", help="Every version without provenance.")] = False,
        endpoint: Annotated[Optional[str], typer.Option("--endpoint", help="Civitai-style API endpoint.")] = None,
        json: JsonOpt = False, home: HomeOpt = None,
    ) -> None:
        """Find versions without provenance on Civitai by hash and attach what is found."""
        from loradex.registry.remotes.civitai import identify

        out = Output(json_mode=json)
        with out.progress("identify") as progress:
            report = identify(open_catalog(home), refs or None, all_versions=all_versions,
                              endpoint=endpoint, progress=progress)

        def human(c):
            for hit in report.identified:
                c.print(f"{hit['ref']}: {hit['model']} {hit['version']} (civitai:{hit['versionId']})")
            c.print(f"identified {len(report.identified)}, unknown {len(report.unknown)}, "
                    f"already had provenance {len(report.skipped)}")

        out.result(report, human)
