"""The recipe system: includes, overrides, every error message, docs, and every shipped recipe."""

import dataclasses
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml

from erniekit.config import ConfigError, Recipe, load_recipe, recipes_dir, render_yaml, to_dict
from erniekit.config.core import build


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


MINIMAL = """\
model: {flavor: ernie4_5/debug, tokenizer: tok}
data: {train: [a.jsonl]}
"""


@pytest.fixture
def recipe(tmp_path):
    return write(tmp_path / "r.yaml", MINIMAL)


def error_of(path, *overrides) -> str:
    with pytest.raises(ConfigError) as info:
        load_recipe(path, overrides)
    return str(info.value)


def test_defaults_and_shorthand(recipe):
    r = load_recipe(recipe)
    assert r.model.flavor == "ernie4_5/debug"
    assert r.data.train[0].path == "a.jsonl" and r.data.train[0].weight == 1.0
    assert r.optim.lr == 1e-5 and r.method.name == "sft"


def test_base_chain_merges_deeply_and_child_wins(tmp_path):
    write(tmp_path / "presets/root.yaml", "optim: {lr: 1.0e-3, warmup_steps: 7}\ntrain: {seed: 1}\n")
    write(tmp_path / "presets/mid.yaml", "base: root.yaml\noptim: {lr: 2.0e-3}\n")
    path = write(tmp_path / "r.yaml", "base: presets/mid.yaml\n" + MINIMAL + "train: {max_steps: 9}\n")
    r = load_recipe(path)
    assert r.optim.lr == 2e-3 and r.optim.warmup_steps == 7
    assert r.train.seed == 1 and r.train.max_steps == 9


def test_list_of_bases_later_wins(tmp_path):
    write(tmp_path / "a.yaml", "optim: {lr: 0.1, eps: 1.0e-6}\n")
    write(tmp_path / "b.yaml", "optim: {lr: 0.2}\n")
    r = load_recipe(write(tmp_path / "r.yaml", "base: [a.yaml, b.yaml]\n" + MINIMAL))
    assert r.optim.lr == 0.2 and r.optim.eps == 1e-6


def test_overrides_are_typed(recipe):
    r = load_recipe(
        recipe,
        [
            "optim.lr=3e-4",
            "train.max_steps=12",
            "data.packing=false",
            "model.tokenizer=null",
            "model.tokenizer=t2",
            "data.train=[x.jsonl, {path: y.jsonl, weight: 3}]",
            "data.train.1.weight=0.5",
        ],
    )
    assert r.optim.lr == 3e-4 and isinstance(r.optim.lr, float)
    assert r.train.max_steps == 12 and r.data.packing is False and r.model.tokenizer == "t2"
    assert [d.path for d in r.data.train] == ["x.jsonl", "y.jsonl"] and r.data.train[1].weight == 0.5


def test_yaml_numbers_written_as_1e_minus_5_are_floats(tmp_path):
    # PyYAML reads `1e-5` (no dot) as a string; a float field must still accept it.
    r = load_recipe(write(tmp_path / "r.yaml", MINIMAL + "optim: {lr: 1e-5}\n"))
    assert r.optim.lr == 1e-5


