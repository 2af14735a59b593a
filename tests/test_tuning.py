"""The tuning table (vizjax.engine.tuning): the search with fake timings, the file keyed by CPU
and jax, damaged files, the precedence of flags over the table over the rules, when it measures,
and one real run that measures on the tiny network.

The rest of the suite runs with ``VIZJAX_TUNING=0`` (tests/conftest.py): it never reads the
user's table or measures; these tests pass the mode explicitly."""

import json

import pytest
import tiny_network

from vizjax.cli import main
from vizjax.engine import tuning
from vizjax.engine.execution import Execution
from vizjax.engine.recipe import preset
from vizjax.engine.tuning import Choice, Machine, Table
from vizjax.errors import VizjaxError
from vizjax.models import vgg

HERE = Machine("Test CPU 9000", frozenset({"avx2", "fma"}), "0.1", "0.1")
AMX = Machine("Test CPU 9000 AMX", frozenset({"avx2", "amx_bf16", "amx_tile"}), "0.1", "0.1")
TINY = vgg.network(tiny_network.WIDTHS)


@pytest.fixture(autouse=True)
def _no_onednn(monkeypatch):
    """The same candidates whether or not this machine can run oneDNN's convolutions (the tests
    that need them say so)."""
    monkeypatch.setattr(tuning.onednn, "unavailable", lambda: "not in these tests")


def fake(ms: dict[str, float]):
    """A ``measure`` reading a fake timing table (ms per filter-step by candidate label) that
    records what it was asked."""
    asked = []

    def measure(c: Choice) -> float:
        asked.append(c.label)
        return ms[c.label] / 1e3

    measure.asked = asked  # type: ignore[attr-defined]
    return measure


def never(c: Choice) -> float:
    raise AssertionError(f"measured {c.label}")


def test_search_finds_the_fastest_in_stages_and_compiles_few_candidates():
    ms = {
        "winograd/8/float32": 10.0,
        "xla/8/float32": 8.0,
        "xla/4/float32": 6.0,
        "xla/16/float32": 7.0,
        "winograd/4/float32": 1.0,  # never tried: the chunks are tried with the winning conv
    }
    m = fake(ms)
    rule = Choice("winograd", 8, "float32")
    best, timings = tuning.search(
        rule, m, convs=["winograd", "xla"], per_devices=[4, 16], bfloat16=False
    )
    assert best == Choice("xla", 4, "float32")
    assert m.asked == ["winograd/8/float32", "xla/8/float32", "xla/4/float32", "xla/16/float32"]
    assert timings == {k: ms[k] for k in m.asked}
    # A candidate less than MARGIN faster leaves the rule alone (timing noise is not a win).
    close = fake({"winograd/1/float32": 10.0, "xla/1/float32": 9.8, "winograd/2/float32": 9.7})
    best, _ = tuning.search(
        Choice("winograd", 1, "float32"),
        close,
        convs=["winograd", "xla"],
        per_devices=[2],
        bfloat16=False,
    )
    assert best == Choice("winograd", 1, "float32")
    # bfloat16 is a last stage, at the winner.
    m = fake({"winograd/1/float32": 10.0, "winograd/1/bfloat16": 5.0})
    best, _ = tuning.search(
        Choice("winograd", 1, "float32"), m, convs=["winograd"], per_devices=[], bfloat16=True
    )
    assert best == Choice("winograd", 1, "bfloat16")


def test_cpuinfo_key_and_neighbours():
    name, flags = tuning.parse_cpuinfo(
        "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 amx_bf16\n\n"
        "processor\t: 1\nmodel name\t: AMD EPYC\nflags\t\t: fpu\n"
    )
    assert name == "AMD EPYC" and flags == {"fpu", "avx2", "amx_bf16"}
    assert HERE.key.endswith("-jax0.1-jaxlib0.1") and len(HERE.key.split("-")[0]) == 16
    assert Machine(HERE.cpu, HERE.flags | {"avx512f"}, "0.1", "0.1").key != HERE.key
    assert not HERE.bfloat16_unit and AMX.bfloat16_unit
    assert tuning.neighbours(1, 100) == [2] and tuning.neighbours(8, 100) == [4, 16]
    assert tuning.neighbours(8, 2) == [4]  # no bigger chunk than the filters per device run
    lucent = preset("lucent").replace(size=(64, 64))
    key = tuning.entry_key(TINY, "block2_conv1", (64, 64), lucent, 1)
    assert key.startswith("vgg16:8.8.16.16.16/block2_conv1/64x64/lucent-") and key.endswith("/1dev")
    # Steps and seed do not change a recipe's kind; its transforms do.
    assert (
        tuning.entry_key(TINY, "block2_conv1", (64, 64), lucent.replace(steps=7, seed=3), 1) == key
    )
    assert tuning.entry_key(TINY, "block2_conv1", (64, 64), preset("classic"), 1) != key


