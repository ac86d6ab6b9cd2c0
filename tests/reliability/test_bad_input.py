"""Bad input beyond the per-module tests: random config overrides, a tokenizer without the template's
special tokens, a LoRA checkpoint resumed onto another base. (Malformed/non-UTF-8 JSON lines, missing
fields, empty conversations, wrong roles and over-length samples: tests/unit/test_data.py; a full
checkpoint of another shape: tests/unit/test_trainer.py.)"""

from __future__ import annotations

import dataclasses
import json
import shutil
import typing

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from erniekit.config import ConfigError, Recipe, load_recipe
from erniekit.errors import CheckpointError
from erniekit.resources import resolve_path
from erniekit.tokenizer import load_tokenizer
from erniekit.trainer.loop import Trainer
from tests.helpers import debug_recipe


def _paths(cls, prefix: str = "") -> list[str]:
    """Every key path of the config tree (``train.max_steps``, ``parallel.sharding.degree``, ...)."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        path = f"{prefix}{f.name}"
        out.append(path)
        if dataclasses.is_dataclass(tp):
            out += _paths(tp, path + ".")
    return out


KEYS = _paths(Recipe)
values = st.one_of(
    st.integers(-(10**6), 10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(["true", "false", "null", "~", "[]", "{}", "[1, x]", "{a: 1}", "auto", "'", ": :", "-"]),
    st.text(max_size=12),
)
keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=16), st.sampled_from(KEYS).map(lambda k: k + "x"))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(keys, values), min_size=1, max_size=4))
def test_random_overrides_raise_only_config_errors(pairs):
    overrides = [f"{k}={v}" for k, v in pairs]
    try:
        load_recipe("ernie4_5/debug_sft", overrides)
    except ConfigError as e:  # anything else escapes and fails the test
        assert str(e).startswith(("command line: ", "recipes/")), str(e)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=40))
def test_random_yaml_files_raise_only_config_errors(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("fuzz") / "r.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_recipe(path)
    except ConfigError as e:
        assert str(path) in str(e) or "r.yaml" in str(e), str(e)


def test_tokenizer_without_the_templates_special_tokens(tmp_path):
    shutil.copytree(resolve_path("samples://ernie_tokenizer"), tmp_path / "tok")
    config = json.loads((tmp_path / "tok" / "tokenizer_config.json").read_text())
    # a tokenizer that declares only ERNIE's specials, asked for ChatML (which needs <|im_start|>)
    config["added_tokens_decoder"] = {
        i: t for i, t in config["added_tokens_decoder"].items() if t["content"].startswith("<|begin_of")
    }
    config["erniekit_chat_template"] = "chatml"
    (tmp_path / "tok" / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(
        CheckpointError, match=r"tok: chat template 'chatml' needs special token <\|im_start\|>"
    ):
        load_tokenizer(tmp_path / "tok")


def test_a_lora_checkpoint_onto_another_base_is_refused(tmp_path):
    lora = ["lora.enabled=true", "train.max_steps=1", "data.max_seq_len=128", "train.eval_every=0"]
    Trainer(debug_recipe(tmp_path, *lora)).fit()
    with pytest.raises(CheckpointError, match="different model shape"):
        Trainer(
            debug_recipe(
                tmp_path, *lora, "train.max_steps=2", "train.resume=auto", "model.flavor=llama/debug"
            )
        )