@pytest.mark.parametrize(
    ("written", "read"), [("on", "on"), ("off", "off"), ("auto", "auto"), ("'on'", "on")]
)
def test_yaml_bare_on_off_reach_an_on_off_choice(tmp_path, written, read):
    # YAML 1.1 reads a bare on/off as a boolean; a choice that has "on"/"off" takes them back as words.
    text = MINIMAL.replace("tokenizer: tok}", f"tokenizer: tok, fused_ops: {written}}}")
    r = load_recipe(write(tmp_path / "r.yaml", text))
    assert r.model.fused_ops == read


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("optim.lrr=1", "command line: optim.lrr: unknown key; did you mean 'optim.lr'?"),
        ("train.lr=1", "command line: train.lr: unknown key; did you mean 'optim.lr'?"),
        ("optim.warmup_steps=-1", "command line: optim.warmup_steps: must be >= 0, got -1"),
        ("optim.lr=fast", "command line: optim.lr: expected a number, got str 'fast'"),
        ("train.max_steps=1.5", "command line: train.max_steps: expected an integer, got float 1.5"),
        ("data.packing=maybe", "command line: data.packing: expected true or false, got str 'maybe'"),
        (
            "optim.scheduler=cosin",
            "command line: optim.scheduler: must be one of 'cosine', 'linear', 'constant', "
            "got 'cosin'; did you mean 'cosine'?",
        ),
        (
            "method.name=sfx",
            "command line: method.name: must be one of 'sft', 'pt', 'dpo', 'rm', 'kto', 'grpo', 'ppo', "
            "got 'sfx'; did you mean 'sft'?",
        ),
        ("data.train.3.path=x", "command line: data.train[3]: no item 3 in this list of 1"),
        (
            "data.train.0.wieght=2",
            "command line: data.train[0].wieght: unknown key; did you mean 'data.train[0].weight'?",
        ),
        ("optim.lr.x=1", "command line: optim.lr: expected a number, got dict {'x': 1}"),
        (
            "optim.lr",
            "command line: expected KEY=VALUE with a dotted key such as optim.lr=3e-4, got 'optim.lr'",
        ),
    ],
)
def test_override_errors_name_source_key_and_fix(recipe, override, expected):
    assert error_of(recipe, override) == expected


def test_cross_field_rules_come_from_validate(recipe):
    assert error_of(recipe, "model.path=m").endswith(
        "r.yaml: model: set exactly one of model.path (load weights) or model.flavor (random init)"
    )
    assert error_of(recipe, "model.tokenizer=null").endswith(
        "command line: model.tokenizer: a randomly initialised model needs model.tokenizer"
    )


def test_file_errors_name_the_file(tmp_path):
    path = write(tmp_path / "r.yaml", MINIMAL + "optim:\n  lr: 1.0e-4\n  betas: [0.9, 0.95]\n")
    assert error_of(path).endswith("r.yaml: optim.betas: unknown key; did you mean 'optim.beta2'?")
    path = write(tmp_path / "r2.yaml", MINIMAL + "logging: {evry: 5}\n")
    assert error_of(path).endswith("r2.yaml: logging.evry: unknown key; did you mean 'logging.every'?")


def test_error_in_base_names_the_base_file(tmp_path):
    write(tmp_path / "base.yaml", "train: {micro_batch_size: 0}\n")
    path = write(tmp_path / "r.yaml", "base: base.yaml\n" + MINIMAL)
    assert error_of(path).endswith("base.yaml: train.micro_batch_size: must be > 0, got 0")
    assert "r.yaml" not in error_of(path)


def test_missing_recipe_base_and_bad_yaml(tmp_path):
    assert "recipe file not found" in error_of(tmp_path / "nope.yaml")
    assert "included file not found: gone.yaml" in error_of(write(tmp_path / "r.yaml", "base: gone.yaml\n"))
    bad = write(tmp_path / "bad.yaml", "model:\n  flavor: [unclosed\n")
    assert "bad.yaml:3: invalid YAML" in error_of(bad)
    assert "a recipe must be a mapping" in error_of(write(tmp_path / "list.yaml", "- 1\n"))
    assert "expected a mapping of ModelConfig fields" in error_of(write(tmp_path / "m.yaml", "model: 3\n"))


def test_circular_base_is_an_error(tmp_path):
    write(tmp_path / "a.yaml", "base: b.yaml\n")
    write(tmp_path / "b.yaml", "base: a.yaml\n")
    assert "circular base: include" in error_of(tmp_path / "a.yaml")


def _sections(cls):
    hints = typing.get_type_hints(cls)
    yield cls
    for f in dataclasses.fields(cls):
        for variant in (f.metadata.get("variants") or {}).values():
            yield from _sections(variant)
        tp = hints[f.name]
        inner = typing.get_args(tp)[0] if typing.get_origin(tp) is list else tp
        if dataclasses.is_dataclass(inner):
            yield from _sections(inner)


