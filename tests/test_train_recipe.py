"""The shipped head's campaign recipe: its stage commands, chunk bookkeeping and the bf16 export."""

import json

import pytest
import torch
from helpers import greedy_samples, make_target, random_head, save_target_dir, write_feature_data
from safetensors.torch import load_file, save_file

from eagle.ge_data.feature_format import read_manifest, read_vocab
from eagle.ge_data.vocab import draft_vocab_from_counts
from eagle.model.checkpoint import load_head, save_head
from eagle.model.draft_head import TargetParts
from eagle.train import pools as campaign_pools
from eagle.train import recipe


def test_export_casts_weights_to_bf16_and_loads_strictly(tmp_path):
    target = make_target("llama")
    head = random_head(target, "eagle3", draft_vocab=48)
    trained = save_head(head, tmp_path / "trained")
    out = recipe.export_head(
        trained, tmp_path / "shipped", {"total_token": 8, "depth": 3, "top_k": 2}
    )
    state = load_file(out / "model.safetensors")
    floats = [v for v in state.values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.bfloat16 for v in floats)
    assert state["d2t"].dtype == torch.int64 and state["t2d"].dtype == torch.bool
    assert json.loads((out / "tree.json").read_text()) == {"total_token": 8, "depth": 3, "top_k": 2}
    parts = TargetParts(target.embed_tokens, target.lm_head)
    loaded = load_head(out, parts, dtype=torch.float32)
    for name, value in head.state_dict().items():
        if name.endswith("inv_freq"):
            continue
        expected = value.to(torch.bfloat16).to(value.dtype) if value.is_floating_point() else value
        assert torch.equal(loaded.state_dict()[name], expected), name
    assert not (recipe.export_head(trained, tmp_path / "stable", None) / "tree.json").exists()
    compact = '{"total_token": 8, "depth": 3, "top_k": 2}\n'  # an equal tree keeps its layout
    (out / "tree.json").write_text(compact)
    recipe.export_head(trained, out, {"total_token": 8, "depth": 3, "top_k": 2})
    assert (out / "tree.json").read_text() == compact
    recipe.export_head(trained, out, {"total_token": 12, "depth": 2, "top_k": 8})
    assert json.loads((out / "tree.json").read_text())["total_token"] == 12


@pytest.fixture
def campaign(tmp_path, monkeypatch):
    """A campaign folder of its own (no committed answers, head or curve)."""
    folder = tmp_path / "campaign"
    monkeypatch.setattr(recipe, "CAMPAIGN", folder)
    monkeypatch.setattr(recipe, "VAL_ANSWERS", folder / "val.jsonl")
    monkeypatch.setattr(recipe, "STABLE", folder / "stable")
    monkeypatch.setattr(recipe, "CURVE", folder / "curve.jsonl")
    monkeypatch.setattr(recipe, "ARGMAX_COUNTS", folder / "argmax-counts.safetensors")
    return folder


def _commit_val_answers_and_stable_head(campaign):
    """The campaign as a later chunk finds it: validation answers and a stable head committed."""
    campaign.mkdir()
    (campaign / "val.jsonl").write_text("")
    (campaign / "stable").mkdir()
    (campaign / "stable" / "model.safetensors").write_text("")


def _commands(tmp_path, capsys, *extra):
    argv = ["--workdir", str(tmp_path), "--print-commands", "--dtype", "float32", *extra]
    assert recipe.main(argv) is None
    return capsys.readouterr().out.strip().splitlines()


def test_first_chunk_answers_validation_and_trains_from_scratch(tmp_path, campaign, capsys):
    pools, val, data, stable, anneal = _commands(tmp_path, capsys)
    assert pools.startswith("# pools") and str(tmp_path / "pool-val.jsonl") in pools
    assert val.startswith("python -m eagle.ge_data ") and "--regenerate" in val
    assert f"--data {tmp_path}/pool-val.jsonl" in val and "--max-turns 1" in val
    assert f"--regen-output {campaign / 'val.jsonl'}" in val
    assert "--variants eagle1,eagle3" in val  # last hidden state kept: exact validation
    assert f"--data {tmp_path}/pool-train.jsonl" in data and "--offset 0 " in data
    assert "--regenerate" in data and "--max-turns 1" in data  # on-policy, one pass
    assert f"--regen-output {tmp_path}/answers-c0.jsonl" in data
    assert "--target-topk 32" in data and f"--limit {campaign_pools.CHUNK_CONVERSATIONS}" in data
    assert stable.startswith("python -m eagle.train.main ") and "--init-head" not in stable
    assert "--schedule constant" in stable and f"--val-data {tmp_path}/val" in stable
    assert f"--lr {recipe.STABLE_LR}" in stable and f"--lr {recipe.STABLE_LR}" in anneal
    assert "--schedule linear" in anneal and f"--epochs {recipe.ANNEAL_EPOCHS}" in anneal
    assert anneal.endswith(f"--init-head {tmp_path}/stable-c0/head")


