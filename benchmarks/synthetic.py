"""The data both sides of the DPO and GRPO rows read: one word-level tokenizer, fixed-length texts and
one reward function, written to a child's temporary directory.

Every "word" ``w<i>`` is exactly one token (a ``tokenizers`` WordLevel vocabulary as large as the model's),
so a prompt of P words is P tokens for erniekit and for TRL alike, whatever chat markup either adds: the
texts are plain (erniekit's ``plain`` template renders ``prompt\\n`` + ``reply\\n`` + EOS, TRL's
non-conversational path ``prompt`` + ``reply`` + EOS, and the newline is no token). Neither Paddle nor
erniekit is imported here: the TRL child uses this module too.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SPECIALS = ("<unk>", "<s>", "</s>")  # ids 0, 1, 2: SmolLM2's bos/eos ids


def write_tokenizer(out: Path, vocab_size: int) -> Path:
    """A tokenizer.json + tokenizer_config.json that transformers' AutoTokenizer and erniekit both load."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {t: i for i, t in enumerate(SPECIALS)}
    vocab.update({f"w{i}": i for i in range(len(SPECIALS), vocab_size)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces, drops nothing
    tok.add_special_tokens(list(SPECIALS))
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "pad_token": "</s>",
        "unk_token": "<unk>",
        "model_max_length": 1 << 20,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=1))
    return out


def words(rng: random.Random, n: int, vocab_size: int) -> str:
    return " ".join(f"w{rng.randrange(len(SPECIALS), vocab_size)}" for _ in range(n))


def write_pairs(path: Path, n: int, prompt: int, reply: int, vocab_size: int) -> list[dict]:
    """``n`` preference pairs: a ``prompt``-token prompt, ``reply``-token chosen and rejected replies."""
    rng = random.Random(0)
    records = [
        {
            "prompt": words(rng, prompt, vocab_size) + "\n",
            "chosen": words(rng, reply, vocab_size),
            "rejected": words(rng, reply, vocab_size),
        }
        for _ in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return records


def write_prompts(path: Path, n: int, prompt: int, vocab_size: int) -> list[dict]:
    """``n`` RL prompts of ``prompt`` tokens each."""
    rng = random.Random(1)
    records = [{"prompt": words(rng, prompt, vocab_size) + "\n", "answer": "w3"} for _ in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return records


def distinct_words(text: str) -> float:
    """The reward both sides score completions with: the share of distinct words (deterministic, dense)."""
    found = text.split()
    return len(set(found)) / max(len(found), 1)


def erniekit_reward(completion: str, record) -> float:
    """``method.rewards=[benchmarks.synthetic:erniekit_reward]``."""
    return distinct_words(completion)


def trl_reward(prompts, completions, **kwargs) -> list[float]:
    """The same reward in TRL's signature."""
    return [distinct_words(c) for c in completions]
