"""Linear heads on the decoder's final hidden state that a method trains beside the language model.

* ``score``: a reward model's scalar, with the name and layout of Hugging Face's
  ``*ForSequenceClassification`` with one label (weight [1, hidden], no bias). A sequence's score is read
  at its last token that is not the pad token, as those classes read it.
* ``value_head``: PPO's value function, a training-time head (left out of exports).

A head is an attribute of the model, so ``state_dict`` and checkpoints carry it under its name.
"""

from __future__ import annotations

import numpy as np
import paddle
from paddle import nn

from erniekit.models.common.weights import Rule

SCORE = "score"
VALUE = "value_head"
HEADS = {SCORE: False, VALUE: True}  # name -> has a bias
SCORE_ARCH_SUFFIX = "ForSequenceClassification"
SCORE_RULE = Rule(f"{SCORE}.weight", (f"{SCORE}.weight",), "linear")


def attach_head(model, name: str) -> nn.Linear:
    """The model's head ``name``, created (hidden -> 1, weights ~ N(0, initializer_range)) when absent."""
    head = getattr(model, name, None)
    if head is None:
        args = model.args
        init = paddle.ParamAttr(initializer=nn.initializer.Normal(0.0, args.initializer_range))
        bias = None if HEADS[name] else False
        head = nn.Linear(args.hidden_size, 1, weight_attr=init, bias_attr=bias)
        setattr(model, name, head)
    return head


def head_tensors(model) -> dict[str, paddle.Tensor]:
    """The state of the heads the model carries, under their checkpoint names."""
    return {
        f"{name}.{k}": v
        for name in HEADS
        if getattr(model, name, None) is not None
        for k, v in getattr(model, name).state_dict().items()
    }


def is_score_config(config: dict) -> bool:
    """A config.json written for a reward model (a sequence classifier with one label)."""
    return any(a.endswith(SCORE_ARCH_SUFFIX) for a in config.get("architectures") or [])


def score_position(tokens: np.ndarray, positions: np.ndarray, pad_id: int) -> int:
    """Where a sequence is scored: the position of its last token that is not ``pad_id`` (its last token
    if every one is), given its tokens and their positions in order."""
    real = np.flatnonzero(tokens != pad_id)
    return int(positions[real[-1] if len(real) else len(tokens) - 1])


def score_config(config: dict, pad_token_id: int) -> dict:
    """A causal-LM config.json made a reward model's: the family's sequence classifier, one label, and the
    pad token it scores before."""
    archs = [a.replace("ForCausalLM", SCORE_ARCH_SUFFIX) for a in config.get("architectures") or []]
    return {
        **config,
        "architectures": archs,
        "num_labels": 1,
        "id2label": {"0": "LABEL_0"},
        "label2id": {"LABEL_0": 0},
        "pad_token_id": pad_token_id,
    }
