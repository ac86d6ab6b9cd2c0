"""Converting foreign model formats (GGUF) into Hugging Face directories."""
