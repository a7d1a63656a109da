"""Public namespaces on the Hub routes of ``loradex serve`` (issue 17): a namespace set public with
``serve namespace set`` is readable by a stock, anonymous ``huggingface_hub`` client (metadata and
downloads), a ``listed`` one shows its metadata but keeps its files behind a token, and a private
one stays invisible — in listings too."""

from __future__ import annotations

import pytest

from _served_app import ServedApp
from loradex.merge.synthetic_adapters import write_random_kohya_lora
from loradex.registry.catalog.store import Catalog
from loradex.registry.server.app import build_server_app
from loradex.registry.server.tokens import create_token, set_namespace_visibility

ADMIN = "admin-token-for-public-namespaces"
FILES = [".gitattributes", "style.safetensors"]  # what create_repo + upload_file leave


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    import huggingface_hub.constants as hf_constants
    from huggingface_hub import HfApi
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()
    root = tmp_path_factory.mktemp("public-ns")
    catalog = Catalog(root / "srv")
    visibility = {"open": "public", "shown": "listed", "closed": "private"}
    tokens = {ns: create_token(catalog, "write", namespace=ns, name=f"{ns}-ci").secret for ns in visibility}
    for ns, seen in visibility.items():
        set_namespace_visibility(catalog, ns, seen)
    with pytest.MonkeyPatch.context() as mp, ServedApp(build_server_app(Catalog(root / "srv"), ADMIN)) as srv:
        mp.setattr(hf_constants, "HF_HUB_DISABLE_XET", True)
        mp.delenv("HF_TOKEN", raising=False)
        data = {}
        for i, ns in enumerate(visibility):
            path = write_random_kohya_lora(root / f"{ns}.safetensors", rank=4, seed=i + 1)
            data[ns] = path.read_bytes()
            api = HfApi(endpoint=srv.url, token=tokens[ns])
            api.create_repo(f"{ns}/style")
            api.upload_file(path_or_fileobj=str(path), path_in_repo="style.safetensors", repo_id=f"{ns}/style")
        yield {"url": srv.url, "tokens": tokens, "data": data, "root": root,
               "anonymous": HfApi(endpoint=srv.url, token=False)}


def _http_status(call) -> int:
    from huggingface_hub.errors import HfHubHTTPError

    try:
        call()
    except HfHubHTTPError as exc:
        return exc.response.status_code
    return 200


def test_a_public_namespace_is_read_and_downloaded_without_a_token(served, tmp_path):
    from huggingface_hub import hf_hub_download

    anonymous = served["anonymous"]
    info = anonymous.model_info("open/style", files_metadata=True)
    assert sorted(s.rfilename for s in info.siblings) == FILES
    assert sorted(e.path for e in anonymous.list_repo_tree("open/style")) == FILES
    got = hf_hub_download("open/style", "style.safetensors", endpoint=served["url"], token=False,
                          cache_dir=tmp_path / "cache")
    assert open(got, "rb").read() == served["data"]["open"]


def test_a_listed_namespace_shows_metadata_but_files_need_a_token(served, tmp_path):
    from huggingface_hub import hf_hub_download

    anonymous = served["anonymous"]
    assert sorted(s.rfilename for s in anonymous.model_info("shown/style").siblings) == FILES
    assert _http_status(lambda: hf_hub_download("shown/style", "style.safetensors", endpoint=served["url"],
                                                token=False, cache_dir=tmp_path / "cache")) == 401
    got = hf_hub_download("shown/style", "style.safetensors", endpoint=served["url"],
                          token=served["tokens"]["shown"], cache_dir=tmp_path / "cache2")
    assert open(got, "rb").read() == served["data"]["shown"]


def test_a_private_namespace_needs_a_token_and_a_made_up_token_is_refused(served):
    from huggingface_hub import HfApi

    assert _http_status(lambda: served["anonymous"].model_info("closed/style")) == 401
    assert _http_status(lambda: list(served["anonymous"].list_repo_tree("closed/style"))) == 401
    made_up = HfApi(endpoint=served["url"], token="not-a-token")
    assert _http_status(lambda: made_up.model_info("open/style")) == 401  # a refused token is never anonymous
    assert HfApi(endpoint=served["url"], token=served["tokens"]["closed"]).model_info("closed/style").id == "closed/style"


def test_anonymous_listing_shows_only_public_and_listed_namespaces(served):
    from huggingface_hub import HfApi

    assert sorted(m.id for m in served["anonymous"].list_models()) == ["open/style", "shown/style"]
    admin = HfApi(endpoint=served["url"], token=ADMIN)
    assert sorted(m.id for m in admin.list_models()) == ["closed/style", "open/style", "shown/style"]


def test_anonymous_writes_to_a_public_namespace_stay_refused(served, tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("x")
    assert _http_status(lambda: served["anonymous"].upload_file(
        path_or_fileobj=str(path), path_in_repo="x.txt", repo_id="open/style")) == 401
    assert _http_status(lambda: served["anonymous"].create_tag("open/style", tag="v9.9.9")) == 401
