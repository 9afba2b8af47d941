"""Tiny random transformers models (BLIP, BLIP-2, Florence-2, GIT, ViT-GPT2, CLIP), built offline and saved with save_pretrained.

``tiny:<name>`` (``tiny:blip``, ``tiny:blip2``, ``tiny:florence2``, ``tiny:git``, ``tiny:vit_gpt2``, ``tiny:clip``)
names one of them wherever a captioning or CLIP model is asked for, so the caption and evaluate jobs run
offline; the folder is built once and cached like the tiny denoisers (``toolkit.models.tiny``).
Tokenizers are built with the ``tokenizers`` library (a byte-level BPE alphabet or a small WordPiece
vocabulary) and wrapped in the tokenizer class each model's processor expects; image processors are
the PIL ones (torchvision is not needed). Each builder writes a folder that the real loading code reads
back like a hub download. The weights are random: captions are a few random words, CLIP scores carry
no meaning.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable

WORDS = ["a", "an", "the", "photo", "picture", "of", "cat", "dog", "red", "blue", "green", "tree", "house",
         "with", "and", "on", "in", "painting", "woman", "garden", "sky", "style"]


def _quietly(build: Callable[[Path, int], None]) -> Callable[[Path, int], None]:
    """``build`` with transformers' warnings and progress bars off and the random weights seeded, so every build
    is the same; the caller's logging settings and random state are left as they were."""
    @functools.wraps(build)
    def run(folder: Path, seed: int = 0) -> None:
        import torch
        from transformers.utils import logging

        verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
        logging.set_verbosity_error()
        logging.disable_progress_bar()
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                build(folder, seed)
        finally:
            logging.set_verbosity(verbosity)
            if bars:
                logging.enable_progress_bar()

    return run


def _byte_level_bpe(specials: list[str], post: object | None = None, suffix: str = "") -> object:
    """A BPE tokenizer over the 256 byte-level symbols (no merges): every text is encodable."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {token: i for i, token in enumerate(specials)}
    for symbol in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[symbol] = len(vocab)
        if suffix:
            vocab[symbol + suffix] = len(vocab)
    unk = "<unk>" if "<unk>" in vocab else specials[-1]
    options = {"end_of_word_suffix": suffix} if suffix else {}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=unk, **options))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    if post is not None:
        tokenizer.post_processor = post
    return tokenizer


def _bert_tokenizer() -> object:
    """A BertTokenizer over a WordPiece vocabulary of WORDS (returns token_type_ids, like BERT's)."""
    import transformers as tf
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {token: i for i, token in enumerate(special + WORDS)}
    wordpiece = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    wordpiece.normalizer = normalizers.BertNormalizer(lowercase=True)
    wordpiece.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wordpiece.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    wordpiece.decoder = decoders.WordPiece()
    return tf.BertTokenizer(tokenizer_object=wordpiece, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                            sep_token="[SEP]", mask_token="[MASK]")


@_quietly
def build_blip(folder: Path, seed: int = 0) -> None:
    """BlipForConditionalGeneration + BlipProcessor (BertTokenizer over a WordPiece vocabulary)."""
    import transformers as tf

    tokenizer = _bert_tokenizer()
    vocab = tokenizer.get_vocab()
    config = tf.BlipConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                         max_position_embeddings=64, bos_token_id=vocab["[CLS]"], pad_token_id=0, sep_token_id=vocab["[SEP]"],
                         eos_token_id=vocab["[SEP]"]),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8),
        projection_dim=32, image_text_hidden_size=32)
    processor = tf.BlipProcessor(image_processor=tf.BlipImageProcessorPil(size={"height": 32, "width": 32}), tokenizer=tokenizer)
    tf.BlipForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)


@_quietly
def build_blip2(folder: Path, seed: int = 0) -> None:
    """Blip2ForConditionalGeneration (OPT decoder) + Blip2Processor (GPT2Tokenizer, byte-level BPE)."""
    import transformers as tf

    bpe = _byte_level_bpe(["</s>", "<pad>", "<unk>"])
    tokenizer = tf.GPT2Tokenizer(tokenizer_object=bpe, bos_token="</s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>")
    processor = tf.Blip2Processor(image_processor=tf.BlipImageProcessorPil(size={"height": 32, "width": 32}), tokenizer=tokenizer,
                                  num_query_tokens=4)
    vocab_size = len(processor.tokenizer)
    config = tf.Blip2Config(
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=4, image_size=32, patch_size=8),
        qformer_config=dict(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=37,
                            encoder_hidden_size=32),
        text_config=dict(model_type="opt", vocab_size=vocab_size, hidden_size=32, num_hidden_layers=1, ffn_dim=37, num_attention_heads=4,
                         max_position_embeddings=128, word_embed_proj_dim=32, bos_token_id=0, eos_token_id=0, pad_token_id=1),
        num_query_tokens=4, image_token_index=processor.tokenizer.convert_tokens_to_ids("<image>"))
    tf.Blip2ForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)