def test_later_chunks_take_the_next_slice_and_continue_the_stable_head(tmp_path, campaign, capsys):
    _commit_val_answers_and_stable_head(campaign)
    (campaign / "curve.jsonl").write_text(json.dumps({"chunk": 0}) + "\n")
    _, val, data, stable, _ = _commands(tmp_path, capsys)
    assert "--regenerate" not in val and f"--data {campaign / 'val.jsonl'}" in val
    assert f"--offset {campaign_pools.CHUNK_CONVERSATIONS} " in data and "data-c1" in data
    assert "answers-c1.jsonl" in data
    # the stable head moved onto the campaign's draft vocabulary (stage 3, in process)
    assert stable.endswith(f"--init-head {tmp_path}/init-c1")


def _chunk_data(target, workdir, chunk: int, seed: int):
    samples = greedy_samples(target, 4, prompt_len=5, new_tokens=12, seed=seed)
    write_feature_data(target, workdir / f"data-c{chunk}", samples, target_topk=4)
    vocab = read_vocab(read_manifest(workdir / f"data-c{chunk}"))
    assert vocab.argmax_counts is not None and int(vocab.argmax_counts.sum()) > 0
    return vocab.argmax_counts


def test_campaign_counts_add_the_tally_or_the_earlier_folders(tmp_path, campaign):
    target = make_target("llama")
    c0, c1 = _chunk_data(target, tmp_path, 0, 1), _chunk_data(target, tmp_path, 1, 2)
    counts, chunks = recipe.campaign_counts(tmp_path, 1)
    assert chunks == [0, 1] and torch.equal(counts, c0 + c1)
    campaign.mkdir()
    tally = torch.zeros_like(c0)
    tally[:3] = 7  # unlike any folder: proves the tally, not data-c0, was read
    save_file({"counts": tally}, recipe.ARGMAX_COUNTS, metadata={"chunks": "0"})
    counts, chunks = recipe.campaign_counts(tmp_path, 1)
    assert chunks == [0, 1] and torch.equal(counts, tally + c1)
    # rerunning a chunk the tally already holds rebuilds from the folders (no double count)
    save_file({"counts": tally}, recipe.ARGMAX_COUNTS, metadata={"chunks": "0,1"})
    counts, chunks = recipe.campaign_counts(tmp_path, 1)
    assert chunks == [0, 1] and torch.equal(counts, c0 + c1)


def test_prepare_init_moves_the_stable_head_onto_the_counted_vocabulary(
    tmp_path, campaign, monkeypatch
):
    target = make_target("llama")
    save_target_dir(target.model, tmp_path / "target")
    monkeypatch.setattr(recipe, "TARGET", str(tmp_path / "target"))
    monkeypatch.setattr(recipe, "DRAFT_VOCAB", 64)
    head = random_head(target, "eagle3", seed=4, draft_vocab=64)
    save_head(head, campaign / "stable")
    c0, c1 = _chunk_data(target, tmp_path, 0, 1), _chunk_data(target, tmp_path, 1, 2)
    out = recipe.prepare_init(tmp_path, 1)
    d2t, t2d = draft_vocab_from_counts(c0 + c1, 64)
    parts = TargetParts(target.embed_tokens, target.lm_head)
    moved = load_head(out, parts, dtype=torch.float32)
    assert torch.equal(moved.d2t, d2t) and torch.equal(moved.t2d, t2d)
    assert torch.equal(moved.fc.weight, head.fc.weight)
    assert torch.equal(load_file(out / "argmax-counts.safetensors")["counts"], c0 + c1)
    done = json.loads((out / "stage.json").read_text())
    assert done["chunks"] == [0, 1] and done["new_tokens"] == int((t2d & ~head.t2d).sum())