def test_every_field_and_section_is_documented():
    for section in _sections(Recipe):
        assert section.__doc__ and not section.__doc__.startswith(section.__name__ + "("), section
        for f in dataclasses.fields(section):
            doc = f.metadata.get("doc", "")
            assert doc and "\n" not in doc and doc.endswith("."), f"{section.__name__}.{f.name}"


def test_show_output_round_trips(recipe):
    r = load_recipe(recipe, ["optim.lr=2e-4", "data.train=[a.jsonl, b.jsonl]"])
    text = render_yaml(r)
    assert "lr: 0.0002  # Peak learning rate." in text
    assert to_dict(build(Recipe, yaml.safe_load(text))) == to_dict(r)


RECIPES_DIR = recipes_dir()
SHIPPED = sorted(RECIPES_DIR.rglob("*.yaml"))


def test_recipes_are_shipped():
    assert SHIPPED, "recipes/ is empty"


@pytest.mark.parametrize("path", SHIPPED, ids=[str(p.relative_to(RECIPES_DIR)) for p in SHIPPED])
def test_every_shipped_recipe_validates_and_has_a_header(path):
    load_recipe(path)
    first = path.read_text().splitlines()[0]
    assert first.startswith("# ") and len(first) > 10, "recipes start with a one-line description"


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "erniekit", *args], capture_output=True, text=True, check=False
    )


def test_cli_config_show_typo_is_one_line_with_suggestion():
    name = str(SHIPPED[0].relative_to(RECIPES_DIR).with_suffix(""))
    out = run_cli("config", "show", name, "optim.lrr=1e-4")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "error: command line: optim.lrr: unknown key; did you mean 'optim.lr'?"
    ]
    ok = run_cli("config", "show", name, "optim.lr=1e-4")
    assert ok.returncode == 0 and "lr: 0.0001  # Peak learning rate." in ok.stdout


def test_cli_recipes_lists_every_recipe_and_version():
    out = run_cli("recipes")
    assert out.returncode == 0
    for path in SHIPPED:
        assert str(path.relative_to(RECIPES_DIR).with_suffix("")) in out.stdout
    assert run_cli("--version").stdout.startswith("erniekit ")


@pytest.mark.parametrize("path", SHIPPED, ids=[str(p.relative_to(RECIPES_DIR)) for p in SHIPPED])
def test_a_shipped_recipe_copied_elsewhere_still_finds_its_bases(path, tmp_path):
    """Shipped recipes name their bases by shipped name, so `recipes --copy` gives a working file."""
    copy = tmp_path / "mine" / path.name
    assert (
        run_cli("recipes", "--copy", str(path.relative_to(RECIPES_DIR).with_suffix("")), str(copy)).returncode
        == 0
    )
    assert copy.read_text() == path.read_text()
    assert to_dict(load_recipe(copy)) == to_dict(load_recipe(path))


def test_a_users_recipe_extends_a_shipped_one_by_name_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "my.yaml", "base: ernie4_5/debug_sft\ntrain: {max_steps: 3}\n")
    r = load_recipe("my.yaml")
    assert r.train.max_steps == 3 and r.model.tokenizer == "samples://ernie_tokenizer"
    assert load_recipe("ernie4_5/debug_sft").train.max_steps != 3  # a shipped name works from here too
    # a file beside the recipe wins over a shipped recipe of the same name
    write(tmp_path / "ernie4_5" / "debug_sft.yaml", "base: ../base.yaml\n")
    write(tmp_path / "base.yaml", MINIMAL)
    write(tmp_path / "local.yaml", "base: ernie4_5/debug_sft.yaml\n")
    assert load_recipe("local.yaml").model.tokenizer == "tok"
    write(tmp_path / "bad.yaml", "base: ernie4_5/no_such_recipe\n")
    with pytest.raises(
        ConfigError, match=r"bad.yaml: base: included file not found: ernie4_5/no_such_recipe"
    ):
        load_recipe("bad.yaml")


def test_bundled_samples_resolve_from_any_directory(tmp_path, monkeypatch):
    from erniekit.resources import resolve_path
    from erniekit.tokenizer import load_tokenizer

    monkeypatch.chdir(tmp_path)
    assert load_tokenizer("samples://ernie_tokenizer").vocab_size > 100
    assert resolve_path("samples://sft_alpaca.json").is_file()
    assert resolve_path("data/x.jsonl") == Path("data/x.jsonl")  # user paths stay cwd-relative


