"""DreamBooth: bind a subject to ``instance_prompt`` by fine-tuning the UNet (and optionally the
text encoder) — or, for ``dreambooth-lora``, a LoRA with the same objective.

Prior preservation adds ``prior_loss_weight`` × the loss on class images with ``class_prompt``,
which keeps the class ("a dog") from collapsing onto the subject. Missing class images are
generated with the base before training and cached in ``class_data`` (default
``<output_dir>/class-images``) with a small JSON saying which base, prompt and resolution made
them; a later run with the same settings reuses them.

The full fine-tune is written as one ``.safetensors`` holding the whole model (UNet, VAE, text
encoders) in the original single-file layout (``model.diffusion_model.*`` …, see
``merge.checkpoint_layout``) that A1111, ComfyUI and diffusers' ``from_single_file`` load, and is
registered as kind ``checkpoint``. Bases of other families (SD 2.x) get the older diffusers-keyed
file (UNet keys bare, text encoders under ``text_encoder.`` / ``text_encoder_2.``), which only
loradex reads. ``format = "diffusers"`` also saves a whole diffusers pipeline folder beside the
file (an extra output: the catalog stores single files).
"""

from __future__ import annotations

import json
from pathlib import Path

from .train_lora import LoraAdapterMixin
from .train_registry import Exported, TrainingMethod, register_method, unet_and_text_encoder_groups

CLASS_INFO = "class-images.json"


def class_images_dir(config) -> Path:
    return Path(config.class_data) if config.class_data else Path(config.output_dir) / "class-images"


def ensure_class_images(run) -> Path:
    """Generate class images until ``num_class_images`` exist (seeded: seed·7919 + i)."""
    import torch

    from .dataset import image_files

    c = run.config
    folder = class_images_dir(c)
    folder.mkdir(parents=True, exist_ok=True)
    info_path = folder / CLASS_INFO
    wanted = {"base_hash": run.base.hash, "class_prompt": c.class_prompt, "resolution": c.resolution}
    if info_path.is_file() and json.loads(info_path.read_text()) != wanted:
        # generated for another base/prompt/size: not this run's prior
        for path in image_files(folder):
            path.unlink()
            path.with_suffix(".txt").unlink(missing_ok=True)
    have = len(image_files(folder))
    if have < c.num_class_images:
        run.set_training(False)
        try:
            with torch.no_grad():
                for i in range(have, c.num_class_images):
                    image = run.pipe(prompt=c.class_prompt, num_inference_steps=c.sample_steps,
                                     height=c.resolution, width=c.resolution,
                                     generator=torch.Generator("cpu").manual_seed(c.seed * 7919 + i)).images[0]
                    image.save(folder / f"class-{i:05d}.png")
                    (folder / f"class-{i:05d}.txt").write_text(c.class_prompt)
        finally:
            run.set_training(True)
        info_path.write_text(json.dumps(wanted, sort_keys=True))
    return folder


class DreamBoothObjective:
    """Instance prompt for every training image, plus the optional prior-preservation term."""

    def setup_prior(self, run) -> None:
        from .dataset import ImageCaptionDataset, check_dataset

        c = run.config
        if not c.prior_preservation:
            return
        folder = ensure_class_images(run)
        report = check_dataset(folder, resolution=c.resolution, caption_ext=".txt")
        report.raise_for_errors()
        run.extra["class_dataset"] = ImageCaptionDataset(folder, report, batch_size=c.batch_size)
        run.extra["num_class_images"] = len(report.images)

    def prompts(self, run, captions):
        return [run.config.instance_prompt] * len(captions)

    def loss(self, run, index: int, gen):
        c = run.config
        pixels, captions = run.dataset.batch(c.seed, index)
        loss = run.diffusion_loss(pixels, self.prompts(run, captions), gen)
        prior = run.extra.get("class_dataset")
        if prior is not None:
            class_pixels, _ = prior.batch(c.seed + 1, index)
            loss = loss + c.prior_loss_weight * run.diffusion_loss(
                class_pixels, [c.class_prompt] * class_pixels.shape[0], gen)
        return loss

    def default_sample_prompts(self, run) -> list[str]:
        return [run.config.instance_prompt]


@register_method("dreambooth")
class DreamBoothMethod(DreamBoothObjective, TrainingMethod):
    output_kind = "checkpoint"

    def setup(self, run) -> list:
        self.setup_prior(run)
        run.unet.requires_grad_(True)
        modules = [run.unet]
        if run.config.train_text_encoder:
            for _, _, encoder in run.text_encoders():
                encoder.requires_grad_(True)
                modules.append(encoder)
        return modules

    def param_groups(self, run) -> list[dict]:
        return unet_and_text_encoder_groups(run)

    def state_dict_file(self, run) -> tuple[dict, str]:
        """(tensors, layout): the whole model in the original single-file layout A1111, ComfyUI and
        ``from_single_file`` read, for the families it is written for (sd1, sdxl); otherwise the
        trained components only, diffusers-keyed (UNet bare, text encoders under their names)."""
        from loradex.merge.conventions.checkpoint_layout import LDM_FAMILIES, pipeline_to_ldm

        if run.family in LDM_FAMILIES:
            return pipeline_to_ldm(run.pipe, run.family), "ldm"
        state = {k: v.detach().float().cpu().contiguous() for k, v in run.unet.state_dict().items()}
        if run.config.train_text_encoder:
            for component, _, encoder in run.text_encoders():
                state.update({f"{component}.{k}": v.detach().float().cpu().contiguous()
                              for k, v in encoder.state_dict().items()})
        return state, "diffusers-unet"

    def export(self, run, dest_dir: Path, step: int) -> Exported:
        from safetensors.torch import save_file

        from loradex.registry.files.atomic_files import atomic_path

        from .registration import checkpoint_training_metadata

        dest_dir.mkdir(parents=True, exist_ok=True)
        dest = dest_dir / f"{run.config.output_name}.safetensors"
        state, layout = self.state_dict_file(run)
        metadata = checkpoint_training_metadata(run, step)
        if layout == "ldm":
            metadata["loradex.layout"] = "ldm"
        with atomic_path(dest) as tmp:
            save_file(state, str(tmp), metadata=metadata)
        extra = []
        if run.config.format == "diffusers":
            folder = dest_dir / f"{run.config.output_name}-diffusers"
            run.pipe.save_pretrained(str(folder), safe_serialization=True)
            extra.append(folder)
        return Exported(dest, "checkpoint", "checkpoint" if layout == "ldm" else "diffusers-unet",
                        triggers=_instance_triggers(run), extra_paths=extra)


@register_method("dreambooth-lora")
class DreamBoothLoraMethod(DreamBoothObjective, LoraAdapterMixin, TrainingMethod):
    def setup(self, run) -> list:
        self.setup_prior(run)
        return LoraAdapterMixin.setup(self, run)

    def export(self, run, dest_dir: Path, step: int) -> Exported:
        exported = LoraAdapterMixin.export(self, run, dest_dir, step)
        exported.triggers = _instance_triggers(run) + [t for t in exported.triggers
                                                        if t not in _instance_triggers(run)]
        return exported


def _instance_triggers(run) -> list[str]:
    return [run.config.instance_prompt] if run.config.instance_prompt else []