def test_the_table_is_written_reread_and_keyed_by_cpu_and_jax(tmp_path):
    path = tmp_path / "tuning.json"
    table = Table.load(path, HERE)
    assert table.get("k") is None and not path.exists()
    table.record("k", Choice("xla", 2, "float32"), {"xla/2/float32": 3.0})
    again = Table.load(path, HERE)
    assert again.get("k") == Choice("xla", 2, "float32")
    assert again.entries()["k"]["ms_per_filter_step"] == {"xla/2/float32": 3.0}
    # Another CPU, or the same CPU with another jax: not used; both kept in the file.
    other_cpu = Machine("Other CPU", HERE.flags, HERE.jax, HERE.jaxlib)
    other_jax = Machine(HERE.cpu, HERE.flags, "0.2", HERE.jaxlib)
    assert Table.load(path, other_cpu).get("k") is None
    assert Table.load(path, other_jax).get("k") is None
    Table.load(path, other_jax).record("k", Choice("winograd", 1, "float32"), {})
    assert Table.load(path, HERE).get("k") == Choice("xla", 2, "float32")
    assert Table.load(path, other_jax).get("k") == Choice("winograd", 1, "float32")
    assert len(json.loads(path.read_text())["machines"]) == 2


@pytest.mark.parametrize(
    "content, says",
    [
        ("{not json", "cannot be read"),
        ('{"format": "vizjax-tuning", "version": 99, "machines": {}}', "format version 99"),
        ("[1, 2]", "not a vizjax tuning table"),
    ],
)
def test_a_damaged_table_is_ignored_with_one_line_and_rewritten(tmp_path, content, says):
    path = tmp_path / "tuning.json"
    path.write_text(content)
    lines = []
    table = Table.load(path, HERE, warn=lines.append)
    assert len(lines) == 1 and lines[0].startswith("vizjax: ") and says in lines[0]
    assert table.entries() == {}
    execution, d = _decide(
        table,
        fake({"winograd/8/float32": 5.0, "xla/8/float32": 6.0, "winograd/4/float32": 7.0}),
        tune="now",
    )
    assert d.source["conv"] == "measured"
    assert Table.load(path, HERE, warn=lines.append).get(d.key) == d.choice
    assert len(lines) == 1  # rewritten whole: read again without a word


DEFAULT = Execution()


