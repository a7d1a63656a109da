"""Key conventions and file conversion: kohya/diffusers/PEFT names, embeddings, checkpoint layouts,
modelspec, prompt syntax. Stands on math/."""