def test_pools_leave_out_v1_training_and_split_by_chat(tmp_path, monkeypatch):
    """The pools hold first turns only, the two sides never share a source chat, and no
    conversation of v1's selection (the first V1_SELECTION of the unsplit shuffle)."""
    from helpers import word_conversations, write_jsonl

    from eagle.ge_data import sharegpt

    records = word_conversations(40, seed=3)
    for i, record in enumerate(records):
        record["id"] = f"chat{i}_0"
    write_jsonl(tmp_path / "src.jsonl", records)
    monkeypatch.setattr(sharegpt, "bundled_sharegpt_path", lambda: tmp_path / "src.jsonl")
    monkeypatch.setattr(campaign_pools, "V1_SELECTION", 10)
    train, val = campaign_pools.write_pools(tmp_path / "w")
    read = [[json.loads(x) for x in p.read_text().splitlines()] for p in (train, val)]
    ids = [{r["id"] for r in rows} for rows in read]
    v1, _ = sharegpt.load_sharegpt(tmp_path / "src.jsonl", limit=10, seed=0, openings_only=True)
    assert not ids[0] & ids[1] and not (ids[0] | ids[1]) & {c.id for c in v1}
    assert len(ids[0] | ids[1]) == 30
    assert all(sharegpt.split_of(i) == "val" for i in ids[1])
    assert all(len(r["conversations"]) == 2 for rows in read for r in rows)
    # v1's own selection, in its order, is the pool that follows the training pool
    v1_pool = [json.loads(x) for x in (tmp_path / "w" / "pool-v1.jsonl").read_text().splitlines()]
    assert [r["id"] for r in v1_pool] == [c.id for c in v1]
    assert all(len(r["conversations"]) == 2 for r in v1_pool)


def test_chunks_past_the_training_pool_take_v1s_prompts(tmp_path, campaign, capsys):
    _commit_val_answers_and_stable_head(campaign)
    first_v1 = campaign_pools.POOLS[0][1]
    _, _, data, _, _ = _commands(tmp_path, capsys, "--chunk", str(first_v1 + 1))
    assert f"--data {tmp_path}/pool-v1.jsonl" in data
    assert (
        f"--offset {campaign_pools.CHUNK_CONVERSATIONS} " in data
        and f"data-c{first_v1 + 1}" in data
    )
    last_v1 = first_v1 + campaign_pools.POOLS[1][1] - 1
    assert campaign_pools.chunk_slice(last_v1) == ("pool-v1.jsonl", (last_v1 - first_v1) * 1000)
    assert "--max-turns 1 " in data and "--answer-last-turn" not in data
    last = sum(c for _, c in campaign_pools.POOLS) + len(campaign_pools.REPLAY_ONLY) - 1
    assert campaign_pools.chunk_slice(last)[0] == campaign_pools.POOLS[-1][0]
    with pytest.raises(SystemExit):
        _commands(tmp_path, capsys, "--chunk", str(last + 1))
    assert "past the training pools" in capsys.readouterr().err


def test_follow_up_chunks_answer_the_second_question(tmp_path, campaign, capsys):
    _commit_val_answers_and_stable_head(campaign)
    first = campaign_pools.POOLS[0][1] + campaign_pools.POOLS[1][1]
    assert campaign_pools.chunk_slice(first) == (campaign_pools.TURN2_POOL, 0)
    # the replay chunk after the first follow-up chunk takes no slice: the next one does
    assert first + 1 in campaign_pools.REPLAY_ONLY
    assert campaign_pools.chunk_slice(first + 2) == (campaign_pools.TURN2_POOL, 1000)
    lines = _commands(tmp_path, capsys, "--chunk", str(first + 2))
    data, stable = lines[-3], lines[-2]
    assert f"--data {tmp_path}/{campaign_pools.TURN2_POOL} --offset 1000 " in data
    assert "--max-turns 2 --answer-last-turn" in data
    assert f"--max-len {recipe.MAX_LEN_BY_TURN[2]} " in data
    # its new follow-ups are mixed with the first turns of the chunks it replays
    replayed = campaign_pools.REPLAYS.get(first + 2, ())
    assert len(lines) == 5 + len(replayed)
    folders = " ".join(f"{tmp_path}/data-c{k}" for k in (*replayed, first + 2))
    assert f"--tmpdir {folders} --cpdir" in stable


