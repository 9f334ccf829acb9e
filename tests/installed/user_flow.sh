#!/usr/bin/env bash
# The documented user flow, run from an installed wheel, outside the checkout.
#
# What it proves: the sdist builds a wheel with the same files as the tree's own wheel; that wheel,
# installed into a fresh virtual environment in a temporary directory, does what README.md shows:
# keys, the sample database, a signed bundle, update guests in 16/32/64-bit mode run with --trust
# (exit 0), the demo, a scan, a Linux program, and a user's own pytest file using the `hv` fixture.
# Nothing may be read from the checkout: the commands run in an empty directory elsewhere, and the
# installed packages must not resolve into the checkout.
#
# Usage: tests/installed/user_flow.sh [PYTHON]   (PYTHON builds the wheel; default .venv/bin/python)
# `make test` runs it before the unit tests; it takes about a minute with a warm pip cache.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
py=${1:-$repo/.venv/bin/python}
work=$(mktemp -d "${TMPDIR:-/tmp}/hv-emu-installed.XXXXXX")
trap 'rm -rf "$work"' EXIT
step() { printf 'installed: %s\n' "$*"; }
fail() { printf 'installed: FAILED: %s\n' "$*" >&2; exit 1; }

step "building the sdist, a wheel from it, and a wheel from the tree"
# Build from a copy of the files git tracks (a fresh clone's, with their uncommitted edits): the
# checkout gets no build/ or egg-info, and neither a stale build/lib nor an untracked file can slip
# into the wheel. The isolated builds fetch setuptools, and the fresh venv its dependencies, from
# the package index (or pip's cache).
mkdir "$work/src"
git -C "$repo" ls-files -z --cached \
  | (cd "$repo" && xargs -0 sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' _) \
  | (cd "$repo" && tar --null -T - -cf -) | tar -xf - -C "$work/src"
"$py" -m build -q --outdir "$work/dist" "$work/src" >"$work/build.log" 2>&1 \
  || { tail -n 20 "$work/build.log" >&2; fail "python -m build"; }
"$py" -m build -q --wheel --outdir "$work/tree" "$work/src" >>"$work/build.log" 2>&1 \
  || { tail -n 20 "$work/build.log" >&2; fail "python -m build --wheel"; }
wheel=$(ls "$work"/dist/*.whl)
"$py" - "$wheel" "$work"/tree/*.whl "$work/src" <<'PY' || fail "the wheels differ or lack files"
import pathlib, sys, zipfile
sdist_whl, tree_whl, src = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3])
def contents(path):
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist() if ".dist-info/" not in n}
from_sdist, from_tree = contents(sdist_whl), contents(tree_whl)
if from_sdist != from_tree:
    differ = sorted(set(from_sdist) ^ set(from_tree)) or sorted(
        n for n in from_sdist if from_sdist[n] != from_tree[n])
    sys.exit(f"the sdist's wheel and the tree's wheel differ: {differ}")
# Every tracked source and data file of the packages, and every asm/ source, is in the wheel.
need = {str(p.relative_to(src)) for top in ("hv_emu", "guest_tool") for p in (src / top).rglob("*")
        if p.is_file()}
need |= {"guest_tool/asm/" + str(p.relative_to(src / "asm")) for p in (src / "asm").rglob("*")
         if p.is_file()}
missing = sorted(need - set(from_sdist))
if missing:
    sys.exit(f"the wheel lacks {missing}")
PY

step "installing $(basename "$wheel") and pytest into a fresh virtual environment"
"$py" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q --disable-pip-version-check "$wheel" pytest \
  >"$work/pip.log" 2>&1 || { tail -n 20 "$work/pip.log" >&2; fail "pip install"; }
PATH="$work/venv/bin:$PATH"
mkdir "$work/user"
cd "$work/user"
unset PYTHONPATH

where=$(python -c 'import hv_emu, guest_tool.programs as p; print(hv_emu.__file__, p.ASM_DIR)')
case "$where" in *"$repo"*) fail "the installed packages resolve into the checkout: $where";; esac
version=$(python -c 'import hv_emu; print(hv_emu.__version__)')
for command in "hv-emu --version" "guest-tool --version" "python -m hv_emu --version" \
               "python -m guest_tool --version"; do
  said=$($command) || fail "$command exited $?"
  case "$said" in *" $version") ;; *) fail "$command said '$said', not version $version";; esac
done
step "hv-emu, guest-tool, python -m hv_emu and python -m guest_tool say version $version"

step "guest-tool keygen, sample-db, bundle"
guest-tool keygen demo >/dev/null
guest-tool sample-db -o sample.db >/dev/null
guest-tool bundle --db sample.db --version 7 --key demo.key -o update.hvdb >/dev/null

for mode in 16 32 64; do
  step "guest-tool build --mode $mode; hv-emu run --trust (expects rc=0)"
  guest-tool build --bundle update.hvdb --mode "$mode" -o "update$mode.bin" >/dev/null
  hv-emu run "update$mode.bin" --mode "$mode" --trust demo.pub >"run$mode.out" 2>&1 \
    || fail "hv-emu run update$mode.bin exited $?"
  grep -q 'rc=0' "run$mode.out" || fail "update$mode.bin printed: $(cat "run$mode.out")"
done

step "guest-tool build --program hello; hv-emu run"
guest-tool build --program hello -o hello.bin >/dev/null
hv-emu run hello.bin >hello.out 2>hello.err || fail "hello.bin exited $?"
[ -s hello.out ] || fail "hello.bin printed nothing"

step "guest-tool build --format linux-elf; hv-emu run hvupdate (exit 0: installed)"
guest-tool build --format linux-elf -o hvupdate >/dev/null
hv-emu run hvupdate --trust demo.pub --file u=update.hvdb --file u.sig=update.hvdb.sig -- u u.sig \
  >hvupdate.out 2>&1 || fail "hvupdate exited $?: $(cat hvupdate.out)"

step "hv-emu demo"
hv-emu demo >demo.out 2>&1 || { tail -n 20 demo.out >&2; fail "hv-emu demo exited non-zero"; }

step "hv-emu scan (expects the EICAR test string found, exit 1)"
printf '%s' 'X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*' >eicar.com
printf 'nothing to see here\n' >clean.txt
set +e; hv-emu scan --db sample.db eicar.com clean.txt >scan.out 2>&1; rc=$?; set -e
[ "$rc" = 1 ] || fail "hv-emu scan exited $rc: $(cat scan.out)"
grep -q 'eicar.com: Eicar-Test-Signature FOUND' scan.out || fail "scan said: $(cat scan.out)"
grep -q 'clean.txt: OK' scan.out || fail "scan said: $(cat scan.out)"

step "a user's own pytest file with the hv fixture (README's example)"
cat >test_mine.py <<'PY'
def test_double(hv):
    hv.register_hypercall("double", lambda ctx: 2 * ctx.rbx, nr=5)
    run = hv.run_asm("mov eax, 5\n mov ebx, 21\n vmcall\n hlt")
    assert run.registers["rax"] == 42 and run.hypercalls[0].name == "double"


def test_a_shipped_program(hv):
    run = hv.run_program("status")
    assert run.hypercalls and run.hypercalls[0].name == "get_vmmcall_number"
PY
python -m pytest -q -p no:cacheprovider test_mine.py >pytest.out 2>&1 \
  || { cat pytest.out >&2; fail "the user's pytest file"; }
step "the user's pytest file passed; all done"
