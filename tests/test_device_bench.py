"""The device benchmark runs end to end at tiny shapes on the CPU, so it never rots."""

from __future__ import annotations

import json

import torch

from eagle.evaluation import device_bench


def test_tiny_run_prints_the_table_and_writes_every_figure(tmp_path, capsys, one_thread):
    path = tmp_path / "bench.json"
    device_bench.main(["--tiny", "--json", str(path)])
    printed = capsys.readouterr().out
    result = json.loads(path.read_text())
    figures = result["targets"]["tiny-llama"]
    for key in ("plain_step_ms", "hf_generate_step_ms", "draft_tree_ms", "draft_level_ms",
                "iteration_draft_ms", "iteration_verify_ms", "iteration_other_ms"):  # fmt: skip
        assert figures[key] > 0, key
    assert sorted(int(n) for n in figures["verify_ratio"]) == list(device_bench.VERIFY_SIZES)
    assert figures["verify_ratio"]["1"] == 1.0
    assert 1 <= figures["host_syncs_per_step"] <= 3  # as tests/test_host_syncs.py asserts
    mt_bench = figures["implied"]["MT-bench"]
    assert mt_bench["tau"] == 6.13 and mt_bench["paper_speedup"] == 4.40
    assert "| verify r(128) = t(N)/t(1) |" in printed
    assert "implied at MT-bench tau 6.13 (paper 4.40x)" in printed


def test_the_sync_counter_sees_scalar_reads_masks_and_tolist():
    counter = device_bench.HostSyncCounter()
    x = torch.arange(6)
    with device_bench.reading_tolist(counter):
        x[x > 2]
        int(x[0])
        x.tolist()
        x.repeat_interleave(x)
        torch.topk(x, 2)  # no sync
    assert counter.total == 4, dict(counter.counts)
    assert torch.Tensor.tolist is not None and x.tolist() == list(range(6))  # restored
