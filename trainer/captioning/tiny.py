"""Tiny random captioning models built from config objects and saved like real ones: for the
demo (``loradex demo`` captions its training set with one) and for tests. Their captions are
random words from a small vocabulary — the point is the flow (load, caption, record, version),
not the words. Nothing is downloaded; a few KB each, built in well under a second.

``save_tiny_blip(dest)``, ``save_tiny_blip2(dest)``, ``save_tiny_florence2(dest)``, ``save_tiny_clip(dest)``,
``save_tiny_tagger(dest)`` write a folder that ``from_pretrained`` (and so the ``blip`` /
``florence2`` / ``interrogate`` / ``tags`` captioners) reads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

# the words a tiny BLIP can say (BERT WordPiece vocabulary after the special tokens)
TINY_WORDS = ("a an the photo picture drawing of with on in and red green blue yellow grey white black "
              "square circle shape shapes small large bright dark plain gradient background centre corner "
              "simple soft flat").split()
TINY_TAGS = ("red_square", "blue_circle", "green_shape", "yellow_shape", "grey_background", "simple_background",
             "no_humans", "geometric", "solid_color", "gradient", "general", "sensitive")
IMAGE_SIZE = 32


def _seeded(seed: int):
    import torch

    torch.manual_seed(seed)


def _save_quietly(obj, dest: Path) -> None:
    from .sources import quiet_transformers

    with quiet_transformers():
        obj.save_pretrained(dest)


def save_tiny_blip(dest: str | os.PathLike, seed: int = 0) -> Path:
    """A 1-layer, 16-wide BLIP captioning model + processor (32-px images, ~40-word vocabulary)."""
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipProcessor
    from transformers import BlipImageProcessorPil

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    vocab = dest / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", *TINY_WORDS]) + "\n")
    tok = BertTokenizer(str(vocab), bos_token="[DEC]", model_max_length=32)
    processor = BlipProcessor(image_processor=BlipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
                              tokenizer=tok)
    text = dict(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                num_attention_heads=2, max_position_embeddings=48, encoder_hidden_size=16,
                bos_token_id=tok.bos_token_id, eos_token_id=tok.sep_token_id, sep_token_id=tok.sep_token_id,
                pad_token_id=tok.pad_token_id)
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                  image_size=IMAGE_SIZE, patch_size=8)
    _seeded(seed)
    model = BlipForConditionalGeneration(BlipConfig(text_config=text, vision_config=vision, projection_dim=16))
    _save_quietly(model.eval(), dest)
    _save_quietly(processor, dest)
    return dest


def _bytes_to_unicode() -> list[str]:
    """GPT-2's byte → printable character table (CLIP's BPE vocabulary is built on it)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def save_tiny_clip(dest: str | os.PathLike, seed: int = 0) -> Path:
    """A 1-layer, 16-wide CLIP + processor (byte-level BPE tokenizer that never maps a character
    to unknown: the 256 byte characters with and without ``</w>``, a few merges)."""
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor, CLIPTokenizer

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    chars = _bytes_to_unicode()
    merges = ["t h", "th e</w>", "a n", "i n", "o n</w>"]
    tokens = chars + [c + "</w>" for c in chars] + [m.replace(" ", "") for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    (dest / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False))
    (dest / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tok = CLIPTokenizer.from_pretrained(str(dest), model_max_length=32)
    processor = CLIPProcessor(image_processor=CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIZE},
                                                                    crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
                              tokenizer=tok)
    text = dict(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_attention_heads=2, num_hidden_layers=1,
                max_position_embeddings=32, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id)
    vision = dict(hidden_size=16, intermediate_size=32, num_attention_heads=2, num_hidden_layers=1,
                  image_size=IMAGE_SIZE, patch_size=8)
    _seeded(seed)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16))
    _save_quietly(model.eval(), dest)
    _save_quietly(processor, dest)
    return dest


