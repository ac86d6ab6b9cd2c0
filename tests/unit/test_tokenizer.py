"""Tokenizers trained in the test (SentencePiece and HF BPE), chat templates vs their Jinja forms."""

import json

import jinja2
import pytest

from erniekit.errors import CheckpointError
from erniekit.tokenizer import load_tokenizer
from erniekit.tokenizer.templates import chatml, ernie4_5, plain

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "PaddlePaddle trains ERNIE models.",
    "你好，世界！今天天气很好。",
    "Numbers like 12345 and 3.14 appear here.",
    "User: hello\nAssistant: hi there",
] * 40
TEXTS = ["Hello, ERNIE! 你好 123", "  leading spaces\nand\ttabs", "emoji 🙂 and rare 齉 characters", ""]
CONVO = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "4."},
    {"role": "user", "content": "And 3+3?"},
    {"role": "assistant", "content": "6."},
]


@pytest.fixture(scope="module")
def spm_dir(tmp_path_factory):
    import sentencepiece as spm

    out = tmp_path_factory.mktemp("spm")
    (out / "corpus.txt").write_text("\n".join(CORPUS), encoding="utf-8")
    specials = ["<|begin_of_sentence|>", "<|end_of_sentence|>"]
    spm.SentencePieceTrainer.train(
        input=str(out / "corpus.txt"),
        model_prefix=str(out / "tokenizer"),
        vocab_size=400,
        model_type="bpe",
        byte_fallback=True,
        pad_id=0,
        unk_id=3,
        bos_id=1,
        eos_id=2,
        user_defined_symbols=specials,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=False,
        minloglevel=2,
        num_threads=1,
    )
    config = {
        "bos_token": "<s>",
        "eos_token": "</s>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        "added_tokens_decoder": {"4": {"content": specials[0]}, "5": {"content": specials[1]}},
        "chat_template": ernie4_5().jinja,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config))
    return out


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    out = tmp_path_factory.mktemp("hf")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok.train_from_iterator(
        CORPUS,
        trainers.BpeTrainer(
            vocab_size=300, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    tok.save(str(out / "tokenizer.json"))
    config = {
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "bos_token": None,
        "chat_template": chatml("You are helpful.").jinja,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config))
    return out


@pytest.mark.parametrize("which", ["spm_dir", "hf_dir"])
def test_round_trip(which, request):
    tok = load_tokenizer(request.getfixturevalue(which))
    for text in TEXTS:
        assert tok.decode(tok.encode(text)) == text
    special = "<|im_start|>" if which == "hf_dir" else "<|begin_of_sentence|>"
    ids = tok.encode(f"a{special}b")
    assert tok.special_tokens[special] in ids
    assert tok.decode(ids, skip_special=False) == f"a{special}b"
    assert tok.decode(ids) == "ab"


def test_spm_template_and_trainable_mask(spm_dir):
    tok = load_tokenizer(spm_dir)
    assert tok.template.name == "ernie4_5"
    ids, trainable = tok.encode_chat(CONVO)
    trained = tok.decode([i for i, t in zip(ids, trainable) if t], skip_special=False)
    assert trained == "4.<|end_of_sentence|>6.<|end_of_sentence|>"
    assert tok.stop_ids == [2, 5]


def test_templates_render_like_their_jinja(spm_dir):
    env = jinja2.Environment()
    for template in (ernie4_5(), chatml(), chatml("Be helpful."), plain("</s>")):
        for msgs, gen in ((CONVO, False), (CONVO[1:4], True), (CONVO[1:3], False)):
            expected = env.from_string(template.jinja).render(messages=msgs, add_generation_prompt=gen)
            assert template.render_text(msgs, gen) == expected, template.name


def test_hf_chat_template_matches_transformers(hf_dir, tmp_path):
    from transformers import AutoTokenizer

    ours = load_tokenizer(hf_dir)
    ours.save(tmp_path)
    theirs = AutoTokenizer.from_pretrained(tmp_path)
    for msgs, gen in ((CONVO, False), (CONVO[1:4], True)):
        assert theirs.apply_chat_template(
            msgs, tokenize=False, add_generation_prompt=gen
        ) == ours.template.render_text(msgs, gen)
    assert ours.template.default_system == "You are helpful."
    assert ours.encode("Hello there") == theirs.encode("Hello there", add_special_tokens=False)


def test_loss_false_turns_are_not_trained(spm_dir):
    tok = load_tokenizer(spm_dir)
    convo = [dict(m) for m in CONVO]
    convo[2]["loss"] = False
    ids, trainable = tok.encode_chat(convo)
    assert tok.decode([i for i, t in zip(ids, trainable) if t], skip_special=False) == "6.<|end_of_sentence|>"


@pytest.mark.parametrize(
    ("messages", "error"),
    [
        ([], "empty conversation"),
        ([{"role": "user", "content": "a"}], "does not end with an assistant reply"),
        (
            [{"role": "bot", "content": "a"}],
            "message 0 has role 'bot'; expected one of system, user, assistant",
        ),
        ([{"role": "assistant", "content": "a"}], "message 0 has role 'assistant' where 'user' belongs"),
        ([{"role": "user", "content": 3}], "message 0 content must be a string"),
        ([{"role": "user"}], "message 0 needs 'role' and 'content'"),
    ],
)
def test_bad_conversations(spm_dir, messages, error):
    with pytest.raises(ValueError, match=error):
        load_tokenizer(spm_dir).encode_chat(messages)


def test_template_needs_its_special_tokens(spm_dir):
    with pytest.raises(CheckpointError, match="needs special token <\\|im_start\\|>"):
        load_tokenizer(spm_dir, template="chatml")


def test_missing_tokenizer_files(tmp_path):
    with pytest.raises(CheckpointError, match="no tokenizer.json or tokenizer.model"):
        load_tokenizer(tmp_path)
