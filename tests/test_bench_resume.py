"""The peer benchmark's resume check: reports are reused only when settings and platform match."""

import json

import pytest
from conftest import import_bench


@pytest.fixture(scope="module")
def bench():
    return import_bench("peers_common")


CONTEXT = {"model": "whisper-tiny.en", "bits": 4, "method": "fade-gptq", "repeat": 1, "utterances": 128,
           "threads": 2, "peer_grid": "recipe", "platform": "amd-epyc-avx2-2t"}


def test_written_report_is_reused_with_the_same_settings(bench, tmp_path):
    path = tmp_path / "r.json"
    bench.write_report(path, {"wall_s": 12.5, "context": CONTEXT})
    assert bench.reusable_report(path, dict(CONTEXT), resume=True)["wall_s"] == 12.5
    assert not path.with_name("r.json.tmp").exists()


@pytest.mark.parametrize("change", [{"platform": "intel-xeon-avx512-2t"}, {"utterances": 64}, {"threads": 1},
                                    {"bits": 3}, {"peer_grid": "matched"}])
def test_report_of_other_settings_or_machine_is_not_reused(bench, tmp_path, change):
    path = tmp_path / "r.json"
    bench.write_report(path, {"wall_s": 12.5, "context": CONTEXT})
    assert bench.reusable_report(path, {**CONTEXT, **change}, resume=True) is None


def test_nothing_is_reused_without_resume_or_from_a_torn_file(bench, tmp_path):
    path = tmp_path / "r.json"
    bench.write_report(path, {"wall_s": 12.5, "context": CONTEXT})
    assert bench.reusable_report(path, CONTEXT, resume=False) is None
    path.write_text(json.dumps({"wall_s": 12.5, "context": CONTEXT})[:20])  # cut short mid-write
    assert bench.reusable_report(path, CONTEXT, resume=True) is None
    assert bench.reusable_report(tmp_path / "missing.json", CONTEXT, resume=True) is None


def test_scaling_reuses_finished_points_and_redoes_the_rest(tmp_path, monkeypatch):
    """scaling.py --resume: a point finished on this platform is read back; one from another machine,
    or missing, runs (here: a stand-in worker that records what it was asked for)."""
    scaling = import_bench("scaling")
    from fade.process import platform_tag

    platform = platform_tag()
    work = tmp_path / "work"
    work.mkdir()

    def point(n, rss, where=platform):
        return {"method": "gptq+qep", "model": "whisper-tiny.en", "utterances": n, "wall_s": n / 2, "cpu_s": n,
                "peak_rss_mib": rss, "context": {"model": "whisper-tiny.en", "method": "gptq+qep", "utterances": n,
                                                 "platform": where}}

    scaling.write_report(work / "whisper-tiny.en-gptq+qep-n16.json", point(16, 1000.0))
    scaling.write_report(work / "whisper-tiny.en-gptq+qep-n32.json", point(32, 1100.0, where="another-machine"))
    ran = []

    class Done:
        def __init__(self, n):
            self.stdout = "log line\n" + json.dumps({k: v for k, v in point(n, 1000.0 + 6.25 * (n - 16)).items() if k != "context"})

    def fake_run(cmd, **kwargs):
        n = int(cmd[cmd.index("--n") + 1])
        ran.append(n)
        return Done(n)

    monkeypatch.setattr(scaling.subprocess, "run", fake_run)
    out = tmp_path / "scaling.json"
    monkeypatch.setattr("sys.argv", ["scaling.py", "--models", "whisper-tiny.en", "--n", "16", "32", "64", "--resume",
                                     "--work-dir", str(work), "--out", str(out)])
    scaling.main()
    assert ran == [32, 64]  # 16 reused; 32 was made elsewhere
    result = json.loads(out.read_text())
    assert [p["utterances"] for p in result["points"]] == [16, 32, 64]
    assert result["fits"][0]["mib_per_utterance"] == pytest.approx(6.25)  # 1000, 1100, 1300 MiB at 16, 32, 64
    assert json.loads((work / "whisper-tiny.en-gptq+qep-n32.json").read_text())["context"]["platform"] == platform
