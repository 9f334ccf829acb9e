"""``hv-emu scan`` starts lean: no emulator imports, a cached database, every core for large scans
(issue 10 item 4; docs/PERFORMANCE.md has the timings, measured outside the suite)."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import pytest

from hv_emu.cli import scan as scan_command
from hv_emu.cli import scan_files, scan_parallel
from hv_emu.cli.main import main
from hv_emu.scanner.cache import SUFFIX
from tests.rigs.scanner import BODIES, SPLITTABLE

ROOT = Path(__file__).resolve().parent.parent.parent
NDB = (
    b"Test.Plain:0:*:" + b"hv-emu-test-body".hex().encode() + b"\n"
    b"Test.Wild:0:*:414243??444546*474849\n"
    b"Test.Tail:0:EOF-4:54414c21\n"
)
#: What ``hv-emu scan`` never needs: the CPU emulator, assembler and disassembler, the update
#: path's cryptography and network code, the VMM core, the guest tools.
FORBIDDEN = ("unicorn", "capstone", "keystone", "cryptography", "raptorq", "guest_tool",
             "hv_emu.machine", "hv_emu.vcpu", "hv_emu.updates", "hv_emu.net", "hv_emu.cli.run",
             "hv_emu.cli.run_options", "hv_emu.cli.demo", "multiprocessing", "json")  # fmt: skip


def imported(
    argv: list[str], cache_home: Path
) -> tuple[set[str], subprocess.CompletedProcess[str]]:
    """The modules ``python -X importtime -m hv_emu ARGV`` imported, and how it ended."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_CACHE_HOME": str(cache_home)}
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "hv_emu", *argv], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    names = {line.rpartition("|")[2].strip() for line in done.stderr.splitlines()
             if line.startswith("import time:")}  # fmt: skip
    return names, done


def forbidden(names: set[str]) -> list[str]:
    return sorted(n for n in names if any(n == f or n.startswith(f + ".") for f in FORBIDDEN))


@pytest.mark.parametrize("cached", [False, True])
def test_scan_imports_nothing_it_does_not_use(tmp_path: Path, cached: bool) -> None:
    db = tmp_path / "t.ndb"
    db.write_bytes(NDB)
    target = tmp_path / "file"
    target.write_bytes(b"an ordinary file with hv-emu-test-body in it\n")
    argv = ["scan", "--db", str(db), str(target)]
    if cached:
        imported(argv, tmp_path)  # fills the cache
    names, done = imported(argv, tmp_path)
    assert done.returncode == 1 and "Test.Plain FOUND" in done.stdout, done.stderr[-2000:]
    assert "hv_emu.scanner.engine" in names  # the measurement itself works
    assert forbidden(names) == []
    assert (tmp_path / "hv-emu").is_dir()
    if cached:  # and with a warm cache, no parser, no dataclasses, nothing only a writer needs
        assert sorted(names & WARM_FORBIDDEN) == []


#: What a scan whose database comes from the cache does not import (docs/PERFORMANCE.md, issue
#: 10 item 4): the parsers (a hit parses nothing), ``dataclasses`` (and ``inspect`` with it: a
#: scan's classes are ``hv_emu/scanner/record.py``'s), ``shutil`` (argparse's help width), what
#: only a cache write needs (``secrets``).
WARM_FORBIDDEN = {"hv_emu.scanner.signatures", "hv_emu.scanner.body", "hv_emu.scanner.logical",
                  "dataclasses", "inspect", "shutil", "secrets"}  # fmt: skip


def test_the_check_sees_what_run_imports(tmp_path: Path) -> None:
    """The same measurement on ``hv-emu run --help`` does find the emulator: the test above can
    fail."""
    names, done = imported(["run", "--help"], tmp_path)
    assert done.returncode == 0
    assert "unicorn" in forbidden(names) and "hv_emu.machine" in forbidden(names)


