"""Tiny transformers models with a real tokenizer, built offline (tests and benchmarks/harvest_throughput.py).

A byte-level BPE (GPT-2, Llama) or WordPiece (BERT) tokenizer is trained with ``tokenizers`` on the
stdlib's ``pydoc_data.topics`` text, wrapped in ``PreTrainedTokenizerFast`` and saved with
``save_pretrained`` beside a randomly initialised model built from a small config. Nothing is
downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _texts(n: int = 300) -> list[str]:
    from trainer.texts import pydoc_paragraphs

    return pydoc_paragraphs()[:n]


def build_tokenizer(kind: str, vocab_size: int = 400):
    """A trained tokenizer: ``gpt2`` (BOS = EOS = <|endoftext|>, no pad), ``llama`` (<s>, </s>,
    <pad>) or ``bert`` (WordPiece, [CLS] ... [SEP], [PAD])."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if kind == "bert":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        tok.train_from_iterator(_texts(), trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=special,
                                                                    show_progress=False))
        cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
                                                           special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
        tok.decoder = decoders.WordPiece()
        return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
                                       pad_token="[PAD]", mask_token="[MASK]")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<|endoftext|>"] if kind == "gpt2" else ["<s>", "</s>", "<pad>"]
    tok.train_from_iterator(_texts(), trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special, show_progress=False,
                                                          initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    if kind == "gpt2":
        return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>")
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def build_tiny_model(kind: str, out: str | Path, *, n_layer: int = 2, d_model: int = 64, n_head: int = 4,
                     vocab_size: int = 400, seed: int = 0) -> Path:
    """Save a random ``gpt2`` (GPT2LMHeadModel), ``llama`` (LlamaForCausalLM) or ``bert`` (BertModel)
    and its tokenizer in ``out``; return ``out``."""
    import torch
    from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    tok = build_tokenizer(kind, vocab_size)
    n_vocab = len(tok)
    if kind == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(n_layer=n_layer, n_embd=d_model, n_head=n_head, vocab_size=n_vocab,
                                           n_positions=512, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id))
    elif kind == "llama":
        model = LlamaForCausalLM(LlamaConfig(hidden_size=d_model, intermediate_size=2 * d_model, num_hidden_layers=n_layer,
                                             num_attention_heads=n_head, num_key_value_heads=max(1, n_head // 2),
                                             vocab_size=n_vocab, max_position_embeddings=512,
                                             bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                             pad_token_id=tok.pad_token_id))
    elif kind == "bert":
        model = BertModel(BertConfig(hidden_size=d_model, num_hidden_layers=n_layer, num_attention_heads=n_head,
                                     intermediate_size=2 * d_model, vocab_size=n_vocab, max_position_embeddings=512,
                                     pad_token_id=tok.pad_token_id))
    else:
        raise ValueError(kind)
    out = Path(out)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
