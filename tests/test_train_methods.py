"""Training on tiny pipelines (CPU, 32×32, batch 2, a few steps): every method learns, its output
loads back into a pipeline and changes the image, the registered version carries its evidence,
and a Ctrl-C + --resume run ends bit-identical to an uninterrupted one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from _train_fixtures import make_dataset

torch = pytest.importorskip("torch")

TOKEN = "<sks>"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("train-data") / "shapes")


def config(method: str, data: Path, out: Path, **kw):
    from loradex.trainer.train_config import resolve_config

    values = dict(base="tiny-sd1", data=str(data), output_dir=str(out), resolution=32, batch_size=2, steps=6,
                  sample_steps=2, lr=1e-2)
    if method == "ti":
        values.update(token=TOKEN, init_token="a", lr=5e-2)
    if method.startswith("dreambooth"):
        values.update(instance_prompt="a photo of sks shape")
    values.update(kw)
    return resolve_config(method, overrides=values)


def render(pipe, prompt="a photo of sks shape, red square"):
    gen = torch.Generator("cpu").manual_seed(0)
    return pipe(prompt, num_inference_steps=2, height=32, width=32, generator=gen, output_type="np").images[0]


def tiny():
    from loradex.trainer.tiny_pipeline import build_tiny_sd1_pipeline

    return build_tiny_sd1_pipeline(seed=0)


def test_lora_learns_loads_and_registers_with_evidence(data, tmp_path):
    from safetensors import safe_open

    from loradex.registry.catalog.store import Catalog
    from loradex.registry.catalog.records import list_records
    from loradex.trainer.base_loader import tiny_hash
    from loradex.trainer.registration import train_and_register

    catalog = Catalog()
    seen = []
    cfg = config("lora", data, tmp_path / "out", save_every=3, register_checkpoints=True, seed=7,
                 sample_prompts=["sks, red square", "sks, blue circle"])
    result, added = train_and_register(cfg, catalog=catalog, progress=lambda s, t, i: seen.append((s, t, i["loss"])))
    assert [s for s, _, _ in seen] == [1, 2, 3, 4, 5, 6] and all(t == 6 for _, t, _ in seen)
    assert result.eval_loss_after < result.eval_loss_before  # same batch, noise and timesteps

    # kohya keys, with the training facts in the header
    with safe_open(str(result.output.path), "pt") as fh:
        keys, meta = list(fh.keys()), fh.metadata()
    assert keys and all(k.startswith("lora_unet_") for k in keys)
    assert meta["ss_seed"] == "7" and meta["ss_steps"] == "6" and meta["ss_network_dim"] == "4"
    assert meta["ss_new_sd_model_hash"] == tiny_hash("sd1", 0)
    assert json.loads(meta["ss_tag_frequency"]) == {"shapes": {"sks": 8, "red square": 1, "green square": 1,
                                                               "blue square": 1, "yellow square": 1,
                                                               "red circle": 1, "green circle": 1,
                                                               "blue circle": 1, "yellow circle": 1}}
    assert meta["modelspec.architecture"] == "stable-diffusion-v1/lora"

    # loads into a fresh pipeline (every key used) and changes the image
    pipe = tiny()
    before = render(pipe)
    pipe.load_lora_weights(str(result.output.path), adapter_name="trained")
    after = render(pipe)
    assert abs(after - before).max() > 1e-3

    # the catalog: a pre-release per checkpoint, then the release, with lineage and records
    assert [a.version.version for a in added] == ["1.0.0-step.3", "1.0.0"]
    final = added[-1].version
    assert final.trigger_words == ("sks",) and final.probe["kind"] == "lora"
    (edge,) = catalog.lineage(final.ref)
    assert edge.relation == "trained_from" and edge.parent == f"base:tiny-sd1@{tiny_hash('sd1', 0)}"
    assert edge.recipe["seed"] == 7 and edge.recipe["config"]["rank"] == 4
    assert edge.recipe["dataset"]["manifest_sha256"] == result.dataset.manifest_sha256()
    assert len(edge.recipe["dataset"]["manifest"]["images"]) == 8
    assert edge.recipe["loss"]["steps"] == 6 and "torch" in edge.recipe["libraries"]
    records = list_records(catalog, final.ref)
    assert sorted(r.record["prompt"] for r in records) == ["sks, blue circle", "sks, red square"]
    assert all(r.record["source"] == "train-sample" and r.image_blob for r in records)
    assert sorted(final.extra["training"]["sample_records"]) == sorted(r.id for r in records)


def test_textual_inversion_only_new_rows_train_and_load(data, tmp_path):
    from typer.testing import CliRunner
    from safetensors.torch import load_file

    from loradex.cli.app import app
    from loradex.registry.catalog.store import Catalog

    out = tmp_path / "out"
    args = ["train", "ti", "--base", "tiny-sd1", "--data", str(data), "--output-dir", str(out),
            "--resolution", "32", "--batch-size", "2", "--steps", "6", "--sample-steps", "2", "--lr", "0.05",
            "--token", TOKEN, "--init-token", "a", "--name", "sks-style", "--json"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    data_out = json.loads(res.stdout[res.stdout.index("{"):])  # stdout only: warnings go to stderr
    assert data_out["loss"]["eval_after"] < data_out["loss"]["eval_before"]
    path = Path(data_out["output"]["path"])
    emb = load_file(str(path))
    assert set(emb) == {"emb_params"} and emb["emb_params"].shape == (1, 32)

    pipe = tiny()
    init_row = pipe.text_encoder.get_input_embeddings().weight[pipe.tokenizer.encode("a", add_special_tokens=False)[0]]
    assert not torch.equal(emb["emb_params"][0], init_row)  # it moved from its initial value
    untrained = tiny()
    untrained.load_textual_inversion({TOKEN: init_row.detach().clone()}, token=TOKEN)
    pipe.load_textual_inversion(str(path), token=TOKEN)
    assert abs(render(pipe, f"a photo of {TOKEN}") - render(untrained, f"a photo of {TOKEN}")).max() > 1e-4

    version = Catalog().resolve("sks-style")
    assert version.probe["kind"] == "embedding" and TOKEN in version.trigger_words
    assert version.extra["training"]["token"] == TOKEN


def test_textual_inversion_restores_every_old_row(data, tmp_path):
    from loradex.trainer.train_loop import prepare_run

    run = prepare_run(config("ti", data, tmp_path / "out", num_vectors=2, weight_decay=0.5))
    weight = run.pipe.text_encoder.get_input_embeddings().weight
    ids = run.pipe.tokenizer.convert_tokens_to_ids([TOKEN, TOKEN + "_1"])
    assert ids == [weight.shape[0] - 2, weight.shape[0] - 1]
    base = tiny().text_encoder.get_input_embeddings().weight
    with torch.no_grad():
        weight.add_(torch.randn_like(weight))  # what a step with weight decay would do to every row
        moved = weight[ids].clone()
    run.method.after_optimizer_step(run)
    assert torch.equal(weight[:-2], base) and torch.equal(weight[ids], moved)
    assert [n for n, _ in run.trainable] == ["text_encoder.embeddings.token_embedding.weight"]


def test_dreambooth_with_prior_preservation_and_diffusers_folder(data, tmp_path):
    from loradex.registry.catalog.store import Catalog
    from loradex.trainer.base_loader import apply_state_dict_checkpoint
    from loradex.trainer.dataset import image_files
    from loradex.trainer.registration import train_and_register

    catalog = Catalog()
    class_dir = tmp_path / "class"
    cfg = config("dreambooth", data, tmp_path / "out", lr=1e-3, steps=4, prior_preservation=True,
                 class_prompt="a photo of a shape", num_class_images=2, class_data=str(class_dir),
                 format="diffusers")
    result, added = train_and_register(cfg, catalog=catalog)
    assert result.eval_loss_after < result.eval_loss_before
    generated = image_files(class_dir)
    assert len(generated) == 2
    stamps = [p.stat().st_mtime_ns for p in generated]

    # the single file and the diffusers folder give the same trained model, unlike the base
    pipe = tiny()
    base_image = render(pipe)
    apply_state_dict_checkpoint(pipe, result.output.path)
    from_file = render(pipe)
    assert abs(from_file - base_image).max() > 1e-3
    from diffusers import StableDiffusionPipeline

    folder = StableDiffusionPipeline.from_pretrained(str(result.output.extra_paths[0]), safety_checker=None,
                                                     requires_safety_checker=False)
    folder.set_progress_bar_config(disable=True)
    assert abs(render(folder) - from_file).max() < 1e-5

    version = added[-1].version
    assert version.probe["kind"] == "checkpoint" and version.extra["training"]["weights"] == "state_dict"
    # same base, prompt and size: the class images are reused, not regenerated
    again = config("dreambooth", data, tmp_path / "out2", lr=1e-3, steps=1, prior_preservation=True,
                   class_prompt="a photo of a shape", num_class_images=2, class_data=str(class_dir), register=False)
    train_and_register(again, catalog=catalog)
    assert [p.stat().st_mtime_ns for p in image_files(class_dir)] == stamps
    # the registered checkpoint is a base for the next run
    child = config("dreambooth", data, tmp_path / "out3", lr=1e-3, steps=1, base=version.ref, register=False)
    result3, _ = train_and_register(child, catalog=catalog)
    assert result3.base_catalog_ref == version.ref and result3.base.hash == version.sha256


def test_dreambooth_lora_learns_and_loads(data, tmp_path):
    from loradex.trainer.registration import train_and_register

    cfg = config("dreambooth-lora", data, tmp_path / "out", steps=5, register=False, format="diffusers")
    result, added = train_and_register(cfg)
    assert added == [] and result.eval_loss_after < result.eval_loss_before
    pipe = tiny()
    before = render(pipe)
    pipe.load_lora_weights(str(result.output.path))
    assert abs(render(pipe) - before).max() > 1e-3
    assert result.output.triggers[0] == "a photo of sks shape"


def test_ctrl_c_then_resume_is_bit_identical(data, tmp_path):
    from safetensors.torch import load_file

    from loradex.trainer.train_loop import train

    straight = train(config("lora", data, tmp_path / "a", steps=6, grad_accum=2, lr_scheduler="cosine",
                            snr_gamma=5.0, noise_offset=0.05, register=False))

    def stop_at_4(step, total, info):
        if step == 4:
            raise KeyboardInterrupt

    cfg = config("lora", data, tmp_path / "b", steps=6, grad_accum=2, lr_scheduler="cosine", snr_gamma=5.0,
                 noise_offset=0.05, register=False)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, progress=stop_at_4)
    assert (tmp_path / "b" / "checkpoints" / "step-000004" / "state.json").is_file()
    cfg.resume = "latest"
    resumed = train(cfg)
    assert resumed.losses == straight.losses
    a, b = load_file(str(straight.output.path)), load_file(str(resumed.output.path))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_demo_trains_and_registers_a_lora_and_an_embedding(tmp_path):
    from loradex.registry.catalog.store import Catalog
    from loradex.registry.catalog.records import list_records
    from loradex.trainer.train_demo import train_demo_adapters

    catalog = Catalog()
    lines = []
    added = train_demo_adapters(catalog, tmp_path, log=lines.append)
    assert [a.version.ref for a in added] == ["demo-shapes-lora@1.0.0", "demo-shapes-ti@1.0.0"]
    assert [a.version.probe["kind"] for a in added] == ["lora", "embedding"]
    for a in added:
        (edge,) = catalog.lineage(a.version.ref)
        assert edge.relation == "trained_from" and edge.recipe["loss"]["eval_after"] < edge.recipe["loss"]["eval_before"]
        assert list_records(catalog, a.version.ref)
    assert any("fixed-batch loss" in line for line in lines)


def test_locon_with_text_encoder_in_bf16_loads_every_module(data, tmp_path):
    # runs after fp32 runs in this process: the accelerate state must switch precision
    from safetensors import safe_open

    from loradex.trainer.train_loop import train

    result = train(config("lora", data, tmp_path / "out", steps=2, conv_rank=2, train_text_encoder=True,
                          mixed_precision="bf16", gradient_checkpointing=True, register=False))
    with safe_open(str(result.output.path), "pt") as fh:
        keys, meta = list(fh.keys()), fh.metadata()
    downs = [k for k in keys if k.endswith(".lora_down.weight")]
    assert any(k.startswith("lora_te_") for k in downs) and any("_conv1." in k for k in downs)
    assert json.loads(meta["ss_network_args"]) == {"conv_dim": "2", "conv_alpha": "2.0"}
    with safe_open(str(result.output.path), "pt") as fh:  # lora_up starts at zero: non-zero = trained
        te_ups = [fh.get_tensor(k) for k in keys if k.startswith("lora_te_") and k.endswith(".lora_up.weight")]
    assert te_ups and all(t.abs().max() > 0 for t in te_ups)
    pipe = tiny()
    pipe.load_lora_weights(str(result.output.path))
    loaded = [m for m in list(pipe.unet.modules()) + list(pipe.text_encoder.modules())
              if hasattr(m, "lora_A") and len(m.lora_A)]
    assert len(loaded) == len(downs)  # diffusers drops unknown keys silently; none may be dropped


def test_every_sample_becomes_a_record_and_render_check_reproduces_it(data, tmp_path):
    from typer.testing import CliRunner

    from loradex.cli.app import app
    from loradex.registry.catalog.store import Catalog
    from loradex.registry.errors import UsageError
    from loradex.registry.catalog.records import get_record, list_records
    from loradex.trainer.generate import render_record
    from loradex.trainer.registration import train_and_register

    catalog = Catalog()
    cfg = config("lora", data, tmp_path / "out", steps=3, sample_every=1, save_every=2, register_checkpoints=True,
                 sample_prompts=["sks, red square"], name="sampled")
    result, added = train_and_register(cfg, catalog=catalog)
    assert [s.step for s in result.intermediate_samples] == [1, 2] and [s.step for s in result.samples] == [3]
    assert [a.version.version for a in added] == ["1.0.0-step.2", "1.0.0"]
    pre, final = (a.version for a in added)
    ids = final.extra["training"]["sample_records"]
    step1, step2, step3 = (get_record(catalog, i).record for i in ids)
    assert [r["notes"] for r in (step2, step3)] == ["training sample at step 2 of 3", "training sample at step 3"]
    assert step1["notes"].startswith("training sample at step 1 of 3: those weights were not registered")
    # each names the exact file its image was made with; step 1's weights were never registered
    assert [r["stack"][0]["ref"] for r in (step1, step2, step3)] == [None, pre.ref, final.ref]
    assert [r.id for r in list_records(catalog, pre.ref)] == [step2["id"]] == pre.extra["training"]["sample_records"]
    assert [r.id for r in list_records(catalog, final.ref)] == [step3["id"]]
    # the records' image hash is the schema's (b"RGB WxH\n" + pixels), so re-rendering matches it
    for record in (step2, step3):
        res = CliRunner().invoke(app, ["render", record["id"], "--check", "--json"])
        assert res.exit_code == 0, res.output
        assert json.loads(res.stdout)["identical"] is True
    with pytest.raises(UsageError, match="cannot be re-rendered"):
        render_record(catalog, step1["id"])


def test_tiny_sdxl_lora_with_both_text_encoders_and_ti_with_clip_l_and_clip_g(data, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file

    from loradex.trainer.tiny_pipeline import build_tiny_sdxl_pipeline
    from loradex.trainer.train_loop import train

    def fresh():
        pipe = build_tiny_sdxl_pipeline(seed=0)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def with_lora(pipe):
        return [m for part in (pipe.unet, pipe.text_encoder, pipe.text_encoder_2) for m in part.modules()
                if hasattr(m, "lora_A") and len(m.lora_A)]

    # diffusers format: every module of UNet + both text encoders loads back and the image moves
    lora = train(config("lora", data, tmp_path / "lora", base="tiny-sdxl", steps=2, train_text_encoder=True,
                        format="diffusers", register=False))
    keys = load_file(str(lora.output.path))
    pipe = fresh()
    before = render(pipe)
    pipe.load_lora_weights(str(lora.output.path))
    assert {k.split(".")[0] for k in keys} == {"unet", "text_encoder", "text_encoder_2"}
    assert len(with_lora(pipe)) == len([k for k in keys if k.endswith("lora_A.weight")])
    assert abs(render(pipe) - before).max() > 1e-3

    # kohya format: lora_unet_ / lora_te1_ / lora_te2_; every text-encoder module loads back.
    # (The UNet's SGM block numbers are real SDXL's, which the tiny UNet's 1 layer per block
    # does not share, so diffusers places some of them elsewhere on the tiny model.)
    kohya = train(config("lora", data, tmp_path / "kohya", base="tiny-sdxl", steps=1, train_text_encoder=True,
                         register=False))
    with safe_open(str(kohya.output.path), "pt") as fh:
        downs = [k for k in fh.keys() if k.endswith(".lora_down.weight")]
        meta = fh.metadata()
    assert {k.split("_", 2)[1] for k in downs} == {"unet", "te1", "te2"}
    assert meta["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    pipe = fresh()
    pipe.load_lora_weights(str(kohya.output.path))
    te_loaded = [m for part in (pipe.text_encoder, pipe.text_encoder_2) for m in part.modules()
                 if hasattr(m, "lora_A") and len(m.lora_A)]
    assert len(te_loaded) == len([k for k in downs if k.startswith(("lora_te1_", "lora_te2_"))])

    ti = train(config("ti", data, tmp_path / "ti", base="tiny-sdxl", steps=2, register=False))
    emb = load_file(str(ti.output.path))
    assert set(emb) == {"clip_l", "clip_g"} and emb["clip_l"].shape == (1, 32) and emb["clip_g"].shape == (1, 32)
    pipe = fresh()
    untrained = fresh()
    for p, vectors in ((pipe, emb), (untrained, None)):
        for key, encoder, tokenizer in (("clip_l", p.text_encoder, p.tokenizer),
                                        ("clip_g", p.text_encoder_2, p.tokenizer_2)):
            init_row = encoder.get_input_embeddings().weight[tokenizer.encode("a", add_special_tokens=False)[0]]
            row = vectors[key][0] if vectors else init_row.detach().clone()
            assert vectors is None or not torch.equal(row, init_row)  # the trained rows moved
            p.load_textual_inversion({TOKEN: row}, token=TOKEN, text_encoder=encoder, tokenizer=tokenizer)
    assert abs(render(pipe, f"a photo of {TOKEN}") - render(untrained, f"a photo of {TOKEN}")).max() > 1e-4


def test_sdxl_conditioning_is_what_the_pipeline_computes(data, tmp_path):
    # the engine encodes prompts itself (to call the prepared text encoders): same numbers
    from loradex.trainer.train_loop import prepare_run

    run = prepare_run(config("ti", data, tmp_path / "out", base="tiny-sdxl", num_vectors=2))
    prompts = [f"a photo of {TOKEN}, red square", "sks, blue circle"]
    with torch.no_grad():
        ours = run.encode_prompts(prompts, 32, 32)
        embeds, _, pooled, _ = run.pipe.encode_prompt(prompt=prompts, device=run.device, num_images_per_prompt=1,
                                                      do_classifier_free_guidance=False)
    assert torch.equal(ours["encoder_hidden_states"], embeds)
    assert torch.equal(ours["added_cond_kwargs"]["text_embeds"], pooled)