def test_a_table_that_cannot_be_written_costs_one_line_not_the_run(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    table = Table.load(tmp_path / "file" / "tuning.json", HERE)
    m = fake({"winograd/8/float32": 5.0, "xla/8/float32": 2.0, "xla/4/float32": 7.0})
    ex, d = _decide(table, m, tune="now")
    assert ex.conv == "xla" and d.source["conv"] == "measured"
    read, note, write = capsys.readouterr().err.splitlines()  # its folder is a file
    assert "cannot be read" in read and note.startswith("vizjax: tuning block2_conv1 for this CPU")
    assert write.startswith("vizjax: cannot write the tuning table ")


def _decide(table, measure, *, tune="auto", execution=DEFAULT, filters=8, **kw):
    recipe = preset("classic").replace(size=(32, 32), steps=8)
    return tuning.decide(
        "block2_conv1",
        filters,
        recipe,
        TINY,
        execution,
        tune=tune,
        table=table,
        measure=measure,
        **kw,
    )


def test_precedence_flags_then_table_then_rule(tmp_path):
    table = Table.load(tmp_path / "t.json", AMX)
    recipe = preset("classic").replace(size=(32, 32), steps=8)
    key = tuning.entry_key(TINY, "block2_conv1", (32, 32), recipe, 1)
    table = table.record(key, Choice("xla", 4, "bfloat16"), {})
    # The table wins over the rule (the dtype only where the run leaves it free).
    ex, d = _decide(table, never)
    assert (ex.conv, ex.per_device, ex.dtype) == ("xla", 4, "float32")
    assert d.source == {"conv": "table", "per_device": "table", "dtype": "flag"}
    ex, d = _decide(table, never, dtype_free=True)
    assert ex.dtype == "bfloat16" and d.source["dtype"] == "table"
    # Explicit settings win over the table.
    ex, d = _decide(table, never, execution=Execution(conv="winograd", batch=2))
    assert (ex.conv, ex.batch, ex.per_device) == ("winograd", 2, 0)
    assert d.choice == Choice("winograd", 2, "float32")
    assert d.source == {"conv": "flag", "per_device": "flag", "dtype": "flag"}
    assert tuning.origin(d.to_json()) == "flag:winograd"
    ex, d = _decide(table, never, execution=Execution(conv="winograd"))
    assert tuning.origin(d.to_json()) == "flag/table:winograd" and ex.per_device == 4
    # No entry, a small run: the rule, and the execution left as it was.
    ex, d = _decide(Table.load(tmp_path / "empty.json", AMX), never)
    assert ex == Execution() and d.choice == Choice("winograd", 8, "float32")
    assert set(d.source.values()) == {"rule", "flag"}
    # Not on a CPU: the table is not consulted.
    ex, d = _decide(table, never, platform="gpu")
    assert ex == Execution() and d.source["conv"] == "rule"


def test_off_and_the_environment(tmp_path, monkeypatch):
    table = Table.load(tmp_path / "t.json", HERE)
    ex, d = _decide(table, never, tune="off")
    assert ex == Execution() and d.source["conv"] == "rule"
    ex, d = _decide(None, never, tune="now")  # no table (what tune off passes): no measuring
    assert ex == Execution()
    monkeypatch.setenv("VIZJAX_TUNING", "0")
    assert tuning.mode() == "off" and tuning.mode("now") == "now"  # the flag wins
    monkeypatch.setenv("VIZJAX_TUNING", "now")
    assert tuning.mode() == "now"
    monkeypatch.delenv("VIZJAX_TUNING")
    assert tuning.mode() == "auto"
    monkeypatch.setenv("VIZJAX_TUNING", "sometimes")
    with pytest.raises(VizjaxError, match="VIZJAX_TUNING must be auto, now or off"):
        tuning.mode()


def test_auto_measures_only_where_the_run_pays_for_it(tmp_path):
    table = Table.load(tmp_path / "t.json", HERE)
    # The tests' runs (a tiny network, a few filters at 32 px) never pay for it.
    recipe = preset("classic").replace(size=(32, 32), steps=8)
    assert not tuning.pays_off("block2_conv1", 8, recipe, TINY, compiles=3)
    ex, d = _decide(table, never, tune="auto")
    assert d.source["conv"] == "rule" and not table.path.exists()
    # A whole layer of VGG16 at 224 px with the default recipe (hours of computing) does.
    lucent = preset("lucent").replace(size=(224, 224))
    assert tuning.pays_off("block5_conv1", 512, lucent, vgg.NETWORK, compiles=3)
    assert not tuning.pays_off("block5_conv1", 4, lucent, vgg.NETWORK, compiles=3)
    m = fake({"winograd/1/float32": 5.0, "xla/1/float32": 4.0, "xla/2/float32": 4.5})
    ex, d = tuning.decide(
        "block5_conv1", 512, lucent, vgg.NETWORK, Execution(), tune="auto", table=table, measure=m
    )
    assert d.source["conv"] == "measured" and (ex.conv, ex.per_device) == ("xla", 1)
    assert m.asked == ["winograd/1/float32", "xla/1/float32", "xla/2/float32"]
    # Then the table: nothing measured again.
    ex2, d2 = tuning.decide(
        "block5_conv1",
        512,
        lucent,
        vgg.NETWORK,
        Execution(),
        tune="auto",
        table=Table.load(table.path, HERE),
        measure=never,
    )
    assert ex2 == ex and d2.source["conv"] == "table"
    # A job that may not measure (several processes) reads the table only.
    _, d3 = _decide(table, never, tune="now", may_measure=False)
    assert d3.source["conv"] == "rule"


def test_bfloat16_is_a_candidate_only_on_a_cpu_with_amx(tmp_path):
    ms = {
        "winograd/8/float32": 5.0,
        "xla/8/float32": 6.0,
        "winograd/4/float32": 7.0,
        "winograd/8/bfloat16": 2.0,
    }
    m = fake(ms)
    _, d = _decide(Table.load(tmp_path / "a.json", HERE), m, tune="now", dtype_free=True)
    assert "winograd/8/bfloat16" not in m.asked and d.choice.dtype == "float32"
    m = fake(ms)
    ex, d = _decide(Table.load(tmp_path / "b.json", AMX), m, tune="now", dtype_free=True)
    assert m.asked[-1] == "winograd/8/bfloat16" and ex.dtype == "bfloat16"
    assert d.with_dtype("float32").source["dtype"] == "rule"  # the run's one dtype overrules


def test_onednn_is_a_candidate_where_it_runs_and_bfloat16_tries_it_on_amx(tmp_path, monkeypatch):
    monkeypatch.setattr(tuning.onednn, "unavailable", lambda: None)
    assert tuning.convolutions(TINY) == ["winograd", "xla", "onednn"]
    assert tuning.candidates(TINY, True, 2) == tuning.candidates(TINY, False, 2) + 2
    ms = {
        "winograd/8/float32": 5.0,
        "xla/8/float32": 6.0,
        "onednn/8/float32": 5.5,
        "winograd/4/float32": 7.0,
        "winograd/8/bfloat16": 9.0,  # XLA's bfloat16: through float32 conversions
        "onednn/8/bfloat16": 2.0,  # the AMX tiles
    }
    m = fake(ms)
    ex, d = _decide(Table.load(tmp_path / "a.json", AMX), m, tune="now", dtype_free=True)
    assert m.asked[-2:] == ["winograd/8/bfloat16", "onednn/8/bfloat16"]
    assert (ex.conv, ex.dtype) == ("onednn", "bfloat16") and d.source["conv"] == "measured"
    m = fake(ms)  # no AMX: oneDNN's float32 is tried, bfloat16 is not
    ex, d = _decide(Table.load(tmp_path / "b.json", HERE), m, tune="now", dtype_free=True)
    assert "onednn/8/float32" in m.asked and not any("bfloat16" in a for a in m.asked)
    assert (ex.conv, ex.dtype) == ("winograd", "float32")


def test_tune_now_measures_writes_the_table_and_records_the_decision(
    tiny_weights, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("VIZJAX_COMPILATION_CACHE", str(tmp_path / "cache" / "jax"))
    path = tmp_path / "cache" / "tuning.json"
    assert tuning.table_path() == path
    out = tmp_path / "a.h5"
    args = ["atlas", "--layer", "block2_conv1", "--filters", "0:8", "--size", "32"]
    args += ["--recipe", "classic", "--steps", "8", "--out", str(out), "--quiet"]
    args += tiny_network.ARGS
    assert main([*args, "--tune", "now", "--json"]) == 0
    err = capsys.readouterr().err
    # The rule (8 per device at 32 px, Winograd), the other convolution, half the chunk: three;
    # on a CPU with AMX (the run's dtype is free), bfloat16 at the winner: four.
    n = 3 + int(tuning.this_machine().bfloat16_unit)
    assert err.count(f"vizjax: tuning block2_conv1 for this CPU: timing up to {n} candidates") == 1
    ((key, entry),) = Table.load(path).entries().items()
    assert key.startswith("vgg16:8.8.16.16.16/block2_conv1/32x32/classic-")
    assert len(entry["ms_per_filter_step"]) == n
    assert all(v > 0 for v in entry["ms_per_filter_step"].values())
    from vizjax.atlas import open_atlas

    with open_atlas(out) as a:
        record = a.config["tuning"]["block2_conv1"]
    assert record["source"] == {"conv": "measured", "per_device": "measured", "dtype": "measured"}
    assert (record["conv"], record["per_device"]) == (entry["conv"], entry["per_device"])
    assert record["key"] == key and record["ms_per_filter_step"] == entry["ms_per_filter_step"]
    # The plan (auto) reads the table: nothing measured, the column says so. (The suite's
    # VIZJAX_TUNING=0 would turn it off: --tune wins over it.)
    args += ["--tune", "auto"]
    assert main([*args, "--plan", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["layers"][0]["tuning"]["source"]["conv"] == "table"
    assert main([*args, "--plan"]) == 0  # without --json: the text table
    text = capsys.readouterr().out
    assert text.splitlines()[1].split()[-1] == "tuned"
    assert f"table:{entry['conv']}" in text
    # A resumed run with another layer, tuning off: both layers' decisions in the atlas.
    more = [a if a != "block2_conv1" else "block1_conv1" for a in args[:-2]]
    assert main([*more, "--tune", "off"]) == 0
    capsys.readouterr()
    with open_atlas(out) as a:
        tuned = a.config["tuning"]
    assert tuned["block2_conv1"] == record and tuned["block1_conv1"]["source"]["conv"] == "rule"
    assert main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert f"block2_conv1 ran with conv {entry['conv']} (measured)" in info
    assert "block1_conv1 ran with conv winograd (rule)" in info
    assert main(["info"]) == 0
    info = capsys.readouterr().out
    assert str(path) in info and key in info