def test_every_sub_command_is_still_listed(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "{run,scan,demo}" in out and "run a guest image" in out
    assert main(["scan", "--db", "/nonexistent.ndb", "x"]) == 2
    assert "cannot read signature database" in capsys.readouterr().err


def test_no_cache_writes_nothing_and_the_cache_gives_the_same_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], private_cache: Path
) -> None:
    db = tmp_path / "t.ndb"
    db.write_bytes(NDB)
    target = tmp_path / "f"
    target.write_bytes(b"..ABC\x00DEF..GHI hv-emu-test-body TAL!")
    outputs = []
    assert main(["scan", "--no-cache", "--db", str(db), str(target)]) == 1
    outputs.append(capsys.readouterr().out)
    assert not private_cache.exists()
    for flag in ([], [], ["--no-cache"]):
        assert main(["scan", *flag, "--db", str(db), str(target)]) == 1
        outputs.append(capsys.readouterr().out)
        assert len(list(private_cache.glob("*" + SUFFIX))) == 1
    assert len(set(outputs)) == 1
    assert sorted(outputs[0].splitlines()) == sorted(
        f"{target}: Test.{name} FOUND" for name in ("Plain", "Wild", "Tail"))


def make_tree(top: Path) -> None:
    """Files of many sizes, some infected, one unreadable, one nested too deep, one FIFO."""
    for index in range(12):
        folder = top / f"d{index % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        body = b"hv-emu-test-body" if index % 4 == 1 else b""
        tail = b"TAL!" if index % 5 == 2 else b""
        (folder / f"f{index:02}").write_bytes(os.urandom(index * 9000) + body + tail)
    deep = top / "a" / "b" / "c"
    deep.mkdir(parents=True)
    (deep / "hidden").write_bytes(b"hv-emu-test-body")
    (top / "d1" / "unreadable").symlink_to(top / "d1" / "gone")  # not followed inside a tree
    os.mkfifo(top / "fifo")


@pytest.mark.parametrize("as_json", [False, True])
def test_jobs_give_the_same_output_in_the_same_order(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    as_json: bool,
) -> None:
    monkeypatch.setattr(scan_command, "PARALLEL_FROM", 0)  # even this small tree in parallel
    pools = []
    real = scan_parallel.parallel_results

    def counted(*args: object, **kwargs: object) -> object:
        pools.append(args[-1])
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(scan_command, "parallel_results", counted)
    db = tmp_path / "t.ndb"
    db.write_bytes(NDB)
    tree = tmp_path / "tree"
    make_tree(tree)
    missing = tmp_path / "missing"
    runs = {}
    for jobs in ("1", "3"):
        argv = ["scan", "-j", jobs, "--db", str(db), "--max-dir-recursion", "3", str(tree),
                str(missing), str(tree / "d0" / "f00"), *(["--json"] if as_json else [])]
        status = main(argv)
        out, err = capsys.readouterr()
        runs[jobs] = (status, out, err.partition("----------- SCAN SUMMARY")[0])
    assert pools == [3]  # -j 1 scanned here, -j 3 in workers
    assert runs["1"] == runs["3"]
    status, out, err = runs["1"]
    assert status == 1
    if as_json:
        assert '"status": "found"' in out and '"status": "error"' in out
    else:
        assert "Test.Plain FOUND" in out and "missing: cannot access" in err
    assert "fifo" not in out + err and "hidden" not in out


def test_parallel_results_come_back_in_order_from_other_processes(tmp_path: Path) -> None:
    from hv_emu.scanner.database_files import compile_files

    db_path = tmp_path / "t.ndb"
    db_path.write_bytes(NDB)
    db = compile_files([db_path])
    files = []
    for index in range(8):
        files.append(tmp_path / f"f{index}")
        files[-1].write_bytes(b"x" * (8 - index) * 100_000 + b"hv-emu-test-body" * (index % 2))
    results = list(scan_parallel.parallel_results(db, files, 4))
    assert [r.path for r in results] == [str(f) for f in files]
    assert [r.names for r in results] == [["Test.Plain"] * (i % 2) for i in range(8)]
    assert scan_parallel._WORKER_DB is None




