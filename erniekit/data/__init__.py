"""Data files and formats, tokenization, packing, caching and the resumable loader; samples/ bundled."""
