"""Pieces every family's tiny random pipeline is built from, offline (no download, no sentencepiece).

- Byte-level tokenizers that never map a character to unknown: a CLIP one (``vocab.json`` +
  ``merges.txt`` of the 256 GPT-2 byte characters, the same with ``</w>``, a few merges and the two
  specials) and a T5 one (a ``tokenizers`` byte-level BPE with ``<pad>`` / ``</s>`` / ``<unk>`` and
  ``</s>`` appended, wrapped in ``PreTrainedTokenizerFast``). Both survive ``save_pretrained`` +
  ``from_pretrained`` with identical ids.
- ``seeded(seed, offset, make)``: every component is built right after ``torch.manual_seed(seed +
  offset)``, so the same seed gives bit-identical weights whatever was built before.
- Config helpers for CLIP / T5 text encoders and schedulers named in a recipe.

The tokenizer trap (see NOTES-tiny-models.md): transformers 5.x ignores ``vocab_file=`` in
``CLIPTokenizer(...)`` and silently yields a 3-token vocabulary, so the CLIP files go into a folder
loaded with ``from_pretrained(folder, model_max_length=77)``. ``T5Tokenizer`` in 5.x rebuilds a
Unigram model from its arguments, so the T5 tokenizer is a plain ``PreTrainedTokenizerFast``.

torch / transformers / diffusers / tokenizers are imported inside functions.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Callable

# A handful of merges so the BPE actually merges something; every merged token is in the vocab.
TOKENIZER_MERGES = ("t h", "th e</w>", "a n", "i n", "e r</w>", "o n</w>")
MAX_TOKENS = 77                      # CLIP's context
T5_SPECIALS = ("<pad>", "</s>", "<unk>")  # T5's ids 0, 1, 2
T5_MAX_TOKENS = 512


T5_TOKENIZER_RECIPE = {"cls": "byte-level BPE, no merges", "specials": T5_SPECIALS,
                       "model_max_length": T5_MAX_TOKENS}


def bytes_to_unicode() -> list[str]:
    """GPT-2's reversible byte -> printable character table (256 entries, byte order)."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    table = dict(zip(printable, codes))
    return [chr(table[b]) for b in range(256)]


def write_clip_tokenizer_files(folder: Path) -> Path:
    """Write ``vocab.json`` + ``merges.txt`` of a complete byte-level CLIP vocabulary (~520 ids)."""
    folder.mkdir(parents=True, exist_ok=True)
    chars = bytes_to_unicode()
    tokens = chars + [c + "</w>" for c in chars]
    for merge in TOKENIZER_MERGES:
        merged = merge.replace(" ", "")
        if merged not in tokens:
            tokens.append(merged)
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    # CLIP's merges reader skips the first line (a "#version" header)
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(TOKENIZER_MERGES) + "\n",
                                       encoding="utf-8")
    return folder


def build_clip_tokenizer():
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory(prefix="loradex-tiny-tok-") as tmp:
        folder = write_clip_tokenizer_files(Path(tmp))
        return CLIPTokenizer.from_pretrained(str(folder), model_max_length=MAX_TOKENS)


def build_t5_tokenizer():
    """A byte-level T5-style tokenizer: ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2, then the 256 byte
    characters; every encoding ends with ``</s>`` as T5's does."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(T5_SPECIALS)}
    for char in bytes_to_unicode():
        vocab[char] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    eos_id = vocab["</s>"]
    backend.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", eos_id)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>", model_max_length=T5_MAX_TOKENS)


# --- components ------------------------------------------------------------------------------

def seeded(seed: int, offset: int, make: Callable):
    import torch

    torch.manual_seed(seed + offset)
    return make().eval()


def clip_config(tokenizer, params: dict):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                          eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                          **params)


def t5_config(tokenizer, params: dict):
    from transformers import T5Config

    return T5Config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id,
                    **params)


def scheduler(params: dict):
    import diffusers

    params = dict(params)
    cls = getattr(diffusers, params.pop("cls"))
    return cls(**params)


def recipe_string(kind: str, components: dict) -> str:
    """Canonical text of a tiny pipeline's recipe (stable across runs: sorted JSON)."""
    # the SD1/SDXL layout of this text is older than the T5 families: keep it, so the hashes of
    # tiny-sd1 / tiny-sdxl bases already in catalogs stay what they were
    recipe = {"kind": kind, "components": components, "merges": TOKENIZER_MERGES,
              "max_tokens": MAX_TOKENS}
    return json.dumps(recipe, sort_keys=True, separators=(",", ":"))
