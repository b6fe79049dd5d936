"""The benchmark's record of finished runs (resume after an interruption)."""

from centrobind.bench import cache as cache_mod
from centrobind.bench.cache import RunCache


def test_record_round_trips_and_survives_a_torn_line(tmp_path):
    path = tmp_path / "runs.jsonl"
    c = RunCache(path)
    c.put(("a", 1), {"R@1": 1.5, "n": 3})
    c.put(("b", 2), {"R@1": float("nan")})
    with path.open("a") as f:
        f.write('{"key": "abc", "resu')  # a crash mid-write
    again = RunCache(path)
    assert len(again) == 2
    assert again.get(("a", 1)) == {"R@1": 1.5, "n": 3}
    assert again.get(("a", 2)) is None
    again.put(("c", 3), {"x": 1})  # appending after a torn line still gives readable lines
    assert RunCache(path).get(("c", 3)) == {"x": 1}
    assert len(RunCache(path)) == 3


def test_a_code_change_invalidates_every_run(tmp_path, monkeypatch):
    path = tmp_path / "runs.jsonl"
    RunCache(path).put(("job",), {"R@1": 2.0})
    assert RunCache(path).get(("job",)) == {"R@1": 2.0}
    monkeypatch.setattr(cache_mod, "code_digest", lambda: "another version of the code")
    assert RunCache(path).get(("job",)) is None


def test_digest_covers_the_objectives_not_the_report():
    import centrobind.bench.cache as m

    m.code_digest.cache_clear()
    d = m.code_digest()
    assert len(d) == 64 and d == m.code_digest()
    assert "objectives" not in m._PRESENTATION and "report.py" not in m._COMPUTE
    assert {"jobs.py", "methods.py"} <= m._COMPUTE
