"""Tokenizers (SentencePiece or HF tokenizer.json) with chat templates."""

from erniekit.tokenizer.core import Tokenizer, load_tokenizer
from erniekit.tokenizer.templates import ChatTemplate, Segment, template_by_name

__all__ = ["ChatTemplate", "Segment", "Tokenizer", "load_tokenizer", "template_by_name"]
