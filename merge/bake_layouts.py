"""bake into the other layout (sd1 / sdxl), the fused weights renamed by ``merge.checkpoint_layout``:

- diffusers folder → original-layout single file (what A1111, ComfyUI and diffusers'
  ``from_single_file`` read): every component file with the adapters fused
  (``model_weights.fused_state``, the same W + Σ w·ΔW as the file-to-file bake), renamed to ldm / SGM
  keys from the folder's own UNet and VAE configs, written as one file with ModelSpec metadata and
  the recipe;
- single file → diffusers folder: the file's weights fused, split into components named as the
  weight files of a ``config`` folder of the same family, and written into a copy of that folder
  (its configs, tokenizers and scheduler).

Nothing is loaded as a model, every tensor keeps its dtype and the bytes are stable
(``registry.safetensors_writer``), so a registered single file replays bit-identical.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from .model_weights import DIFFUSERS_COMPONENT_FILES, ModelWeights, _family_from_folder, fused_state, replace_folder

COMPONENT_FILES = {**DIFFUSERS_COMPONENT_FILES, "vae": "vae/diffusion_pytorch_model.safetensors"}


def check_layout_change(base: str, weights: ModelWeights, target: str, config) -> dict:
    """Refuse, before anything is written, a layout change bake cannot make; returns the recipe
    options it needs (``config``: the resolved folder, for single file → diffusers)."""
    from loradex.registry.errors import UsageError

    from .conventions.checkpoint_layout import LDM_FAMILIES

    if weights.family not in LDM_FAMILIES:
        raise UsageError(f"bake {base} → {target}: the original single-file layout is read and written for "
                         f"{' and '.join(LDM_FAMILIES)} only, and this base is {weights.family or 'of unknown family'}",
                         hint="leave --format out to bake into the base's own layout")
    if target == "single-file":
        return {}
    if config is None:
        raise UsageError(f"bake {base} → diffusers: a single file holds no configs, tokenizers or scheduler",
                         hint="add --config FOLDER: a diffusers folder of the same family (copied, its weights replaced)")
    folder = Path(config).resolve()
    if not (folder / "model_index.json").is_file():
        raise UsageError(f"--config {config}: not a diffusers folder (no model_index.json)",
                         hint="give a diffusers folder of the same family as the base")
    if _family_from_folder(folder) != weights.family:
        raise UsageError(f"--config {config}: a {_family_from_folder(folder)} folder, and the base {base} is "
                         f"{weights.family}", hint="give a diffusers folder of the same family as the base")
    return {"config": str(folder)}


def checkpoint_metadata(recipe: dict) -> dict[str, str]:
    """ModelSpec keys of a baked checkpoint, its parents and its recipe (no date: replay is bit-exact)."""
    from .conventions.modelspec import CHECKPOINT, modelspec_metadata
    from .conventions.encoding import canonical_json

    parents = [i["ref"] for i in recipe["inputs"] if i.get("role") == "adapter"]
    meta = modelspec_metadata({}, base=recipe.get("base"), title=recipe["output"].get("name") or "loradex-bake",
                              adapter=CHECKPOINT)
    meta.update({"modelspec.merged_from": ", ".join(parents), "loradex.recipe": canonical_json(recipe),
                 "loradex.layout": "ldm"})
    return meta


def _configs(folder: Path) -> tuple[dict, dict]:
    return tuple(json.loads((folder / c / "config.json").read_text()) for c in ("unet", "vae"))


def _required_files(folder: Path, family: str) -> dict[str, Path]:
    from loradex.registry.errors import InvalidFile

    from .conventions.checkpoint_layout import TEXT_ENCODER_PREFIXES

    files = {c: folder / COMPONENT_FILES[c] for c in ("unet", "vae", *TEXT_ENCODER_PREFIXES[family])}
    for component, file in files.items():
        if not file.is_file():
            raise InvalidFile(folder, f"no {COMPONENT_FILES[component]}",
                              hint="a whole-model layout change needs every component's safetensors weights")
    return files


def folder_to_single_file(weights: ModelWeights, by_file: dict, adapters, entries, recipe: dict, dest: Path,
                          progress=None) -> int:
    from loradex.registry.files.atomic_files import atomic_output
    from loradex.registry.files.safetensors_writer import deterministic_safetensors

    from .conventions.checkpoint_layout import components_to_ldm
    from .conventions.modelspec import HASH_KEY

    root = Path(weights.source)
    states, fused = {}, 0
    for component, file in _required_files(root, weights.family).items():
        states[component], _, count = fused_state(file, by_file.get(str(file), {}), adapters, entries, progress)
        fused += count
    state = components_to_ldm(states, *_configs(root), weights.family)
    blob, _ = deterministic_safetensors(state, checkpoint_metadata(recipe), hash_key=HASH_KEY)
    with atomic_output(dest) as fh:
        fh.write(blob)
    return fused


def single_file_to_folder(weights: ModelWeights, by_file: dict, adapters, entries, recipe: dict, dest: Path,
                          progress=None) -> int:
    from safetensors import safe_open

    from loradex.registry.errors import CoverageError
    from loradex.registry.files.safetensors_writer import deterministic_safetensors

    from .conventions.checkpoint_layout import ldm_to_component_states

    file = weights.files[0]
    config = Path(recipe["options"]["config"])
    state, _, fused = fused_state(file, by_file.get(str(file), {}), adapters, entries, progress)
    files = _required_files(config, weights.family)
    own, metadata = {}, {}
    for component, path in files.items():
        with safe_open(str(path), framework="pt") as fh:
            own[component], metadata[component] = list(fh.keys()), dict(fh.metadata() or {})
    parts = ldm_to_component_states(state, *_configs(config), own)
    for component, keys in own.items():
        lacking = sorted(k for k in keys if k not in parts.get(component, {}) and not k.endswith("position_ids"))
        if lacking:
            raise CoverageError(f"{file}: weights the {component} of {config} has and the single file lacks", lacking,
                                hint="--config must be a folder of the same model structure as the base")

    def fill(staged: Path) -> None:
        shutil.copytree(config, staged)
        for component, sd in parts.items():
            blob, _ = deterministic_safetensors(sd, metadata[component])
            (staged / COMPONENT_FILES[component]).write_bytes(blob)

    replace_folder(dest, fill)
    return fused


# source layout → writer(weights, targets by file, adapters, entries, recipe, dest, progress) → module updates
LAYOUT_CHANGES: dict[str, Callable[..., int]] = {"diffusers": folder_to_single_file,
                                                 "single-file": single_file_to_folder}