@pytest.mark.parametrize("engine", ["ac", "auto"])
def test_pieces_of_a_file_give_what_the_whole_file_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: str
) -> None:
    """Bodies placed across, just before and just after every cut, at every chunk grid."""
    from hv_emu.scanner.database_files import compile_files

    db_path = tmp_path / "s.ndb"
    db_path.write_bytes(SPLITTABLE)
    db = compile_files([db_path], engine=engine)
    assert scan_parallel.splittable(db)
    monkeypatch.setattr(scan_files, "CHUNK", 64)
    monkeypatch.setattr(scan_parallel, "CHUNK", 64)
    rng = random.Random(7)
    for trial in range(60):
        data = bytearray(rng.randbytes(64 * 12))
        for _ in range(rng.randint(0, 6)):
            body = rng.choice(BODIES)
            at = rng.choice([64 * rng.randint(1, 11) + rng.randint(-20, 8), rng.randrange(700)])
            at = max(0, min(at, len(data) - len(body)))
            data[at : at + len(body)] = body
        target = tmp_path / f"f{trial}"
        target.write_bytes(bytes(data))
        whole = scan_files.scan_file(db, target)
        for step in (64, 128, 320):
            cuts = [*range(0, len(data), step), len(data)]
            parts = [scan_parallel.scan_piece(db, target, a, b) for a, b in pairwise(cuts)]
            joined = scan_parallel._joined(target, parts)
            assert (joined.names, joined.size) == (whole.names, whole.size), (trial, step)


def test_one_large_file_is_split_across_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hv_emu.scanner.database_files import compile_files

    monkeypatch.setattr(scan_files, "CHUNK", 4096)
    monkeypatch.setattr(scan_parallel, "CHUNK", 4096)
    monkeypatch.setattr(scan_parallel, "SPLIT_FROM", 8192)
    db_path = tmp_path / "s.ndb"
    db_path.write_bytes(SPLITTABLE)
    db = compile_files([db_path])
    target = tmp_path / "big"
    data = bytearray(os.urandom(4096 * 9 + 100))
    for at, body in ((4090, b"hv-emu-test-body"), (8190, b"NOP..Q"), (20000, b"Z.KLM")):
        data[at : at + len(body)] = body
    target.write_bytes(bytes(data))
    assert len(scan_parallel._pieces(target, 3, True)) == 3
    assert len(scan_parallel._pieces(target, 3, False)) == 1
    (result,) = scan_parallel.parallel_results(db, [target], 3, split=True)
    assert result == scan_files.scan_file(db, target)
    assert result.names == ["Plain", "Right", "Left"]


def test_chains_and_offsets_are_never_split(tmp_path: Path) -> None:
    from hv_emu.scanner.database_files import compile_files

    for line in (b"C:0:*:414243*444546\n", b"A:0:10:414243\n", b"E:0:EOF-3:414243\n"):
        db_path = tmp_path / "x.ndb"
        db_path.write_bytes(SPLITTABLE + line)
        assert not scan_parallel.splittable(compile_files([db_path], engine="ac"))


