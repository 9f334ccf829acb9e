"""Path lookup inside the sysroot and granted directories (hv_emu/linux/sysroot.py): the walk as in
a chroot, over made-up trees (Hypothesis) and real host directories."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hv_emu.linux.numbers import Errno
from hv_emu.linux.refusals import SyscallError
from hv_emu.linux.sysroot import MAX_LINKS, HostTree, Kind, resolve

# A made-up tree: path components -> (kind, link target).
Tree = dict[tuple[str, ...], tuple[Kind, str]]


def lookup_in(tree: Tree):  # type: ignore[no-untyped-def]
    def lookup(components: tuple[str, ...]) -> tuple[Kind, str]:
        return tree.get(components, (Kind.MISSING, ""))

    return lookup


TREE: Tree = {
    ("lib",): (Kind.DIR, ""),
    ("lib", "libc.so.6"): (Kind.FILE, ""),
    ("lib64",): (Kind.LINK, "lib"),
    ("ld.so",): (Kind.LINK, "/lib/../lib/./libc.so.6"),
    ("out",): (Kind.LINK, "../../../../etc"),
    ("loop",): (Kind.LINK, "loop"),
    ("fifo",): (Kind.OTHER, ""),
}


@pytest.mark.parametrize("path, found", [
    ("/lib/libc.so.6", (("lib", "libc.so.6"), Kind.FILE)),
    ("lib//./libc.so.6", (("lib", "libc.so.6"), Kind.FILE)),
    ("/lib64/libc.so.6", (("lib", "libc.so.6"), Kind.FILE)),
    ("/ld.so", (("lib", "libc.so.6"), Kind.FILE)),
    ("/../../lib/../../lib", (("lib",), Kind.DIR)),
    ("/", ((), Kind.DIR)),
    ("/fifo", (("fifo",), Kind.OTHER)),
])  # fmt: skip
def test_paths_resolve_inside_the_tree(path: str, found: tuple[tuple[str, ...], Kind]) -> None:
    assert resolve(path, lookup_in(TREE)) == found


@pytest.mark.parametrize("path, errno", [
    ("/etc/passwd", Errno.ENOENT),
    ("/out", Errno.ENOENT),  # ../../../../etc: .. stops at the root, which has no etc
    ("/lib/libc.so.6/x", Errno.ENOTDIR),
    ("/lib/libc.so.6/", Errno.ENOTDIR),
    ("/ld.so/..", Errno.ENOTDIR),
    ("/loop", Errno.ELOOP),
    ("/" + "x" * 256, Errno.ENAMETOOLONG),
])  # fmt: skip
def test_bad_paths_get_the_errno_linux_gives(path: str, errno: Errno) -> None:
    with pytest.raises(SyscallError) as refused:
        resolve(path, lookup_in(TREE))
    assert refused.value.errno == errno


NAMES = st.sampled_from(["a", "b", "c", "..", ".", ""])
KINDS = st.sampled_from([Kind.DIR, Kind.FILE, Kind.LINK, Kind.OTHER])
TARGETS = st.lists(NAMES, max_size=6).map("/".join).flatmap(
    lambda rel: st.sampled_from([rel, "/" + rel]))


@st.composite
def trees(draw: st.DrawFn) -> Tree:
    tree: Tree = {}
    for path in draw(st.lists(st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=4),
                              max_size=20)):  # fmt: skip
        tree[tuple(path)] = (draw(KINDS), draw(TARGETS))
    return tree


@settings(max_examples=500, deadline=None)
@given(trees(), st.lists(NAMES, max_size=12).map("/".join))
def test_any_walk_ends_inside_the_tree_with_no_link_or_dot_dot(tree: Tree, path: str) -> None:
    """Whatever the tree and the path: either an errno, or components that are plain names and
    each a directory of the tree but the last (so nothing was reached through a link or ..)."""
    seen: list[tuple[str, ...]] = []

    def lookup(components: tuple[str, ...]) -> tuple[Kind, str]:
        seen.append(components)
        return lookup_in(tree)(components)

    try:
        components, kind = resolve(path, lookup)
    except SyscallError as refused:
        assert refused.errno in (Errno.ENOENT, Errno.ENOTDIR, Errno.ELOOP)
        assert sum(tree.get(c, (Kind.MISSING,))[0] is Kind.LINK for c in seen) <= MAX_LINKS + 1
        return
    assert all(name not in ("", ".", "..") for name in components)
    for depth in range(1, len(components)):
        assert tree.get(components[:depth], (Kind.MISSING,))[0] is Kind.DIR
    if components:
        assert tree[components][0] is kind and kind is not Kind.LINK
    else:
        assert kind is Kind.DIR


def test_a_host_tree_opens_files_and_directories_read_only(tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "f").write_bytes(b"data")
    (tmp_path / "lib64").symlink_to("/lib")  # absolute: inside the tree, so tmp_path/lib
    (tmp_path / "away").symlink_to("/")
    os.mkfifo(tmp_path / "fifo")
    tree = HostTree(tmp_path)
    found = tree.open("/lib64/f")
    try:
        assert not found.is_dir and os.read(found.fd, 10) == b"data"
        with pytest.raises(OSError):
            os.write(found.fd, b"x")
    finally:
        os.close(found.fd)
    found = tree.open("/away")  # the tree's root, not the host's
    try:
        assert found.is_dir and sorted(os.listdir(found.fd)) == ["away", "fifo", "lib", "lib64"]
    finally:
        os.close(found.fd)
    for path, errno in (("/fifo", Errno.EACCES), ("/away/etc/passwd", Errno.ENOENT)):
        with pytest.raises(SyscallError) as refused:
            tree.open(path)
        assert refused.value.errno == errno
    with pytest.raises(SyscallError) as refused:
        tree.open("/lib/f", directory=True)
    assert refused.value.errno == Errno.ENOTDIR
    assert (tree.readlink("/lib64"), tree.readlink("lib64/../away")) == ("/lib", "/")
    for path, errno in (("/lib/f", Errno.EINVAL), ("/lib64/", Errno.EINVAL),
                        ("/lib64/nothing", Errno.ENOENT), ("/lib/f/x", Errno.ENOTDIR)):  # fmt: skip
        with pytest.raises(SyscallError) as refused:
            tree.readlink(path)
        assert refused.value.errno == errno, path


@pytest.fixture(scope="module")
def hostile_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tree under an outer directory holding a secret: links inside point up, out, absolute
    and in circles."""
    outer = tmp_path_factory.mktemp("outer")
    (outer / "secret").write_bytes(b"secret")
    root = outer / "root"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "f").write_bytes(b"inside")
    (root / "a" / "up").symlink_to("../..")
    (root / "a" / "b" / "abs").symlink_to("/a")
    (root / "out").symlink_to(str(outer))
    (root / "secret").symlink_to("../secret")
    (root / "loop").symlink_to("loop2")
    (root / "loop2").symlink_to("loop")
    return root


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "f", "up", "abs", "out", "secret", "loop", "..", ".",
                                 ""]), max_size=10).map("/".join))  # fmt: skip
def test_whatever_a_path_says_only_the_tree_opens(hostile_tree: Path, path: str) -> None:
    try:
        found = HostTree(hostile_tree).open(path)
    except SyscallError as refused:
        assert refused.errno in (Errno.ENOENT, Errno.ENOTDIR, Errno.ELOOP)
        return
    try:
        opened = Path(os.readlink(f"/proc/self/fd/{found.fd}"))
    finally:
        os.close(found.fd)
    assert opened == hostile_tree.resolve() or hostile_tree.resolve() in opened.parents