def test_a_replay_chunk_captures_the_committed_answers_of_its_chunks_and_trains_on_all(
    tmp_path, campaign, capsys
):
    _commit_val_answers_and_stable_head(campaign)
    replay = min(campaign_pools.REPLAY_ONLY)
    sources = campaign_pools.REPLAYS[replay]
    lines = _commands(tmp_path, capsys, "--chunk", str(replay))
    data, (stable, anneal) = lines[2:-2], lines[-2:]
    assert len(data) == len(sources)
    for k, command in zip(sources, data, strict=True):
        pool, offset = campaign_pools.chunk_slice(k)
        assert f"--data {tmp_path}/{pool} --offset {offset} " in command
        assert f"--outdir {tmp_path}/data-c{k} " in command
        assert f"--regen-output {tmp_path}/answers-c{k}.jsonl" in command
    folders = " ".join(f"{tmp_path}/data-c{k}" for k in sources)
    assert f"--tmpdir {folders} --cpdir {tmp_path}/stable-c{replay} " in stable
    assert f"--tmpdir {folders} --cpdir {tmp_path}/anneal-c{replay} " in anneal
    with pytest.raises(SystemExit):
        recipe.main(["--workdir", str(tmp_path), "--chunk", str(replay), "--save-answers"])
    assert "answers nothing" in capsys.readouterr().err


def test_a_replay_chunk_counts_the_tally_alone(tmp_path, campaign):
    target = make_target("llama")
    c0 = _chunk_data(target, tmp_path, 0, 1)
    replay = min(campaign_pools.REPLAY_ONLY)
    campaign.mkdir()
    save_file({"counts": c0}, recipe.ARGMAX_COUNTS, metadata={"chunks": "0"})
    counts, chunks = recipe.campaign_counts(tmp_path, replay)
    assert chunks == [0] and torch.equal(counts, c0)


def _turns(*texts):
    """ShareGPT messages, human and gpt in turn."""
    roles = ("human", "gpt")
    return [{"from": roles[i % 2], "value": t} for i, t in enumerate(texts)]


def test_the_follow_up_pool_opens_with_the_committed_answers(tmp_path, campaign, monkeypatch):
    """Each follow-up conversation: the first question, the target's committed answer to it,
    the source's second question; conversations with one question, and second questions that
    are benchmark prompts, are left out; the committed files' order is kept."""
    from helpers import write_jsonl

    from eagle.benchmarks import load_questions
    from eagle.ge_data import sharegpt

    benchmark = load_questions("mt_bench")[0].turns[0]
    source = [
        {"id": "a", "conversations": _turns("qa1", "sa1", "qa2", "sa2", "qa3", "sa3")},
        {"id": "b", "conversations": _turns("qb1", "sb1")},  # one question
        {"id": "c", "conversations": _turns("qc1", "sc1", benchmark, "sc2")},
        {"id": "d", "conversations": _turns("qd1", "sd1", "qd2", "sd2")},
    ]
    write_jsonl(tmp_path / "src.jsonl", source)
    monkeypatch.setattr(sharegpt, "bundled_sharegpt_path", lambda: tmp_path / "src.jsonl")
    turn2 = campaign_pools.TURN2_POOL
    monkeypatch.setitem(campaign_pools.FOLLOW_UPS, turn2, (2, (2, 3)))
    campaign.mkdir()
    with pytest.raises(SystemExit, match=r"answers-c2\.jsonl"):
        campaign_pools.write_follow_up_pool(tmp_path / "w", campaign, turn2)
    write_jsonl(campaign / "answers-c2.jsonl", [
        {"id": "d", "conversations": _turns("qd1", "target's d")},
        {"id": "b", "conversations": _turns("qb1", "target's b")},
    ])  # fmt: skip
    write_jsonl(campaign / "answers-c3.jsonl", [
        {"id": "c", "conversations": _turns("qc1", "target's c")},
        {"id": "a", "conversations": _turns("qa1", "target's a")},
    ])  # fmt: skip
    (tmp_path / "w").mkdir()
    pool = campaign_pools.write_follow_up_pool(tmp_path / "w", campaign, turn2)
    records = [json.loads(line) for line in pool.read_text().splitlines()]
    assert [r["id"] for r in records] == ["d", "a"]
    assert records[1]["conversations"] == _turns("qa1", "target's a", "qa2", "sa2")