def test_jobs_are_capped_at_a_few_workers_per_core(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``-j 99999`` on many files forks ``MAX_JOBS_PER_CORE`` workers per core, not 99999."""
    import multiprocessing.context

    from hv_emu.scanner.database_files import compile_files

    db_path = tmp_path / "t.ndb"
    db_path.write_bytes(NDB)
    db = compile_files([db_path])
    files = []
    for index in range(12):
        files.append(tmp_path / f"f{index}")
        files[-1].write_bytes(b"hv-emu-test-body" * (index % 2))
    monkeypatch.setattr(scan_parallel, "cores", lambda: 2)
    asked: list[int | None] = []
    real = multiprocessing.context.BaseContext.Pool

    def recorded(self: multiprocessing.context.BaseContext, processes: int | None = None,
                 *args: object, **kw: object) -> object:
        asked.append(processes)
        return real(self, processes, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(multiprocessing.context.BaseContext, "Pool", recorded)
    results = list(scan_parallel.parallel_results(db, files, 99999))
    assert [r.names for r in results] == [["Test.Plain"] * (i % 2) for i in range(12)]
    assert asked == [2 * scan_parallel.MAX_JOBS_PER_CORE] == [8]


def test_the_jobs_cap_is_in_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["scan", "--help"])
    assert f"at most {scan_parallel.MAX_JOBS_PER_CORE} per core" in " ".join(
        capsys.readouterr().out.split()
    )


def test_the_process_ends_without_teardown_only_after_a_scan_in_one_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from hv_emu.cli import main as main_module

    db = tmp_path / "t.ndb"
    db.write_bytes(NDB)
    target = tmp_path / "file"
    target.write_bytes(b"hv-emu-test-body\n")
    ended: list[int] = []

    def fake_exit(status: int) -> None:  # os._exit never returns
        ended.append(status)
        raise SystemExit(status)

    monkeypatch.setattr(main_module.os, "_exit", fake_exit)
    monkeypatch.setattr(sys, "argv", ["hv-emu", "scan", "--no-cache", "--db", str(db), str(target)])
    monkeypatch.delitem(sys.modules, "multiprocessing", raising=False)
    with pytest.raises(SystemExit):
        main_module.entry()
    assert ended == [1]  # found: the status goes to _exit
    assert "Test.Plain FOUND" in capsys.readouterr().out
    monkeypatch.setitem(sys.modules, "multiprocessing", sys)  # a scan that started workers
    assert main_module.entry() == 1 and ended == [1]  # ends as usual: the status returned
    monkeypatch.setattr(sys, "argv", ["hv-emu", "scan", "--db", str(tmp_path / "none.ndb"), "x"])
    monkeypatch.delitem(sys.modules, "multiprocessing")
    with pytest.raises(SystemExit):
        main_module.entry()
    assert ended == [1, 2]  # an error is a status like another


def test_a_scan_process_flushes_everything_it_prints(tmp_path: Path) -> None:
    """Ending without teardown loses nothing: hundreds of lines through a pipe, the summary, and
    the status, from ``python -m hv_emu`` as from the console script (both call ``entry``)."""
    db = tmp_path / "t.ndb"
    db.write_bytes(NDB)
    tree = tmp_path / "tree"
    tree.mkdir()
    for index in range(400):
        body = b"hv-emu-test-body" if index % 100 == 7 else b"clean"
        (tree / f"{index:03}").write_bytes(body * 3)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_CACHE_HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "hv_emu", "scan", "-j", "1", "--db", str(db),
                           str(tree)], env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    lines = done.stdout.splitlines()
    assert done.returncode == 1, done.stderr[-2000:]
    assert len(lines) == 400 and sum(line.endswith("FOUND") for line in lines) == 4
    assert done.stderr.splitlines()[-1].startswith("Time: ")


def test_one_file_never_goes_to_the_pool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A lone file is scanned in this process (``scan_shared.shared_result`` when it is large
    enough and the database splittable; it decides itself whether to fork): the pool would cost
    its start-up for one file (docs/PERFORMANCE.md)."""
    import io

    from hv_emu.scanner.database_files import compile_files

    db_path = tmp_path / "t.ndb"
    db_path.write_bytes(b"A:0:*:616263\n")
    db = compile_files([db_path])
    target = tmp_path / "file"
    target.write_bytes(b"abc" + bytes(2997))
    routes: list[str] = []
    for name in ("parallel_results", "shared_result", "scan_file"):
        real = getattr(scan_command, name)

        def spy(*args: object, real: object = real, name: str = name, **kwargs: object) -> object:
            routes.append(name)
            return real(*args, **kwargs)  # type: ignore[operator]

        monkeypatch.setattr(scan_command, name, spy)
    monkeypatch.setattr(scan_command, "PARALLEL_FROM", 0)
    for shared_from, jobs, expected in ((4096, 2, "scan_file"), (2048, 2, "shared_result"),
                                        (2048, 1, "scan_file")):  # fmt: skip
        monkeypatch.setattr(scan_command, "SHARED_FROM", shared_from)
        out = io.StringIO()
        status = scan_command.run_scan(db, [target], out=out, err=io.StringIO(), jobs=jobs)
        assert status == 1 and out.getvalue() == f"{target}: A FOUND\n"
        assert routes == [expected], (shared_from, jobs)
        routes.clear()
    status = scan_command.run_scan(db, [target, target], out=io.StringIO(), err=io.StringIO(),
                                   jobs=2)  # fmt: skip
    assert status == 1 and routes == ["parallel_results"]
