"""Tiny random targets and heads for CPU tests, and a short head fit that makes drafts agree."""

from __future__ import annotations

import copy

import torch
import transformers
from transformers import AutoModelForCausalLM

from eagle.model.draft_head import DraftHead, HeadConfig, TargetParts, build_head
from eagle.model.target import TargetModel

VOCAB = 96
HIDDEN = 32

TINY_FIELDS = dict(  # the config fields every tiny random target shares
    vocab_size=VOCAB,
    hidden_size=HIDDEN,
    intermediate_size=64,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    tie_word_embeddings=False,
)

ARCHITECTURES = {
    "llama": lambda: transformers.LlamaConfig(**TINY_FIELDS),
    "qwen2": lambda: transformers.Qwen2Config(**TINY_FIELDS),
    "qwen3": lambda: transformers.Qwen3Config(**TINY_FIELDS, head_dim=8),
    "mixtral": lambda: transformers.MixtralConfig(
        **TINY_FIELDS, num_local_experts=4, num_experts_per_tok=2, sliding_window=None
    ),
    "mistral": lambda: transformers.MistralConfig(**TINY_FIELDS, sliding_window=None),
}


def make_model(arch: str, seed: int = 0, attn: str = "sdpa", dtype=torch.float32):
    torch.manual_seed(seed)
    config = copy.deepcopy(ARCHITECTURES[arch]())
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attn)
    return model.to(dtype).eval()


def make_target(arch: str = "llama", seed: int = 0, attn: str = "sdpa") -> TargetModel:
    return TargetModel(make_model(arch, seed, attn))


def head_config(variant: str, draft_vocab: int | None = None, **overrides) -> HeadConfig:
    fields = dict(
        variant=variant,
        hidden_size=HIDDEN,
        intermediate_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=VOCAB,
        draft_vocab_size=draft_vocab if variant == "eagle3" else None,
    )
    fields.update(overrides)
    return HeadConfig(**fields)


def random_head(
    target: TargetModel, variant: str, seed: int = 1, draft_vocab: int | None = None
) -> DraftHead:
    """A randomly initialised head; with a reduced EAGLE-3 vocabulary, d2t maps every other id."""
    torch.manual_seed(seed)
    config = head_config(variant, draft_vocab)
    head = build_head(config, TargetParts(target.embed_tokens, target.lm_head), False)
    if variant == "eagle3" and draft_vocab and draft_vocab < VOCAB:
        kept = torch.randperm(VOCAB)[:draft_vocab].sort().values
        head.d2t.copy_(kept - torch.arange(draft_vocab))
        head.t2d.zero_()
        head.t2d[kept] = True
    return head.to(target.dtype).eval()


def greedy_sequences(target: TargetModel, prompts: torch.Tensor, length: int) -> torch.Tensor:
    """Greedy continuations of each prompt row [B, P] -> [B, P + length]."""
    model = target.model
    mask = torch.ones_like(prompts)
    with torch.no_grad():
        return model.generate(
            prompts, attention_mask=mask, max_new_tokens=length, do_sample=False,
            eos_token_id=None, pad_token_id=VOCAB - 1,
        )  # fmt: skip


def fit_head(
    head: DraftHead,
    target: TargetModel,
    prompts: torch.Tensor,
    length: int,
    steps: int = 200,
    unroll: int = 3,
) -> DraftHead:
    """Teach the head the target's greedy continuations of ``prompts`` [B, P] (seconds on CPU).

    The head then drafts those continuations mostly right, which is what the acceptance and
    cache-compaction tests need; the target's output is unaffected by the head either way.
    """
    sequences = greedy_sequences(target, prompts, length)
    with torch.no_grad():
        out = target.model(sequences, output_hidden_states=True)
    layers = head.config.default_feature_layers(target.num_layers)
    features = torch.cat([out.hidden_states[i] for i in layers], dim=-1)
    trainable = [p for p in head.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=3e-3)
    head.train()
    for _ in range(steps):
        loss = _unrolled_loss(head, features, sequences, unroll)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return head.eval()


def _unrolled_loss(
    head: DraftHead, features: torch.Tensor, sequences: torch.Tensor, unroll: int
) -> torch.Tensor:
    """Cross-entropy of ``unroll`` chained draft steps, each attending as a tree node would.

    Pair t reads (feature_t, token_{t+1}) and predicts token_{t+2}; step s > 0 feeds the head's
    own output of step s - 1 with token_{t+1+s}, seeing the real pairs <= t and its own chain.
    """
    b, length = sequences.shape
    n = length - 1 - unroll
    real = torch.ones(n, n, dtype=torch.bool).tril()
    eye = torch.eye(n, dtype=torch.bool)
    hidden = head.project_target_features(features[:, :n])
    past: list | None = None
    total = torch.zeros(())
    for s in range(unroll):
        tokens = sequences[:, 1 + s : 1 + s + n]
        labels = sequences[:, 2 + s : 2 + s + n]
        positions = (torch.arange(n) + s)[None].expand(b, -1)
        mask = torch.cat([real] + [eye] * s, dim=1)[None]
        hidden, kv = head(hidden, tokens, positions, past, mask)
        logits = head.logits(hidden).flatten(0, 1)
        total = total + 0.8**s * torch.nn.functional.cross_entropy(
            logits, _draft_labels(head, labels)
        )
        past = kv if past is None else [
            (torch.cat((pk, k), 2), torch.cat((pv, v), 2))
            for (pk, pv), (k, v) in zip(past, kv, strict=True)
        ]  # fmt: skip
    return total