def test_the_third_question_pool_opens_with_the_committed_follow_ups(
    tmp_path, campaign, monkeypatch
):
    """A third-question conversation: the committed follow-up (two questions, the target's two
    answers) and the source's third question; sources without one, and committed files that do
    not hold two answered questions, are left out."""
    from helpers import write_jsonl

    from eagle.ge_data import sharegpt

    source = [
        {"id": "a", "conversations": _turns("qa1", "sa1", "qa2", "sa2", "qa3", "sa3", "qa4", "x")},
        {"id": "b", "conversations": _turns("qb1", "sb1", "qb2", "sb2")},  # two questions
        {"id": "c", "conversations": _turns("qc1", "sc1", "qc2", "sc2", "qc3", "sc3")},
    ]
    write_jsonl(tmp_path / "src.jsonl", source)
    monkeypatch.setattr(sharegpt, "bundled_sharegpt_path", lambda: tmp_path / "src.jsonl")
    turn3 = campaign_pools.TURN3_POOL
    monkeypatch.setitem(campaign_pools.FOLLOW_UPS, turn3, (3, (9,)))
    campaign.mkdir()
    write_jsonl(campaign / "answers-c9.jsonl", [
        {"id": "b", "conversations": _turns("qb1", "t b1", "qb2", "t b2")},
        {"id": "c", "conversations": _turns("qc1", "t c1")},  # not a follow-up
        {"id": "a", "conversations": _turns("qa1", "t a1", "qa2", "t a2")},
    ])  # fmt: skip
    (tmp_path / "w").mkdir()
    pool = campaign_pools.write_follow_up_pool(tmp_path / "w", campaign, turn3)
    records = [json.loads(line) for line in pool.read_text().splitlines()]
    assert [r["conversations"] for r in records] == [
        _turns("qa1", "t a1", "qa2", "t a2", "qa3", "sa3")
    ]
    with pytest.raises(ValueError, match="pool must be one of"):
        campaign_pools.write_follow_up_pool(tmp_path / "w", campaign, "pool-train.jsonl")


def test_third_question_chunks_answer_the_third_question(tmp_path, campaign, capsys):
    _commit_val_answers_and_stable_head(campaign)
    before = sum(c for name, c in campaign_pools.POOLS if name != campaign_pools.TURN3_POOL)
    first = before + len(campaign_pools.REPLAY_ONLY)
    assert campaign_pools.chunk_slice(first) == (campaign_pools.TURN3_POOL, 0)
    data = _commands(tmp_path, capsys, "--chunk", str(first))[-3]
    assert f"--data {tmp_path}/{campaign_pools.TURN3_POOL} --offset 0 " in data
    assert "--max-turns 3 --answer-last-turn" in data
    assert f"--max-len {recipe.MAX_LEN_BY_TURN[3]} " in data


def test_pools_of_another_size_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(campaign_pools, "CHUNK_CONVERSATIONS", 2)
    monkeypatch.setattr(campaign_pools, "POOLS", (("a.jsonl", 2), ("b.jsonl", 1)))
    (tmp_path / "a.jsonl").write_text("x\n" * 3)  # 2 chunks of 2: as counted on
    (tmp_path / "b.jsonl").write_text("x\n" * 2)
    campaign_pools.check_pools(tmp_path)
    (tmp_path / "a.jsonl").write_text("x\n" * 5)  # 3 chunks: every later slice would move
    with pytest.raises(SystemExit, match="counts on 2"):
        campaign_pools.check_pools(tmp_path)


def test_a_later_chunk_needs_the_stable_head(tmp_path, campaign):
    with pytest.raises(SystemExit):
        recipe.main(["--workdir", str(tmp_path), "--chunk", "1", "--print-commands"])


def test_next_chunk_follows_the_curve(campaign):
    assert recipe.next_chunk(campaign / "curve.jsonl") == 0
    campaign.mkdir()
    lines = [json.dumps({"chunk": c}) for c in (0, 1, 2)]
    (campaign / "curve.jsonl").write_text("\n".join(lines) + "\n")
    assert recipe.next_chunk(campaign / "curve.jsonl") == 3


def test_a_finished_stage_is_recognised_only_with_its_own_arguments(tmp_path):
    assert not recipe.stage_done(tmp_path, ["--a", "1"])
    recipe.mark_done(tmp_path, ["--a", "1"], 12.0)
    assert recipe.stage_done(tmp_path, ["--a", "1"])
    assert not recipe.stage_done(tmp_path, ["--a", "2"])


@pytest.mark.parametrize("flags", [["--chunk", "-1"], ["--epochs", "0"], ["--threads", "0"]])
def test_bad_flags_are_refused(tmp_path, campaign, flags, capsys):
    with pytest.raises(SystemExit):
        recipe.main(["--workdir", str(tmp_path), "--print-commands", *flags])
    assert flags[0] in capsys.readouterr().err


