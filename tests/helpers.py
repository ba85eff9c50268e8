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

_COMMON = dict(
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
    "llama": lambda: transformers.LlamaConfig(**_COMMON),
    "qwen2": lambda: transformers.Qwen2Config(**_COMMON),
    "qwen3": lambda: transformers.Qwen3Config(**_COMMON, head_dim=8),
    "mixtral": lambda: transformers.MixtralConfig(
        **_COMMON, num_local_experts=4, num_experts_per_tok=2, sliding_window=None
    ),
    "mistral": lambda: transformers.MistralConfig(**_COMMON, sliding_window=None),
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