def _draft_labels(head: DraftHead, labels: torch.Tensor) -> torch.Tensor:
    if head.variant == "eagle3" and head.reduced_vocab:
        lookup = torch.cumsum(head.t2d.long(), 0) - 1
        return lookup[labels].flatten()
    return labels.flatten()


# -- training data in the eagle-features/1 format (the trainer's test fixture) ------------------


def greedy_samples(
    target: TargetModel, num: int, prompt_len: int = 6, new_tokens: int = 40, seed: int = 0
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(input_ids [L], loss_mask [L]) pairs: random prompts (mask 0) + greedy replies (mask 1)."""
    generator = torch.Generator().manual_seed(seed)
    prompts = torch.randint(3, VOCAB, (num, prompt_len), generator=generator)
    sequences = greedy_sequences(target, prompts, new_tokens)
    mask = torch.zeros_like(sequences)
    mask[:, prompt_len:] = 1
    return list(zip(sequences, mask, strict=True))


def write_feature_data(
    target: TargetModel,
    directory,
    samples: list[tuple[torch.Tensor, torch.Tensor]],
    aux_layers: tuple[int, ...] | None = (2, 2, 1),
    draft_vocab_size: int = 64,
    shard_samples: int = 5,
    target_topk: int = 0,
):
    """Store samples as ``eagle.ge_data`` does: the target's bf16 features captured one sample
    per forward, ``shard_samples`` samples a shard, the manifest and the vocabulary, all through
    the real writer (``capture``, ``feature_format``, ``vocab``). Returns the manifest."""
    from pathlib import Path

    from eagle.ge_data.capture import CaptureSettings, ShardWriter, capture_to_shards
    from eagle.ge_data.feature_format import new_manifest, target_info, write_manifest, write_vocab
    from eagle.ge_data.render import RenderedExample
    from eagle.ge_data.vocab import build_vocab

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    settings = {
        "target": target_info(target, target.config.name_or_path or "tiny-random"),
        "template": "none", "max_len": max(len(ids) for ids, _ in samples), "dtype": "bfloat16",
        "feature_layers": {"hidden": [-1], **({"aux": list(aux_layers)} if aux_layers else {})},
        **({"target_topk": target_topk} if target_topk else {}),
        "regenerated": None, "source": {"data": "tests/helpers.py greedy_samples"},
    }  # fmt: skip
    manifest = new_manifest(directory, settings)
    writer = ShardWriter(manifest, shard_tokens=1 << 30)
    capture = CaptureSettings(aux_layers, batch_size=1, target_topk=target_topk)
    examples = [
        RenderedExample(f"s{i}", ids, mask, truncated=False)
        for i, (ids, mask) in enumerate(samples)
    ]
    for first in range(0, len(examples), shard_samples):  # each call ends with one shard
        capture_to_shards(target, examples[first : first + shard_samples], writer, capture)
    manifest.complete = True
    write_manifest(manifest)
    fingerprint, argmax = manifest.target.fingerprint, writer.argmax_counts
    write_vocab(directory, build_vocab(writer.counts, draft_vocab_size, fingerprint, argmax))
    return manifest


def save_target_dir(model, directory) -> None:
    """Save a tiny model with a word-level tokenizer (w0..w95) so from_pretrained can load it."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    model.save_pretrained(directory)
    core = Tokenizer(models.WordLevel({f"w{i}": i for i in range(VOCAB)}, unk_token="w0"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=core, eos_token="w2", unk_token="w0").save_pretrained(
        directory
    )


# -- data generation fixtures: a saved tiny target with a chat template, ShareGPT files ---------

CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'user' %}w1 {% elif m['role'] == 'assistant' %}w3 {% else %}w4 {% endif %}"
    "{{ m['content'] }} w2 "
    "{% endfor %}"
    "{% if add_generation_prompt %}w3 {% endif %}"
)


def save_chat_target_dir(model, directory) -> None:
    """Save a tiny model with a word-level tokenizer (w0..w95) and a chat template.

    Rendered chat: ``w1 <user> w2 w3 <reply> w2 ...``; w4 opens a system message, w2 (the EOS
    token) ends every message, so the loss mask covers each reply and its w2.
    """
    from transformers import AutoTokenizer

    save_target_dir(model, directory)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(directory)


def word_conversations(num: int, seed: int = 0, max_turns: int = 3) -> list[dict]:
    """ShareGPT records of random words (w5..w95): 1..max_turns exchanges of 2..12 words."""
    import random

    rng = random.Random(seed)

    def text() -> str:
        return " ".join(f"w{rng.randrange(5, VOCAB)}" for _ in range(rng.randint(2, 12)))

    records = []
    for i in range(num):
        turns = []
        for _ in range(rng.randint(1, max_turns)):
            turns += [{"from": "human", "value": text()}, {"from": "gpt", "value": text()}]
        records.append({"id": f"c{i}", "conversations": turns})
    return records


