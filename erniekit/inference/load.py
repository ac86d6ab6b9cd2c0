"""One way in: any path a user gives (an HF model directory, a training checkpoint or run) to a ready
model, its tokenizer and, for a vision-language model, its image processor. chat, eval, export and
serve all load through here; a LoRA run comes back with its adapters folded in."""

from __future__ import annotations

from pathlib import Path


def load_for_inference(path: str | Path):
    """(tokenizer, model in eval mode, image processor or None). A vision-language model's tokenizer
    renders image parts its family's way."""
    from erniekit.models import adapt_tokenizer, image_processor, load_model
    from erniekit.peft.lora import merged_model
    from erniekit.tokenizer import load_tokenizer
    from erniekit.trainer.restore import recipe_processor, restore

    path = Path(path)
    if (path / "config.json").is_file():
        model, tokenizer = load_model(path), load_tokenizer(path)
        model.eval()
        adapt_tokenizer(tokenizer, model.args)
        return tokenizer, model, image_processor(model.args, path) if model.args.vision else None
    recipe, tokenizer, model = restore(path)
    return tokenizer, merged_model(model), recipe_processor(recipe, model.args)