def test_cli_recipes_copy_refuses_to_overwrite_and_unknown_names(tmp_path):
    target = write(tmp_path / "r.yaml", "mine\n")
    out = run_cli("recipes", "--copy", "ernie4_5/debug_sft", str(target))
    assert out.returncode == 2 and "already exists; not overwritten" in out.stderr
    assert target.read_text() == "mine\n"
    out = run_cli("recipes", "--copy", "ernie4_5/nope", str(tmp_path))
    assert out.returncode == 2 and out.stderr.startswith("error: ernie4_5/nope: no shipped recipe")


PRESETS_DIR = recipes_dir().parent / "configs"
PRESETS = sorted(PRESETS_DIR.rglob("*.yaml"))


@pytest.mark.parametrize("path", PRESETS, ids=[str(p.relative_to(PRESETS_DIR)) for p in PRESETS])
def test_every_preset_is_included_by_a_shipped_recipe_and_sets_only_known_keys(path):
    """configs/ holds what recipes share: each preset is used, and its keys check against the schema."""
    name = f"configs/{path.relative_to(PRESETS_DIR).with_suffix('').as_posix()}"
    users = [r for r in SHIPPED if name in r.read_text()]
    assert users, f"{name} is included by no shipped recipe"
    assert path.read_text().startswith("# ")
    load_recipe(path, ["model.flavor=ernie4_5_vl/debug", "model.tokenizer=t", "train.grad_accum=16"])


def test_presets_are_found_from_any_directory_and_name_their_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "r.yaml", "base: [ernie4_5/debug_sft, configs/layouts/8gpu_tp4_ep4_sharding2]\n")
    r = load_recipe("r.yaml")
    assert (r.parallel.tp, r.parallel.ep, r.parallel.sharding.degree) == (4, 4, 2)
    write(tmp_path / "bad.yaml", "base: configs/layouts/no_such_layout\n")
    with pytest.raises(ConfigError, match="bad.yaml: base: included file not found: configs/layouts/no_such"):
        load_recipe("bad.yaml")
    write(tmp_path / "typo.yaml", "base: configs/hardware/gpu_bf16\ntrain: {devise: gpu}\n")
    with pytest.raises(
        ConfigError, match=r"typo.yaml: train.devise: unknown key; did you mean 'train.device'"
    ):
        load_recipe("typo.yaml")


GPU_RECIPES = {  # the shipped recipes sized for real hardware, and the shape each is planned with
    "ernie4_5/0p3b_sft": "ernie4_5/0.3b",
    "ernie4_5_21b_a3b/sft_tp4_ep4_sharding2": "ernie4_5/21b-a3b",
    "ernie4_5_300b_a47b/sft_tp8_pp8_sharding2": "ernie4_5/300b-a47b",
    "ernie4_5_300b_a47b/sft_lora_tp8_pp6": "ernie4_5/300b-a47b",
    "ernie4_5_vl_28b_a3b/sft_tp4_ep4_pp2": "ernie4_5_vl/28b-a3b",
    "ernie4_5_vl_28b_a3b/sft_lora_tp2_ep2_pp2": "ernie4_5_vl/28b-a3b",
    "ernie4_5_vl_424b_a47b/sft_lora_tp8_ep8_pp4": "ernie4_5_vl/424b-a47b",
    "paddleocr_vl/sft": "paddleocr_vl/0.9b",
    "paddleocr_vl/sft_lora": "paddleocr_vl/0.9b",
}


@pytest.mark.parametrize("name", GPU_RECIPES)
def test_gpu_recipes_fit_an_80gb_gpu_by_plan(name):
    from erniekit.models import flavor_args
    from erniekit.parallel.estimate import plan

    recipe = load_recipe(name)
    result = plan(flavor_args(GPU_RECIPES[name]), recipe)
    assert result["devices"] == recipe.parallel.world
    assert result["total_GiB"] < 80 * 0.93, result  # 80 GB (74.5 GiB) less a few GiB for the runtime
