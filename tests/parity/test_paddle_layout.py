"""`erniekit export --to paddle`: ERNIE's own Paddle checkpoint layout, what ERNIEKit and FastDeploy load
(``ernie.`` names, fused qkv_proj / up_gate_proj with the gate half first, Linear weights [in, out]).

The names and shapes are checked against a dump of a released Paddle checkpoint of ERNIE 4.5 21B-A3B's
widths (the tensor listing in github.com/Hchnr/test, load/lite/out.txt: 28 layers, layer 0 dense, 64
routed + 2 shared experts, tied embeddings); FastDeploy's ernie4_5_moe loader reads the same names. The
files round-trip through our Paddle-format reader and load as the run they came from.
"""

import json

import numpy as np
import paddle
from safetensors import safe_open

from erniekit.models import family, load_model
from erniekit.models.common.weights import external_shapes
from erniekit.models.ernie4_5.flavors import FLAVORS
from erniekit.trainer.restore import restore
from tests.helpers import erniekit

# (name with {i} for a layer and {e} for an expert, shape) of the released checkpoint
RELEASED = {
    "ernie.embed_tokens.weight": (103424, 2560),
    "ernie.norm.weight": (2560,),
    "ernie.layers.{i}.input_layernorm.weight": (2560,),
    "ernie.layers.{i}.post_attention_layernorm.weight": (2560,),
    "ernie.layers.{i}.self_attn.qkv_proj.weight": (2560, 3584),
    "ernie.layers.{i}.self_attn.o_proj.weight": (2560, 2560),
}
RELEASED_DENSE = {  # layer 0
    "ernie.layers.0.mlp.up_gate_proj.weight": (2560, 24576),
    "ernie.layers.0.mlp.down_proj.weight": (12288, 2560),
}
RELEASED_MOE = {  # layers 1-27
    "ernie.layers.{i}.mlp.gate.weight": (2560, 64),
    "ernie.layers.{i}.mlp.moe_statics.e_score_correction_bias": (1, 64),
    "ernie.layers.{i}.mlp.experts.{e}.up_gate_proj.weight": (2560, 3072),
    "ernie.layers.{i}.mlp.experts.{e}.down_proj.weight": (1536, 2560),
    "ernie.layers.{i}.mlp.shared_experts.up_gate_proj.weight": (2560, 6144),
    "ernie.layers.{i}.mlp.shared_experts.down_proj.weight": (3072, 2560),
}


def released_names() -> dict[str, tuple]:
    out = {k: v for k, v in RELEASED.items() if "{i}" not in k} | RELEASED_DENSE
    for i in range(28):
        out |= {k.format(i=i): v for k, v in RELEASED.items() if "{i}" in k}
        if i:
            for k, v in RELEASED_MOE.items():
                out |= {k.format(i=i, e=e): v for e in range(64)} if "{e}" in k else {k.format(i=i): v}
    return out


def test_names_and_shapes_match_the_released_21b_a3b_checkpoint():
    args = FLAVORS["21b-a3b"]
    fam = family("ernie4_5")
    with paddle.LazyGuard():  # 21B parameters described, not allocated
        model = fam.model.build(args)
    state = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    ours = {}
    for rule in fam.hf.weight_rules(args, "paddle"):
        ours |= external_shapes(rule, state[rule.internal], False)
    assert {k: tuple(v) for k, v in ours.items()} == released_names()


def test_export_round_trips_and_loads_as_the_run(tmp_path):
    run = tmp_path / "run"
    erniekit(
        "train", "ernie4_5/debug_sft", f"train.output_dir={run}", "train.max_steps=2", "train.eval_every=0"
    )
    erniekit("export", run, "--to", "paddle", "--out", tmp_path / "paddle")
    out = tmp_path / "paddle"
    with safe_open(str(out / "model.safetensors"), "np") as f:
        names = list(f.keys())
        qkv = f.get_tensor("ernie.layers.0.self_attn.qkv_proj.weight")
    assert all(n.startswith("ernie.") or n == "lm_head.weight" for n in names)
    _, _, trained = restore(run)
    a = trained.args
    assert qkv.shape == (a.hidden_size, (a.num_heads + 2 * a.num_kv_heads) * a.head_dim)  # [in, out]
    np.testing.assert_array_equal(qkv, trained.layers[0].self_attn.qkv_proj.weight.numpy())
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "ernie4_5" and config["architectures"] == ["Ernie4_5ForCausalLM"]
    assert {"tokenizer.model", "tokenizer_config.json", "generation_config.json"} <= {
        p.name for p in out.iterdir()
    }
    loaded = load_model(out)
    trained.eval()
    x = paddle.to_tensor(np.random.RandomState(0).randint(0, a.vocab_size, (2, 7)))
    np.testing.assert_array_equal(loaded(x).logits.numpy(), trained(x).logits.numpy())
    # an export is itself a source: re-sharded (ERNIEKit's split), still the same model
    erniekit("export", out, "--to", "paddle", "--max-shard-size", "100KB", "--out", tmp_path / "split")
    index = json.loads((tmp_path / "split" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1 and set(index["weight_map"]) == set(names)
    np.testing.assert_array_equal(load_model(tmp_path / "split")(x).logits.numpy(), trained(x).logits.numpy())
    assert "ok" in erniekit("verify", tmp_path / "split").stdout