def test_answers_are_saved_to_the_campaign_and_restored_on_a_new_machine(
    tmp_path, campaign, capsys
):
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    (old / "pool-train.jsonl").write_text("")  # the pools exist: nothing to build
    (old / "pool-val.jsonl").write_text("")
    (old / "pool-v1.jsonl").write_text("")
    answers = ['{"id": "a"}\n', '{"id": "b"}\n', '{"id": "c", "conv']  # the last still written
    (old / "answers-c0.jsonl").write_text("".join(answers))
    assert recipe.main(["--workdir", str(old), "--chunk", "0", "--save-answers"]) is None
    saved = campaign / "answers-c0.jsonl"
    assert saved.read_text() == "".join(answers[:2])  # complete lines only
    assert (
        recipe.restore_answers(new, 0)
        and (new / "answers-c0.jsonl").read_text() == saved.read_text()
    )
    assert not recipe.restore_answers(new, 0)  # as many already: kept
    assert not recipe.restore_answers(new, 1)  # nothing saved for chunk 1
    with pytest.raises(SystemExit, match="no answers yet"):
        recipe.save_answers(new, 3)


def test_validation_figures_are_reused_only_for_the_same_head_and_settings(
    tmp_path, campaign, monkeypatch
):
    """The shipped head is scored once: a later chunk takes its figures from the curve when its
    weights, the validation answers and the dtype are unchanged, and scores it again when any
    of them changed."""
    from eagle.train import validate

    calls = []

    def fake_validate(head, *args, **kwargs):
        calls.append((head, kwargs["dtype"]))
        return {"head": str(head), "end_to_end": {"tau": 1.5 + len(calls)}}

    monkeypatch.setattr(validate, "validate_head", fake_validate)
    campaign.mkdir()
    recipe.VAL_ANSWERS.write_text('{"id": "v0"}\n')
    head = tmp_path / "head"
    head.mkdir()
    (head / "config.json").write_text("{}")
    (head / "model.safetensors").write_bytes(b"weights-1")

    first = recipe.validation_of(head, tmp_path, "float32", [])
    assert (
        len(calls) == 1 and first["end_to_end"]["tau"] == 2.5 and "cached_from_chunk" not in first
    )
    curve = [{"chunk": 4, "annealed": {"key": "other"}, "shipped": first}]
    again = recipe.validation_of(head, tmp_path, "float32", curve)
    assert (
        len(calls) == 1
        and again["cached_from_chunk"] == 4
        and again["end_to_end"] == first["end_to_end"]
    )

    assert recipe.validation_of(head, tmp_path, "bfloat16", curve)["end_to_end"]["tau"] == 3.5
    (head / "model.safetensors").write_bytes(b"weights-2")
    assert recipe.validation_of(head, tmp_path, "float32", curve)["end_to_end"]["tau"] == 4.5
    (head / "model.safetensors").write_bytes(b"weights-1")
    recipe.VAL_ANSWERS.write_text('{"id": "v1"}\n')
    assert recipe.validation_of(head, tmp_path, "float32", curve)["end_to_end"]["tau"] == 5.5
    assert len(calls) == 4


def test_ship_rule_needs_a_higher_top1_at_every_step():
    assert recipe.beats([0.48, 0.44, 0.40], [0.46, 0.41, 0.38])
    assert not recipe.beats([0.48, 0.40, 0.40], [0.46, 0.41, 0.38])  # one step behind
    assert not recipe.beats([0.46, 0.41, 0.38], [0.46, 0.41, 0.38])  # a tie is no gain
    assert not recipe.beats([0.48, 0.44], [0.46, 0.41, 0.38])  # scored on other steps


def test_curve_table_says_the_dtype_each_chunk_was_scored_in():
    from eagle.train.curve import table

    def record(chunk, dtype, tau):
        scored = {"teacher_forced": {"top1": [0.5, 0.4, 0.3]}, "end_to_end": {"tau": tau}}
        return {"chunk": chunk, "stable_epochs": [], "tokens_seen_before": 10 * chunk,
                "train_tokens": 10, "annealed": scored, "shipped": scored, "dtype": dtype}  # fmt: skip

    rows = table([record(0, "float32", 1.9), record(1, "bfloat16", 1.95)]).splitlines()
    assert rows[2].endswith("| 1.90 | float32 |") and rows[3].endswith("| 1.95 | bfloat16 |")
    assert rows[-1].startswith("| - | shipped before |") and rows[-1].endswith("| bfloat16 |")
