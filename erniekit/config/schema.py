"""The recipe schema: one small dataclass per section, every field documented where it is declared.

A recipe YAML maps onto :class:`Recipe`. Sections: ``model``, ``data``, ``method``, ``optim``, ``train``,
``checkpoint``, ``logging``. ``method`` is tagged by ``method.name`` so a run only carries its own
method's knobs. Cross-field rules live in :meth:`Recipe.validate`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from erniekit.config.core import ConfigError, option, register_paths


@dataclass
class ModelConfig:
    """Which network to train and where its weights and tokenizer come from."""

    path: str | None = option(
        None,
        "Model directory to load weights from: Hugging Face (config.json + safetensors) or Paddle ERNIE.",
    )
    flavor: str | None = option(
        None, "Named architecture to initialise randomly instead, e.g. 'ernie4_5/debug' or 'llama/debug'."
    )
    tokenizer: str | None = option(
        None, "Tokenizer directory (tokenizer.model or tokenizer.json); defaults to model.path."
    )
    fused_ops: Literal["auto", "on", "off"] = option(
        "auto",
        "Fused kernels: auto (on GPUs), on (wherever they run), off (reference math); each is checked "
        "against the reference once and falls back with a log line (erniekit/ops).",
    )
    moe_capacity_factor: float | None = option(
        None,
        "MoE token dropping: each expert takes at most factor x (tokens x k / experts) assignments; "
        "None is dropless.",
        gt=0,
    )
    router_aux_loss_coef: float | None = option(
        None, "Weight of the MoE load-balancing loss; None keeps the model's config.json value.", ge=0
    )
    moe_bias_update_rate: float = option(
        0.0,
        "Aux-loss-free balancing (ERNIE 4.5): after each step, move every expert's correction bias by "
        "this much toward even load, per expert set; 0 disables.",
        ge=0,
    )
    freeze: list[Literal["vision_tower", "resampler", "language_model", "vision_experts"]] = option(
        [],
        "Parts of a vision-language model that do not train: vision_tower, resampler (also "
        "PaddleOCR-VL's projector), language_model (the decoder), vision_experts.",
    )


@dataclass
class DatasetSpec:
    """One data file and how to read it."""

    path: str = option(
        "",
        "JSON/JSONL/.txt, Parquet, CSV or Arrow file, or a datasets save_to_disk directory; "
        "'samples://NAME' names a file bundled with erniekit.",
    )
    format: Literal[
        "auto", "erniekit", "alpaca", "messages", "chatml", "pairs", "erniekit_vl", "query_response"
    ] = option(
        "auto",
        "Layout: erniekit (src/tgt[/response/sort]), alpaca, messages (OpenAI chat, with tools, "
        "tool_calls, tool results and reasoning; ShareGPT conversations with function_call/observation), "
        "chatml (ERNIEKit's name for the same), pairs (prompt/chosen/rejected); with images: erniekit_vl "
        "(text_info/image_info), query_response (<image> tags), messages.",
    )
    weight: float = option(
        1.0, "Relative sampling probability when several training files are mixed (data.mix).", gt=0
    )
    max_samples: int | None = option(None, "Use only the first N records of the file.", gt=0)
    split: str | None = option(
        None, "Split of a saved DatasetDict directory; needed when it has more than one."
    )
    columns: dict[str, str] = option(
        {}, "Keys read under other names, {our_key: their_key}, e.g. {output: answer}."
    )
    tags: dict[str, str] = option(
        {},
        "Message keys and role names read under other names, {role|content|user|assistant|system: theirs}, "
        "e.g. {content: text, assistant: bot}.",
    )


@dataclass
class DataConfig:
    """Where examples come from and how they become fixed-length token batches."""

    train: list[DatasetSpec] = option([], "Training files, mixed as data.mix says.")
    mix: Literal["random", "concat", "interleave_under", "interleave_over"] = option(
        "random",
        "How training files make an epoch (ERNIEKit's mix_strategy): random draws by weight, concat takes "
        "every example once, interleave_under/over draw by weight until the first/every file is used up "
        "(epochs: erniekit/data/loader.py).",
    )
    eval: list[DatasetSpec] = option([], "Evaluation files (loss and perplexity).")
    eval_holdout: int = option(
        0, "When data.eval is empty: hold out this many records of each training file for evaluation.", ge=0
    )
    max_seq_len: int = option(2048, "Tokens per packed row (and the longest example kept).", gt=0)
    packing: bool = option(True, "Pack several examples per row, with per-document positions and masks.")
    truncation: Literal["drop", "right", "turns"] = option(
        "drop", "Over-long examples: drop them, cut the end (right), or drop the earliest turns (turns)."
    )
    template: str | None = option(
        None,
        "Chat template (ernie4_5, ernie4_5_thinking, ernie4_5_vl, paddleocr_vl, chatml, plain); "
        "default: the tokenizer's.",
    )
    keep_reasoning: Literal["last", "all"] = option(
        "last",
        "Reasoning (<think>, reasoning_content) of assistant turns before the last user message: dropped "
        "from the text as the thinking templates (ERNIE 4.5 Thinking, Qwen3) render history (last), or "
        "kept and trained in every turn (all).",
    )
    image_min_pixels: int | None = option(
        None, "Smallest image area after resizing (pixels); default: the model's preprocessor config.", gt=0
    )
    image_max_pixels: int | None = option(
        None, "Largest image area after resizing (pixels); default: the model's preprocessor config.", gt=0
    )
    skip_bad_lines: bool = option(False, "Skip and count malformed records instead of stopping at the first.")
    shuffle: bool = option(True, "Shuffle examples every epoch (seeded by train.seed).")
    cache_dir: str | None = option(None, "Cache for tokenized datasets; default: the datasets library's.")


@dataclass
class SFTConfig:
    """Supervised fine-tuning: next-token cross-entropy on assistant tokens only."""

    name: Literal["sft"] = option("sft", "Training method.")


@dataclass
class PTConfig:
    """Continued pre-training on raw text: every token trained, documents packed without padding."""

    name: Literal["pt"] = option("pt", "Training method.")
    text_keys: list[str] = option(
        ["text"],
        "Record fields joined by a newline into one document (.txt files: one document per line).",
    )


@dataclass
class DPOConfig:
    """Preference optimisation on (prompt, chosen, rejected) pairs; losses and formulas in methods/dpo.py."""

    name: Literal["dpo"] = option("dpo", "Training method.")
    loss: Literal["sigmoid", "ipo", "hinge", "simpo", "orpo", "kto_pair"] = option(
        "sigmoid", "Preference loss: sigmoid (DPO), ipo, hinge, simpo and orpo (reference-free), kto_pair."
    )
    beta: float = option(0.1, "Temperature beta (for orpo: the weight of the odds-ratio term).", gt=0)
    label_smoothing: float = option(
        0.0, "Label smoothing of the sigmoid/simpo losses (conservative DPO).", ge=0, lt=0.5
    )
    gamma: float = option(0.5, "SimPO target reward margin gamma.", ge=0)
    sft_loss_weight: float = option(0.0, "Weight of an extra NLL term on the chosen reply.", ge=0)
    precompute_ref: bool = option(
        False, "Compute reference log-probs once before training (one model in memory)."
    )


@dataclass
class RMConfig:
    """A reward model: a scalar score head on the decoder, trained on preference pairs (Bradley-Terry);
    formulas in methods/rm.py."""

    name: Literal["rm"] = option("rm", "Training method.")
    margin_key: str | None = option(
        "margin", "Record field with the score gap a pair must clear (absent: 0); null ignores it."
    )
    center_rewards: float = option(
        0.0, "Weight of the (r_chosen + r_rejected)^2 penalty that keeps scores centred on 0.", ge=0
    )


@dataclass
class KTOConfig:
    """KTO on unpaired completions labelled desirable or not; formulas in methods/kto.py."""

    name: Literal["kto"] = option("kto", "Training method.")
    beta: float = option(0.1, "Temperature beta of the implied reward beta (log pi - log pi_ref).", gt=0)
    desirable_weight: float = option(1.0, "Weight lambda_D of the desirable examples' loss.", gt=0)
    undesirable_weight: float = option(1.0, "Weight lambda_U of the undesirable examples' loss.", gt=0)
    label_key: str = option("label", "Record field that is true for a desirable completion.")


@dataclass
class RolloutConfig:
    """Sampling completions for RL (GRPO, PPO) from prompt/answer data."""

    prompts_per_step: int = option(
        4, "Prompts sampled per rollout (one rollout feeds ppo_epochs optimizer steps).", gt=0
    )
    max_new_tokens: int = option(64, "Longest completion.", gt=0)
    temperature: float = option(1.0, "Sampling temperature.", gt=0)
    top_p: float = option(1.0, "Nucleus sampling mass.", gt=0, le=1)
    top_k: int = option(0, "Sample among the k most likely tokens; 0 disables.", ge=0)
    stop: list[str] = option([], "Strings that end a completion (besides the end-of-turn token).")
    system_prompt: str | None = option(None, "System message prepended to every prompt.")


@dataclass
class PolicyGradientConfig:
    """What the RL methods (GRPO, PPO) share: rewards, clipping, KL to the reference, rollouts."""

    name: str = option("", "Training method.")
    rewards: list[str] = option(
        ["numeric"],
        "Reward functions: built-ins of erniekit/rl/rewards.py, model:PATH (a reward model) or module:fn.",
    )
    reward_weights: list[float] = option([], "Weight of each reward function; empty means all 1.")
    epsilon: float = option(0.2, "Clip range below 1 of the probability ratio.", gt=0, lt=1)
    beta: float = option(0.0, "KL penalty to the reference policy (0: no reference model is used).", ge=0)
    ppo_epochs: int = option(1, "Optimizer steps taken on each rollout batch.", gt=0)
    log_completions_every: int = option(
        10, "Write sample completions to completions.jsonl every N steps.", ge=0
    )
    rollout: RolloutConfig = option(RolloutConfig(), "How completions are sampled.")


@dataclass
class GRPOConfig(PolicyGradientConfig):
    """Group relative policy optimisation with verifiable rewards; formulas in methods/grpo.py."""

    name: Literal["grpo"] = option("grpo", "Training method.")
    group_size: int = option(4, "Completions sampled per prompt (G).", gt=1)
    scale_rewards: bool = option(True, "Divide advantages by the group's reward std (false: Dr. GRPO).")
    loss_aggregation: Literal["seq-mean-token-mean", "token-mean", "seq-mean-token-sum-norm"] = option(
        "seq-mean-token-mean",
        "Token losses -> step loss: per-sequence means (GRPO), all tokens (DAPO), Dr. GRPO.",
    )
    epsilon_high: float | None = option(
        None, "Clip range above 1 (DAPO clip-higher); default: epsilon.", gt=0
    )
    policy_loss: Literal["grpo", "gspo", "cispo"] = option(
        "grpo",
        "Surrogate: per-token clipped ratio (grpo), one ratio per completion (gspo), or clipped ratios "
        "as constant weights on log-probabilities (cispo).",
    )


@dataclass
class PPOConfig(PolicyGradientConfig):
    """Proximal policy optimisation with a value head, GAE and value clipping; formulas in methods/ppo.py."""

    name: Literal["ppo"] = option("ppo", "Training method.")
    beta: float = option(
        0.05, "Per-token KL penalty to the reference policy, subtracted from the reward.", ge=0
    )
    ppo_epochs: int = option(2, "Optimizer steps taken on each rollout batch.", gt=0)
    gamma: float = option(1.0, "Discount factor.", ge=0, le=1)
    lam: float = option(0.95, "GAE lambda.", ge=0, le=1)
    value_clip: float = option(0.2, "Clip range of the value update around the rollout's values.", gt=0)
    vf_coef: float = option(0.1, "Weight of the value loss.", gt=0)
    whiten_advantages: bool = option(True, "Normalise advantages to zero mean, unit std per rollout.")


METHODS: dict[str, type] = {
    "sft": SFTConfig,
    "pt": PTConfig,
    "dpo": DPOConfig,
    "rm": RMConfig,
    "kto": KTOConfig,
    "grpo": GRPOConfig,
    "ppo": PPOConfig,
}


@dataclass
class LoraConfig:
    """Low-rank adapters: train small A, B matrices next to frozen weights (works with every method)."""

    enabled: bool = option(False, "Train LoRA adapters instead of all parameters.")
    rank: int = option(8, "Adapter rank r.", gt=0)
    alpha: float = option(
        16.0, "Scale numerator: updates are multiplied by alpha / r (rsLoRA: / sqrt(r)).", gt=0
    )
    dropout: float = option(0.0, "Dropout on the adapters' input (linear layers).", ge=0, lt=1)
    targets: list[str] = option(
        ["all-linear"],
        "Layers: all-linear (the decoder's), qkv_proj (or q_proj/k_proj/v_proj), o_proj, up_gate_proj "
        "(or gate_proj/up_proj), down_proj, experts (MoE routed experts; text experts in a VL model), "
        "vision_experts, vision_tower, resampler (VL models).",
    )
    rslora: bool = option(False, "rsLoRA scaling alpha / sqrt(r) instead of alpha / r.")
    lora_plus_ratio: float = option(1.0, "LoRA+: B's learning rate is this multiple of optim.lr.", ge=1)
    quantize: Literal["none", "int8", "int4", "nf4", "wint4/8", "q8_0", "q4_1"] = option(
        "none",
        "Store the frozen base's linear layers quantised (QLoRA), read from the checkpoint straight "
        "into that form: int8 per output channel, int4 group-wise, nf4 (NormalFloat4, double-quantised "
        "scales), ERNIEKit's wint4/8 (routed experts int4, the other linears int8, per channel), or "
        "llama.cpp's q8_0 / q4_1 blocks (for a base converted from such a GGUF: its own values). "
        "Embeddings, norms, routers, the LM head and a vision tower keep their precision; routed "
        "experts too, except with wint4/8.",
    )
    quantize_group: int = option(
        0,
        "Input rows per scale for int4 / nf4 and wint4/8's experts (0: 128 for int4, 64 for nf4, "
        "the whole input for wint4/8).",
        ge=0,
    )


@dataclass
class OptimConfig:
    """AdamW and its learning-rate schedule."""

    lr: float = option(1e-5, "Peak learning rate.", gt=0)
    min_lr_ratio: float = option(
        0.0, "Final learning rate as a fraction of the peak (cosine, linear).", ge=0, le=1
    )
    scheduler: Literal["cosine", "linear", "constant"] = option("cosine", "Decay after warmup.")
    warmup_steps: int = option(0, "Optimizer steps of linear warmup from zero.", ge=0)
    weight_decay: float = option(0.0, "Decoupled weight decay (not applied to norms and biases).", ge=0)
    beta1: float = option(0.9, "Adam beta1.", ge=0, lt=1)
    beta2: float = option(0.999, "Adam beta2.", ge=0, lt=1)
    eps: float = option(1e-8, "Adam epsilon.", gt=0)
    grad_clip: float = option(1.0, "Clip the global gradient norm to this value; 0 disables clipping.", ge=0)
    vision_lr_ratio: float = option(
        1.0,
        "Learning-rate multiplier of a VL model's vision tower and resampler (ERNIEKit vit_lr_ratio).",
        gt=0,
    )
    router_lr_ratio: float = option(
        1.0, "Learning-rate multiplier of MoE routers (ERNIEKit moe_gate_lr_ratio).", gt=0
    )
    moment_dtype: Literal["float32", "bfloat16"] = option(
        "float32",
        "AdamW's moment storage; bfloat16 halves the optimizer state (ERNIEKit use_lowprecision_moment).",
    )


@dataclass
class TrainConfig:
    """The loop: how long, how big a batch, where results go."""

    output_dir: str = option("output/run", "Directory for checkpoints, metrics.jsonl and config.yaml.")
    seed: int = option(42, "Seed for initialisation, data order and dropout.", ge=0)
    max_steps: int = option(-1, "Optimizer steps to run; -1 runs train.epochs epochs.", ge=-1)
    epochs: int = option(1, "Passes over the training data when max_steps is -1.", gt=0)
    micro_batch_size: int = option(1, "Rows per forward/backward pass.", gt=0)
    grad_accum: int = option(1, "Micro-batches accumulated into one optimizer step.", gt=0)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = option(
        "auto", "Compute precision; auto is bf16 on GPUs that support it, fp32 on CPU."
    )
    device: Literal["auto", "cpu", "gpu"] = option("auto", "Where to train; auto picks the GPU when present.")
    resume: str | None = option(None, "'auto' resumes from the newest checkpoint in output_dir, or a path.")
    eval_every: int = option(0, "Evaluate every N optimizer steps (and at the end); 0 only at the end.", ge=0)
    eval_batches: int = option(
        0, "Cap on eval micro-batches per evaluation; 0 uses the whole eval set.", ge=0
    )
    eval_on_start: bool = option(False, "Also evaluate before the first step (a baseline in metrics.jsonl).")
    on_nan: Literal["stop", "skip"] = option(
        "stop", "Non-finite loss or gradient: stop after saving the last good state, or skip the update."
    )


@dataclass
class CheckpointConfig:
    """When checkpoints are written and how many are kept."""

    every: int = option(0, "Save a checkpoint every N optimizer steps; 0 saves only at the end.", ge=0)
    keep: int = option(2, "Keep the newest N checkpoints (0 keeps all).", ge=0)
    final: bool = option(True, "Save a checkpoint when training ends (also on Ctrl-C).")


@dataclass
class LoggingConfig:
    """What is reported while training."""

    every: int = option(1, "Log metrics every N optimizer steps.", gt=0)
    visualdl: bool = option(True, "Also write VisualDL scalars under output_dir/vdl (visualdl --logdir ...).")
    progress: Literal["auto", "bar", "plain", "none"] = option(
        "auto", "Progress display: a tqdm bar on a terminal, plain log lines otherwise."
    )


@dataclass
class ShardingConfig:
    """ZeRO-style sharding over data-parallel ranks (Paddle's sharding optimizer)."""

    degree: int = option(1, "Ranks that share one copy of the optimizer state (stage 1) or more.", gt=0)
    stage: int = option(
        1,
        "1: optimizer state (what erniekit runs); 2: + gradients, 3: + parameters: refused for now.",
        choices=(1, 2, 3),
    )


@dataclass
class RecomputeConfig:
    """Activation recomputation: trade compute for memory."""

    enabled: bool = option(False, "Recompute activations in the backward pass instead of storing them.")
    granularity: Literal["full", "core_attn"] = option(
        "full", "full: each decoder layer; core_attn: only the attention scores and softmax."
    )


@dataclass
class ParallelConfig:
    """How a run is split over processes (Paddle fleet); the degrees' product must equal the process count."""

    dp: int = option(1, "Data-parallel replicas.", gt=0)
    sharding: ShardingConfig = option(
        ShardingConfig(), "Optimizer-state (and more) sharding over data ranks."
    )
    tp: int = option(1, "Tensor-parallel degree (attention heads, MLP columns, vocabulary).", gt=0)
    pp: int = option(1, "Pipeline stages (1F1B schedule over train.grad_accum micro-batches).", gt=0)
    virtual_pp: int = option(1, "Model chunks per pipeline stage (interleaved schedule when > 1).", gt=0)
    pp_segment: Literal["layer", "uniform"] = option(
        "layer", "Split stages by decoder layers (layer) or by parameter count (uniform)."
    )
    ep: int = option(1, "Expert-parallel degree: MoE experts are split over this many ranks.", gt=0)
    ep_group: Literal["dp", "tp"] = option(
        "dp", "Experts live on data ranks (all-to-all token exchange) or on the tensor-parallel group."
    )
    sequence_parallel: bool = option(
        False, "Shard activations between TP regions along the sequence (needs tp > 1)."
    )
    recompute: RecomputeConfig = option(RecomputeConfig(), "Activation recomputation.")

    @property
    def world(self) -> int:
        return self.dp * self.sharding.degree * self.tp * self.pp


@dataclass
class EvalConfig:
    """``erniekit eval``: generate for prompt/answer files and score (loss and perplexity use data.eval)."""

    generation: list[DatasetSpec] = option([], "Files of {prompt, answer} records to generate for and score.")
    scorer: str = option(
        "exact",
        "exact (normalised equality), contains, numeric, tool_call (same calls, arguments equal as JSON), "
        "or module:function(completion, answer, record).",
    )
    max_new_tokens: int = option(128, "Longest completion generated per prompt.", gt=0)
    temperature: float = option(0.0, "Sampling temperature; 0 is greedy.", ge=0)
    batch_size: int = option(8, "Prompts generated together (rows of the continuous batch).", gt=0)


@dataclass
class Recipe:
    """A complete run: model + method + data + optimisation + where results go."""

    model: ModelConfig = option(ModelConfig(), "The network.")
    data: DataConfig = option(DataConfig(), "Training and evaluation data.")
    method: SFTConfig | PTConfig | DPOConfig | RMConfig | KTOConfig | GRPOConfig | PPOConfig = option(
        SFTConfig(), "Training method, selected by method.name.", variants=METHODS
    )
    lora: LoraConfig = option(LoraConfig(), "LoRA adapters (off by default: full fine-tuning).")
    optim: OptimConfig = option(OptimConfig(), "Optimizer and schedule.")
    train: TrainConfig = option(TrainConfig(), "The training loop.")
    checkpoint: CheckpointConfig = option(CheckpointConfig(), "Checkpoints.")
    logging: LoggingConfig = option(LoggingConfig(), "Metrics and progress output.")
    eval: EvalConfig = option(EvalConfig(), "Generation-based evaluation (erniekit eval).")
    parallel: ParallelConfig = option(ParallelConfig(), "Multi-process parallelism (fleet hybrid topology).")

    def validate(self) -> None:
        """Cross-field rules; raises ConfigError naming the offending key."""
        if (self.model.path is None) == (self.model.flavor is None):
            raise ConfigError(
                "set exactly one of model.path (load weights) or model.flavor (random init)", key="model"
            )
        from erniekit.peft.targets import ALL_TARGETS

        bad = [t for t in self.lora.targets if t not in ALL_TARGETS]
        if bad:
            raise ConfigError(
                f"unknown target {bad[0]!r}; choose from {', '.join(ALL_TARGETS)}", key="lora.targets"
            )
        if self.lora.quantize != "none":
            if not self.lora.enabled:
                raise ConfigError("quantises LoRA's frozen base: set lora.enabled=true", key="lora.quantize")
            expert_targets = [t for t in self.lora.targets if t in ("experts", "vision_experts")]
            if self.lora.quantize == "wint4/8" and expert_targets:
                raise ConfigError(
                    "wint4/8 stores the routed experts in int4, which carry no adapters yet: drop "
                    f"{expert_targets[0]} from lora.targets",
                    key="lora.targets",
                )
        if self.method.name == "kto" and self.train.micro_batch_size * self.train.grad_accum < 2:
            raise ConfigError(
                "KTO estimates its KL term from completions paired with other examples' prompts: it needs "
                "at least 2 examples per step (train.micro_batch_size x train.grad_accum)",
                key="train.grad_accum",
            )
        if isinstance(self.method, PolicyGradientConfig):
            if self.train.grad_accum != 1:
                raise ConfigError(
                    f"{self.method.name} sizes a step by method.rollout.prompts_per_step; leave it at 1",
                    key="train.grad_accum",
                )
            weights = self.method.reward_weights
            if weights and len(weights) != len(self.method.rewards):
                raise ConfigError("needs one weight per reward function", key="method.reward_weights")
        self._validate_data()
        self._validate_parallel()
        if self.model.flavor is not None and self.model.tokenizer is None:
            raise ConfigError("a randomly initialised model needs model.tokenizer", key="model.tokenizer")

    def unsupported(self) -> list[ConfigError]:
        """What erniekit cannot run yet although the recipe is valid: training refuses it before any
        work, ``erniekit plan`` still estimates it (and says so), as it does for any GPU layout."""
        problems = []
        if self.lora.enabled and self.lora.quantize != "none":
            if self.parallel.tp > 1:
                problems.append(
                    ConfigError(
                        "a quantised base is not split by tensor parallelism yet", key="lora.quantize"
                    )
                )
            if self.lora.quantize == "wint4/8" and self.parallel.ep > 1:
                problems.append(
                    ConfigError("int4 experts are not split by expert parallelism yet", key="lora.quantize")
                )
        return problems

    def _validate_data(self) -> None:
        from erniekit.data.columns import RECORD_KEYS, TAG_KEYS, unknown_key

        record_keys = list(RECORD_KEYS) + [
            k for k in getattr(self.method, "text_keys", []) if k not in RECORD_KEYS
        ]
        lists = (("data.train", self.data.train), ("data.eval", self.data.eval),
                 ("eval.generation", self.eval.generation))  # fmt: skip
        for name, specs in lists:
            for i, spec in enumerate(specs):
                for field, allowed in (("columns", record_keys), ("tags", TAG_KEYS)):
                    problem = unknown_key(getattr(spec, field), allowed)
                    if problem:
                        raise ConfigError(problem, key=f"{name}[{i}].{field}")
        if self.data.mix == "concat":
            weighted = [i for i, spec in enumerate(self.data.train) if spec.weight != 1.0]
            if weighted:
                raise ConfigError(
                    "concat takes every example once, so weights do not apply; drop the weight or "
                    "choose data.mix random, interleave_under or interleave_over",
                    key=f"data.train[{weighted[0]}].weight",
                )

    def _validate_parallel(self) -> None:
        p = self.parallel
        if p.sequence_parallel and p.tp == 1:
            raise ConfigError(
                "sequence parallelism shards along the tensor-parallel group; it needs tp > 1",
                key="parallel.sequence_parallel",
            )
        if p.ep > 1 and p.ep_group == "tp" and p.ep != p.tp:
            raise ConfigError(
                f"experts on the tensor-parallel group need ep == tp ({p.tp})", key="parallel.ep"
            )
        if p.ep > 1 and p.ep_group == "dp" and p.sharding.degree > 1:
            raise ConfigError(
                "experts over data ranks need plain dp: fleet's sharding optimizer would broadcast one "
                "rank's experts over the others; shard experts over tp instead (ep_group: tp)",
                key="parallel.ep_group",
            )
        if p.ep > 1 and p.ep_group == "dp" and p.dp % p.ep:
            raise ConfigError(f"ep={p.ep} must divide dp={p.dp}", key="parallel.ep")
        if p.ep > 1 and p.ep_group == "dp" and (p.tp > 1 or p.pp > 1):
            raise ConfigError(
                "experts over data ranks combine with dp/sharding only; with tp or pp use ep_group: tp",
                key="parallel.ep_group",
            )
        if self.model.moe_capacity_factor is not None and p.ep > 1:
            raise ConfigError(
                "token dropping is defined per expert over all tokens; it runs without expert parallelism",
                key="model.moe_capacity_factor",
            )
        if p.virtual_pp > 1 and p.pp < 3:
            raise ConfigError(
                "fleet's interleaved pipeline schedule needs pp >= 3", key="parallel.virtual_pp"
            )
        if p.pp > 1 and self.train.grad_accum < p.pp:
            raise ConfigError(
                f"the pipeline needs at least pp={p.pp} micro-batches per step", key="train.grad_accum"
            )
        if p.pp > 1 and self.method.name != "sft":
            raise ConfigError(
                "pipeline parallelism runs SFT; use tp/dp/sharding for other methods", key="parallel.pp"
            )


register_paths(Recipe)