def write_jsonl(path, records: list[dict]) -> None:
    import json

    with open(path, "w", encoding="utf-8") as stream:
        stream.writelines(json.dumps(r) + "\n" for r in records)


def byte_tokenizer(chat_template=None):
    """A tiny byte-level fast tokenizer with ChatML special tokens (no download)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    backend = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        additional_special_tokens=["<|im_start|>"],
    )
    tokenizer.chat_template = chat_template
    return tokenizer


# -- published head formats, written out by hand ----------------------------------------------


def random_state(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    """Random tensors (scale 0.1) of the given shapes, in the given key order."""
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=g) * 0.1 for k, s in shapes.items()}


def eagle1_state(
    ffn: int,
    kv: int,
    bias: bool = True,
    qkv_bias: bool = False,
    embedding: bool = True,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """An EAGLE-1 head as SafeAILab/EAGLE's ``cnets1.Model`` publishes it, for a HIDDEN-wide
    target: ``fc`` (with ``bias``), one decoder layer without an input norm, optionally the
    embedding and q/k/v biases; ``kv`` is the key/value width, ``ffn`` the MLP width."""
    shapes = {"fc.weight": (HIDDEN, 2 * HIDDEN)} | ({"fc.bias": (HIDDEN,)} if bias else {})
    shapes |= {
        "layers.0.self_attn.q_proj.weight": (HIDDEN, HIDDEN),
        "layers.0.self_attn.k_proj.weight": (kv, HIDDEN),
        "layers.0.self_attn.v_proj.weight": (kv, HIDDEN),
        "layers.0.self_attn.o_proj.weight": (HIDDEN, HIDDEN),
        "layers.0.mlp.gate_proj.weight": (ffn, HIDDEN),
        "layers.0.mlp.up_proj.weight": (ffn, HIDDEN),
        "layers.0.mlp.down_proj.weight": (HIDDEN, ffn),
        "layers.0.post_attention_layernorm.weight": (HIDDEN,),
    }
    if embedding:
        shapes["embed_tokens.weight"] = (VOCAB, HIDDEN)
    if qkv_bias:
        shapes |= {
            "layers.0.self_attn.q_proj.bias": (HIDDEN,),
            "layers.0.self_attn.k_proj.bias": (kv,),
            "layers.0.self_attn.v_proj.bias": (kv,),
        }
    return random_state(shapes, seed)


def eagle3_keys(
    layer: str = "midlayer.",
    width: int = HIDDEN,
    target_width: int = HIDDEN,
    heads: int = 4,
    kv_heads: int = 2,
    head_dim: int = 8,
    ffn: int = 64,
    draft_vocab: int = 40,
    embedding: bool = False,
    maps: bool = True,
) -> dict[str, torch.Tensor]:
    """The EAGLE-3 layout of SafeAILab/EAGLE eagle/model/cnets.py and SpecForge llama3_eagle.py."""
    q, kv = heads * head_dim, kv_heads * head_dim
    shapes = {
        "fc.weight": (width, 3 * target_width),
        f"{layer}hidden_norm.weight": (width,),
        f"{layer}input_layernorm.weight": (width,),
        f"{layer}self_attn.q_proj.weight": (q, 2 * width),
        f"{layer}self_attn.k_proj.weight": (kv, 2 * width),
        f"{layer}self_attn.v_proj.weight": (kv, 2 * width),
        f"{layer}self_attn.o_proj.weight": (width, q),
        f"{layer}mlp.gate_proj.weight": (ffn, width),
        f"{layer}mlp.up_proj.weight": (ffn, width),
        f"{layer}mlp.down_proj.weight": (width, ffn),
        f"{layer}post_attention_layernorm.weight": (width,),
        "norm.weight": (width,),
        "lm_head.weight": (draft_vocab, width),
    }
    if embedding:
        shapes["embed_tokens.weight"] = (VOCAB, width)
    state = random_state(shapes, seed=1)
    if maps:
        state |= vocab_maps(draft_vocab)
    return state


def vocab_maps(draft_vocab: int) -> dict[str, torch.Tensor]:
    """d2t offsets and t2d mask; the identity (zeros, all true) for a full draft vocabulary."""
    kept = torch.arange(0, VOCAB, VOCAB / draft_vocab).long()[:draft_vocab]
    d2t = kept - torch.arange(draft_vocab)
    t2d = torch.zeros(VOCAB, dtype=torch.bool).index_fill(0, kept, True)
    return {"d2t": d2t, "t2d": t2d}


def write_head_dir(directory, cfg: dict, state: dict, safetensors: bool = True):
    """A head folder: ``config.json`` and the weights (safetensors, or ``pytorch_model.bin``)."""
    import json

    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(cfg))
    if safetensors:
        save_file(state, directory / "model.safetensors")
    else:
        torch.save(state, directory / "pytorch_model.bin")
    return directory
