"""Disk backends: raw image files and the sparse in-memory disk."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from hv_emu.devices.storage.disk import DiskImage, DiskRangeError, MemoryDisk
from hv_emu.errors import ConfigError
from hv_emu.machine import Machine, MachineConfig
from hv_emu.net.backends import UdpSpec


def test_create_open_read_write(tmp_path: Path) -> None:
    path = tmp_path / "disk.img"
    with DiskImage.create(path, 2) as disk:
        assert disk.sector_count == 4096
        assert disk.read_sectors(4095, 1) == bytes(512)
        disk.write_sectors(10, b"\xab" * 1024)
        disk.flush()
    assert path.stat().st_size == 2 << 20
    with DiskImage.open(path) as disk:
        assert disk.read_sectors(10, 2) == b"\xab" * 1024
        with pytest.raises(DiskRangeError):
            disk.read_sectors(4095, 2)
        with pytest.raises(ValueError):
            disk.write_sectors(0, b"x" * 100)


def test_create_refuses_to_clobber(tmp_path: Path) -> None:
    path = tmp_path / "disk.img"
    path.write_bytes(b"precious" * 100)
    with pytest.raises(ConfigError):
        DiskImage.create(path, 1)
    assert path.read_bytes() == b"precious" * 100
    DiskImage.create(path, 1, overwrite=True).close()
    assert path.stat().st_size == 1 << 20
    with pytest.raises(ConfigError):
        DiskImage.create(tmp_path / "zero.img", 0)


def test_create_too_large_is_a_config_error_and_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "huge.img"
    with pytest.raises(ConfigError, match=r"huge\.img"):
        DiskImage.create(path, 1 << 60)  # 2**80 bytes: past any file offset the host has
    assert not path.exists()


def test_open_errors_and_partial_sector(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        DiskImage.open(tmp_path / "missing.img")
    small = tmp_path / "small.img"
    small.write_bytes(b"x" * 100)
    with pytest.raises(ConfigError):
        DiskImage.open(small)
    odd = tmp_path / "odd.img"
    odd.write_bytes(b"y" * 1300)
    with DiskImage.open(odd) as disk:
        assert disk.sector_count == 2


def test_memory_disk_is_sparse() -> None:
    disk = MemoryDisk(1 << 30)
    assert disk.read_sectors((1 << 30) - 1, 1) == bytes(512)
    disk.write_sectors(5, b"\x01" * 512)
    assert disk.written() == {5: b"\x01" * 512}
    with pytest.raises(DiskRangeError):
        disk.write_sectors(1 << 30, bytes(512))
    disk.flush()
    assert disk.flushes == 1


def test_a_machine_whose_disk_fails_releases_its_network_socket(tmp_path: Path) -> None:
    """``--net`` opens a socket before ``--disk`` is opened; a bad disk must not leak it."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    config = MachineConfig(net=UdpSpec(("127.0.0.1", port)), disk=tmp_path / "missing.img")
    with pytest.raises(ConfigError, match=r"missing\.img") as failed:
        Machine(config)
    # The failed constructor's frames (and the machine in them) are still alive in ``failed``:
    # the port is free again only because the machine closed its backend itself.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
        again.bind(("127.0.0.1", port))
    assert failed.value is not None