def save_tiny_tagger(dest: str | os.PathLike, seed: int = 0, *, selected_tags_csv: bool = True) -> Path:
    """A 1-layer, 16-wide ViT multi-label classifier over ``TINY_TAGS`` (+ a WD14-style
    ``selected_tags.csv`` whose last two tags are ratings, category 9)."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessorPil

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    config = ViTConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                       image_size=IMAGE_SIZE, patch_size=8, num_labels=len(TINY_TAGS),
                       id2label=dict(enumerate(TINY_TAGS)), label2id={t: i for i, t in enumerate(TINY_TAGS)},
                       problem_type="multi_label_classification")
    _seeded(seed)
    model = ViTForImageClassification(config)
    _save_quietly(model.eval(), dest)
    _save_quietly(ViTImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}), dest)
    if selected_tags_csv:
        rows = ["tag_id,name,category,count"]
        rows += [f"{i},{t},{9 if t in ('general', 'sensitive') else 0},{100 - i}" for i, t in enumerate(TINY_TAGS)]
        (dest / "selected_tags.csv").write_text("\n".join(rows) + "\n")
    return dest


def _word_bpe_files(dest: Path, specials: list[str]) -> None:
    """``vocab.json`` + ``merges.txt`` of a byte-level BPE (GPT-2/BART style): ``specials``, the
    256 byte characters, and merges that spell each of ``TINY_WORDS`` as one token
    (``Ġ r``, ``Ġr e``, ``Ġre d`` → ``Ġred``)."""
    dest.mkdir(parents=True, exist_ok=True)
    merges, tokens = [], [*specials, *_bytes_to_unicode()]
    for word in TINY_WORDS:
        piece = "Ġ"
        for ch in word:
            merges.append(f"{piece} {ch}")
            piece += ch
            if piece not in tokens:
                tokens.append(piece)
    merges = list(dict.fromkeys(merges))
    (dest / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False))
    (dest / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")


def save_tiny_blip2(dest: str | os.PathLike, seed: int = 0) -> Path:
    """A BLIP-2 (16-wide ViT, 1-layer Q-Former with 4 queries, 1-layer OPT) + processor
    (32-px images, word-spelling byte-level BPE with the ``<image>`` token)."""
    from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, BlipImageProcessorPil
    from transformers import GPT2Tokenizer

    dest = Path(dest)
    _word_bpe_files(dest, ["</s>", "<pad>"])
    tok = GPT2Tokenizer(str(dest / "vocab.json"), str(dest / "merges.txt"), bos_token="</s>", eos_token="</s>",
                        unk_token="</s>", pad_token="<pad>", model_max_length=64,
                        extra_special_tokens={"image_token": "<image>"})
    queries = 4
    processor = Blip2Processor(image_processor=BlipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
                               tokenizer=tok, num_query_tokens=queries)
    config = Blip2Config(
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=IMAGE_SIZE, patch_size=8),
        qformer_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                            encoder_hidden_size=16, vocab_size=len(tok), max_position_embeddings=64),
        text_config=dict(model_type="opt", vocab_size=len(tok), hidden_size=16, ffn_dim=32, num_hidden_layers=1,
                         num_attention_heads=2, word_embed_proj_dim=16, max_position_embeddings=64,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
        num_query_tokens=queries, image_token_index=tok.image_token_id)
    _seeded(seed)
    _save_quietly(Blip2ForConditionalGeneration(config).eval(), dest)
    _save_quietly(processor, dest)
    return dest


def save_tiny_florence2(dest: str | os.PathLike, seed: int = 0) -> Path:
    """A Florence-2 (DaViT 4×1 blocks, 8–16 wide; BART 1+1 layers, 16 wide) + processor: a
    byte-level BPE tokenizer whose merges spell ``TINY_WORDS`` (``Ġred`` …), the ``<image>``
    token, 64-px images (2×2 patches after the 32× DaViT downsampling + 1 pooled token)."""
    from transformers import BartTokenizer, CLIPImageProcessorPil, Florence2Config
    from transformers import Florence2ForConditionalGeneration, Florence2Processor

    dest = Path(dest)
    _word_bpe_files(dest, ["<s>", "<pad>", "</s>", "<unk>"])
    tok = BartTokenizer(str(dest / "vocab.json"), str(dest / "merges.txt"), model_max_length=64,
                        extra_special_tokens={"image_token": "<image>"})
    size = 64
    images = CLIPImageProcessorPil(size={"height": size, "width": size}, crop_size={"height": size, "width": size},
                                   do_center_crop=False)
    images.image_seq_length = (size // 32) ** 2 + 1
    processor = Florence2Processor(image_processor=images, tokenizer=tok, post_processor_config={"pure_text": {}})
    vision = dict(depths=[1, 1, 1, 1], embed_dim=[8, 16, 16, 16], num_heads=[1, 2, 2, 2], num_groups=[1, 2, 2, 2],
                  window_size=2, projection_dim=16, drop_path_rate=0.0)
    text = dict(vocab_size=len(tok), d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=128,
                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                decoder_start_token_id=tok.eos_token_id, forced_bos_token_id=None)
    _seeded(seed)
    model = Florence2ForConditionalGeneration(Florence2Config(text_config=text, vision_config=vision,
                                                              image_token_id=tok.image_token_id))
    _save_quietly(model.eval(), dest)
    _save_quietly(processor, dest)
    return dest
