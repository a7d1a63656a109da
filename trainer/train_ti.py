"""Textual inversion: a new token (or N vectors ``tok``, ``tok_1`` … as diffusers names them)
whose embedding rows are the only thing that trains.

The whole input-embedding matrix is the optimizer's parameter (the rows are views of it), so
after every optimizer step the rows that must not move (every old token) are copied back from
a saved copy — weight decay and numerical noise cannot drift them. SDXL trains the token in
both text encoders and writes ``clip_l`` / ``clip_g``.
"""

from __future__ import annotations

from pathlib import Path

from loradex.registry.errors import UsageError

from .train_registry import Exported, TrainingMethod, register_method


def token_names(token: str, num_vectors: int) -> list[str]:
    return [token] + [f"{token}_{i}" for i in range(1, num_vectors)]


@register_method("ti")
class TextualInversionMethod(TrainingMethod):
    output_kind = "embedding"

    def setup(self, run) -> list:
        import torch

        c = run.config
        names = token_names(c.token, c.num_vectors)
        run.extra["ti"] = {}
        modules = []
        for component, tokenizer, encoder in run.text_encoders():
            init_ids = tokenizer.encode(c.init_token, add_special_tokens=False)
            if not init_ids:
                raise UsageError(f"--init-token {c.init_token!r} encodes to no token")
            added = tokenizer.add_tokens(names)
            if added != len(names):
                raise UsageError(f"token {c.token!r} is already in the {component} vocabulary",
                                 hint="pick a token the base does not know, e.g. <my-style>")
            ids = tokenizer.convert_tokens_to_ids(names)
            encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
            weight = encoder.get_input_embeddings().weight
            with torch.no_grad():
                for j, row in enumerate(ids):
                    # a multi-token init word spreads over the vectors; a single one seeds them all
                    weight[row] = weight[init_ids[j % len(init_ids)]]
            weight.requires_grad_(True)
            keep = torch.ones(weight.shape[0], dtype=torch.bool)
            keep[ids] = False
            run.extra["ti"][component] = {"ids": ids, "keep": keep, "frozen": weight.detach().clone()}
            modules.append(encoder)
        return modules

    def prompts(self, run, captions):
        token = run.config.token
        out = []
        for caption in captions:
            if caption and token in caption:
                out.append(caption)
            elif caption:
                out.append(f"{token}, {caption}")
            else:
                out.append(f"a photo of {token}")
        return out

    def after_optimizer_step(self, run) -> None:
        import torch

        with torch.no_grad():
            for component, _, encoder in run.text_encoders():
                info = run.extra["ti"][component]
                weight = encoder.get_input_embeddings().weight
                keep = info["keep"].to(weight.device)
                weight[keep] = info["frozen"].to(weight.device, weight.dtype)[keep]

    def trainable_state(self, run) -> dict:
        # only the new rows move; the rest is restored from the base every step
        out = {}
        for component, _, encoder in run.text_encoders():
            ids = run.extra["ti"][component]["ids"]
            out[component] = encoder.get_input_embeddings().weight.detach()[ids].clone().contiguous()
        return out

    def load_trainable_state(self, run, state: dict) -> None:
        import torch

        with torch.no_grad():
            for component, _, encoder in run.text_encoders():
                if component not in state:
                    raise UsageError(f"checkpoint has no {component} embedding rows",
                                     hint="resume with the same method and base")
                ids = run.extra["ti"][component]["ids"]
                weight = encoder.get_input_embeddings().weight
                weight[ids] = state[component].to(weight.device, weight.dtype)

    def vectors(self, run) -> dict:
        """text encoder → T[num_vectors, dim] (float32, CPU)."""
        return {component: t.float().cpu() for component, t in self.trainable_state(run).items()}

    def export(self, run, dest_dir: Path, step: int) -> Exported:
        from safetensors.torch import save_file

        from loradex.merge.conventions.embedding_convert import Embedding, from_embedding
        from loradex.registry.files.atomic_files import atomic_path

        from .registration import embedding_training_metadata

        c = run.config
        fmt = c.format
        if fmt == "auto":
            fmt = "sdxl" if run.is_sdxl else "a1111"
        if run.is_sdxl != (fmt == "sdxl"):
            raise UsageError(f"format {fmt!r} does not fit a {'SDXL' if run.is_sdxl else 'single text encoder'} base",
                             hint="use format auto")
        state = from_embedding(Embedding(self.vectors(run), c.token), fmt, token=c.token)
        dest_dir.mkdir(parents=True, exist_ok=True)
        dest = dest_dir / f"{c.output_name}.safetensors"
        with atomic_path(dest) as tmp:
            save_file(state, str(tmp), metadata=embedding_training_metadata(run, step))
        return Exported(dest, "embedding", fmt, triggers=[c.token])

    def default_sample_prompts(self, run) -> list[str]:
        return [f"a photo of {run.config.token}"]
