"""One huggingface_hub client against a `loradex serve` on 127.0.0.1: every operation of issue 17's
"Hugging Face Hub protocol" section, run in whatever interpreter runs this file (the test's own
venv, or a tiny `.venv-hub/<major>` venv with only huggingface_hub in it: no loradex, no numpy).

    python _hub_client_matrix.py ENDPOINT WRITE_TOKEN READ_TOKEN WORKDIR LABEL

Prints one JSON object: {operation: {"ok": true, ...facts} | {"ok": false, "error": "Class: message"}}.
The environment is a user's default one: no HF_HUB_DISABLE_XET (hf_xet is installed with the
client), HF_ENDPOINT set so module-level helpers (ModelCard, the `hf` CLI) find the server.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
from pathlib import Path


def tiny_safetensors(path: Path, seed: int) -> Path:
    """A small kohya-style LoRA written by hand (the client venvs have no safetensors/numpy)."""
    down = bytes((seed * 7 + i) % 251 for i in range(4 * 16 * 4))
    up = bytes((seed * 13 + i) % 241 for i in range(16 * 4 * 4))
    header = {"lora_unet_x.lora_down.weight": {"dtype": "F32", "shape": [4, 16], "data_offsets": [0, len(down)]},
              "lora_unet_x.lora_up.weight": {"dtype": "F32", "shape": [16, 4],
                                             "data_offsets": [len(down), len(down) + len(up)]},
              "__metadata__": {"ss_network_dim": "4"}}
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + down + up)
    return path


def main() -> None:
    endpoint, write_token, read_token, workdir, label = sys.argv[1:6]
    os.environ["HF_ENDPOINT"] = endpoint
    os.environ.pop("HF_HUB_DISABLE_XET", None)
    os.environ.pop("HF_TOKEN", None)
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ["HF_HOME"] = str(Path(workdir) / "hf-home")
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)

    import huggingface_hub
    from huggingface_hub import HfApi
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()
    api = HfApi(endpoint=endpoint, token=write_token)
    results: dict[str, dict] = {"version": {"ok": True, "value": huggingface_hub.__version__}}

    def step(name, fn):
        try:
            out = fn()
            results[name] = {"ok": True, **(out or {})}
        except Exception as exc:  # noqa: BLE001 — the point is to record how each client fails
            first = str(exc).strip().splitlines()
            results[name] = {"ok": False, "error": f"{type(exc).__name__}: {' | '.join(first[:6])[:600]}"}

    lora = tiny_safetensors(work / "style.safetensors", 1)
    repo = f"team/lora-{label}"

    def upload_file():
        api.create_repo(repo, exist_ok=True)
        info = api.upload_file(path_or_fileobj=str(lora), path_in_repo="style.safetensors", repo_id=repo)
        got = api.hf_hub_download(repo, "style.safetensors", cache_dir=str(work / "cache-up"))
        entry = next(f for f in api.list_repo_tree(repo) if f.path == "style.safetensors")
        return {"same_bytes": Path(got).read_bytes() == lora.read_bytes(), "commit": str(info.oid),
                "listed_as_lfs": entry.lfs is not None}

    def upload_big():
        """12 MiB: over the Hub's 10 MB regular-file limit and over the server's 8 MiB in-memory
        commit line, so a Xet-without-asking client's inline body goes through the streamed parser."""
        big, big_repo = work / "big.safetensors", f"team/big-{label}"
        big.write_bytes(os.urandom(12 << 20))
        api.create_repo(big_repo, exist_ok=True)
        api.upload_file(path_or_fileobj=str(big), path_in_repo="big.safetensors", repo_id=big_repo)
        got = api.hf_hub_download(big_repo, "big.safetensors", cache_dir=str(work / "cache-big"))
        digest = hashlib.sha256(big.read_bytes()).hexdigest()
        entry = next(iter(api.get_paths_info(big_repo, ["big.safetensors"])))
        return {"same_sha256": hashlib.sha256(Path(got).read_bytes()).hexdigest() == digest,
                "listed_sha256": entry.lfs is not None and entry.lfs.sha256 == digest}

    def cli_upload():
        folder = work / "cli-folder"
        folder.mkdir(exist_ok=True)
        tiny_safetensors(folder / "cli.safetensors", 2)
        (folder / "README.md").write_text("---\ntags: [lora]\n---\n# cli\n")
        env = {**os.environ, "HF_TOKEN": write_token}
        hf = str(Path(sys.executable).with_name("hf"))
        run = subprocess.run([hf, "upload", f"team/cli-{label}", str(folder), "."], env=env,
                             capture_output=True, text=True, timeout=120)
        if run.returncode != 0:
            raise RuntimeError(f"hf upload exited {run.returncode}: {(run.stderr or run.stdout).strip()[-400:]}")
        files = sorted(api.list_repo_files(f"team/cli-{label}"))
        return {"files": files}

    def list_models():
        for i in range(3):
            api.create_repo(f"team/find-{label}-{i}", exist_ok=True)
        api.create_repo(f"other/find-{label}-x", exist_ok=True)
        by_author = [m.id for m in api.list_models(author="team", search=f"find-{label}")]
        limited = [m.id for m in api.list_models(search=f"find-{label}", limit=2, sort="lastModified")]
        tagged = [m.id for m in api.list_models(author="team", filter="lora")]
        return {"by_author": sorted(by_author), "limited": len(limited), "tagged": sorted(tagged)}

    def cli_models_ls():
        env = {**os.environ, "HF_TOKEN": write_token}
        hf = str(Path(sys.executable).with_name("hf"))
        run = subprocess.run([hf, "models", "ls", "--author", "team", "--search", f"find-{label}", "--format",
                              "json"], env=env, capture_output=True, text=True, timeout=120)
        if run.returncode != 0:
            raise RuntimeError(f"hf models ls exited {run.returncode}: {(run.stderr or run.stdout).strip()[-300:]}")
        return {"ids": sorted(m["id"] for m in json.loads(run.stdout))}

    def whoami():
        read = HfApi(endpoint=endpoint, token=read_token).whoami()
        write = api.whoami()
        return {"read_role": read["auth"]["accessToken"]["role"], "write_role": write["auth"]["accessToken"]["role"]}

    def tree_expand():
        files = {f.path: f for f in api.list_repo_tree(repo, expand=True)}
        info = api.get_paths_info(repo, ["style.safetensors"], expand=True)
        last = files["style.safetensors"].last_commit
        return {"tree_last_commit": bool(last and last.oid), "paths_last_commit": bool(info[0].last_commit)}

    def model_card():
        import inspect

        from huggingface_hub import ModelCard, metadata_update
        from huggingface_hub.repocard import RepoCard

        if "https://huggingface.co/api/validate-yaml" in inspect.getsource(RepoCard.validate):
            results["validate_yaml_hardcoded"] = {"ok": True}  # this client never asks the endpoint

        card = ModelCard("---\nlicense: mit\ntags: [lora]\n---\n# style\n")
        card.validate()  # anonymous: no token in this process's environment
        card.push_to_hub(repo, token=write_token)
        metadata_update(repo, {"base_model": "runwayml/stable-diffusion-v1-5"}, token=write_token, overwrite=True)
        data = api.model_info(repo).card_data
        return {"license": data.get("license"), "base_model": data.get("base_model")}

    def tags():
        from huggingface_hub import CommitOperationAdd

        two = f"team/two-{label}"
        api.create_repo(two, exist_ok=True)
        api.create_commit(two, [CommitOperationAdd("a.safetensors", str(tiny_safetensors(work / "a.safetensors", 3))),
                                CommitOperationAdd("b.safetensors", str(tiny_safetensors(work / "b.safetensors", 4)))],
                          commit_message="two adapters")
        api.create_tag(two, tag="v1.0.0")
        none = f"team/none-{label}"
        api.create_repo(none, exist_ok=True)
        api.create_tag(none, tag="v1.0.0")
        api.create_tag(repo, tag="v1.0.0")  # one adapter file: a catalog version
        return {"tags": [t.name for t in api.list_repo_refs(two).tags] + [t.name for t in api.list_repo_refs(none).tags]}

    def settings_private():
        api.update_repo_settings(repo, private=True)

    def settings_gated():
        api.update_repo_settings(repo, gated="auto")

    def move():
        api.move_repo(repo, f"team/moved-{label}")

    def squash():
        api.super_squash_history(repo)
        commits = api.list_repo_commits(repo)
        files = sorted(api.list_repo_files(repo))
        return {"commits": len(commits), "files": files}

    def create_pr():
        from huggingface_hub import CommitOperationAdd

        api.create_commit(repo, [CommitOperationAdd("pr.txt", b"from a pr")], commit_message="pr", create_pr=True)

    def snapshot():
        from huggingface_hub import CommitOperationAdd, snapshot_download

        bulk = f"team/bulk-{label}"
        api.create_repo(bulk, exist_ok=True)
        ops = [CommitOperationAdd(f"f/{i:03d}.txt", f"file {i}\n".encode()) for i in range(300)]
        api.create_commit(bulk, ops, commit_message="300 files")
        where = snapshot_download(bulk, endpoint=endpoint, token=read_token, cache_dir=str(work / "cache-bulk"))
        return {"files": sum(1 for p in Path(where).rglob("*.txt"))}

    step("upload_file", upload_file)
    step("upload_big", upload_big)
    step("cli_upload", cli_upload)
    step("list_models", list_models)
    step("cli_models_ls", cli_models_ls)
    step("whoami", whoami)
    step("tree_expand", tree_expand)
    step("model_card", model_card)
    step("create_tag", tags)
    step("settings_private", settings_private)
    step("settings_gated", settings_gated)
    step("move_repo", move)
    step("create_pr", create_pr)
    step("super_squash", squash)
    step("snapshot_300", snapshot)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