@_quietly
def build_florence2(folder: Path, seed: int = 0) -> None:
    """Florence2ForConditionalGeneration (DaViT + BART) + Florence2Processor (BartTokenizer with an image token)."""
    import torch
    import transformers as tf
    from tokenizers import processors

    bpe = _byte_level_bpe(["<s>", "<pad>", "</s>", "<unk>"], processors.RobertaProcessing(("</s>", 2), ("<s>", 0)))
    tokenizer = tf.BartTokenizer(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
                                 cls_token="<s>", sep_token="</s>", mask_token="<unk>", extra_special_tokens={"image_token": "<image>"})
    config = tf.Florence2Config(
        text_config=dict(vocab_size=len(tokenizer), d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
                         decoder_attention_heads=4, encoder_ffn_dim=37, decoder_ffn_dim=37, max_position_embeddings=128,
                         bos_token_id=0, pad_token_id=1, eos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=2),
        vision_config=dict(depths=[1, 1, 1, 1], embed_dim=[8, 16, 32, 32], num_groups=[1, 2, 4, 4], num_heads=[1, 2, 4, 4],
                           window_size=2, projection_dim=32, drop_path_rate=0.0),
        image_token_id=tokenizer.image_token_id)
    model = tf.Florence2ForConditionalGeneration(config).eval()
    image_processor = tf.CLIPImageProcessorPil(size={"height": 64, "width": 64}, crop_size={"height": 64, "width": 64}, do_center_crop=False)
    with torch.no_grad():
        features = model.model.get_image_features(torch.zeros(1, 3, 64, 64))
    image_processor.image_seq_length = int(features.pooler_output.shape[1])
    model.save_pretrained(folder)
    tf.Florence2Processor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)


@_quietly
def build_git(folder: Path, seed: int = 0) -> None:
    """GitForCausalLM (decoder-only, image tokens first) + GitProcessor (BertTokenizer)."""
    import transformers as tf

    tokenizer = _bert_tokenizer()
    vocab = tokenizer.get_vocab()
    config = tf.GitConfig(
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=4, image_size=32, patch_size=8),
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=37,
        max_position_embeddings=64, bos_token_id=vocab["[CLS]"], eos_token_id=vocab["[SEP]"], pad_token_id=vocab["[PAD]"])
    tf.GitForCausalLM(config).save_pretrained(folder)
    image_processor = tf.CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    tf.GitProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)


@_quietly
def build_vit_gpt2(folder: Path, seed: int = 0) -> None:
    """VisionEncoderDecoderModel (ViT + GPT-2) saved like nlpconnect/vit-gpt2-image-captioning: an image processor
    and a tokenizer, but no processor class joining them."""
    import transformers as tf

    bpe = _byte_level_bpe(["<|endoftext|>"])
    tokenizer = tf.GPT2Tokenizer(tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                 unk_token="<|endoftext|>")
    encoder = tf.ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=37, image_size=32, patch_size=8)
    decoder = tf.GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=4, n_positions=64, add_cross_attention=True,
                            is_decoder=True, bos_token_id=0, eos_token_id=0)
    config = tf.VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id = config.pad_token_id = config.eos_token_id = 0
    tf.VisionEncoderDecoderModel(config).save_pretrained(folder)
    tf.ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


@_quietly
def build_clip(folder: Path, seed: int = 0) -> None:
    """CLIPModel + CLIPProcessor (CLIPTokenizer over a byte-level BPE alphabet; no model_max_length set)."""
    import transformers as tf
    from tokenizers import normalizers, processors

    post = processors.TemplateProcessing(single="<|startoftext|> $A <|endoftext|>",
                                         special_tokens=[("<|startoftext|>", 0), ("<|endoftext|>", 1)])
    bpe = _byte_level_bpe(["<|startoftext|>", "<|endoftext|>"], post, suffix="</w>")
    bpe.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
    tokenizer = tf.CLIPTokenizer(tokenizer_object=bpe)
    config = tf.CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=4,
                         max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=4, image_size=32, patch_size=8),
        projection_dim=16)
    image_processor = tf.CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    tf.CLIPModel(config).save_pretrained(folder)
    tf.CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)


BUILDERS: dict[str, Callable[[Path, int], None]] = {
    "blip": build_blip, "blip2": build_blip2, "florence2": build_florence2, "git": build_git, "vit_gpt2": build_vit_gpt2,
    "clip": build_clip}
"""``tiny:<name>`` -> the builder of that tiny transformers model."""
