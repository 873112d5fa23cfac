"""Helpers shared by the test suite: an offline tiny RoBERTa and tiny model flags (imported by tests)."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CORPUS = [
    "a red circle moving to the left", "the blue square on the right", "a small green triangle",
    "the large yellow circle moving up", "a purple square that stays still", "the white triangle moving down",
    "a person riding a bike on the road", "the brown dog running to the left", "a big truck on the road",
    "the cat sitting on the sofa", "a man in a black shirt", "the second zebra from the left",
]


def write_tiny_roberta(directory: Path, hidden: int = 32, layers: int = 1) -> Path:
    """Train a byte-level BPE on a tiny corpus and save it with a random tiny RoBERTa via save_pretrained."""
    from tokenizers import ByteLevelBPETokenizer
    from tokenizers.processors import RobertaProcessing
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS * 4, vocab_size=400, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe._tokenizer.post_processor = RobertaProcessing(("</s>", bpe.token_to_id("</s>")), ("<s>", bpe.token_to_id("<s>")))
    tokenizer = RobertaTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>",
                                     pad_token="<pad>", unk_token="<unk>", mask_token="<mask>", model_max_length=64)
    tokenizer.save_pretrained(str(directory))
    config = RobertaConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
                           num_attention_heads=2, intermediate_size=2 * hidden, max_position_embeddings=66,
                           type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2)
    RobertaModel(config).save_pretrained(str(directory))
    return directory


def tiny_model_flags(text_encoder: Path) -> list[str]:
    """Flags of a ReferFormer small enough for unit tests (hidden 32, one layer each)."""
    return ["--backbone", "resnet18", "--backbone_pretrained", "none", "--backbone_norm", "bn",
            "--hidden_dim", "32", "--dim_feedforward", "64", "--enc_layers", "1", "--dec_layers", "2",
            "--nheads", "2", "--mask_dim", "16", "--num_queries", "3", "--num_frames", "2",
            "--text_encoder_type", str(text_encoder), "--with_box_refine", "--binary", "--device", "cpu"]
