"""The rules of the house that can be checked mechanically (docs/ARCHITECTURE.md).

1. Imports flow one way: the VMM core <- ``guest_tool`` <- the front ends (``hv_emu/cli/``,
   ``hv_emu/testing/``). Only the front ends import ``guest_tool``; nothing imports a front end,
   nor the ``guest-tool`` command (``guest_tool/cli.py`` and ``python -m guest_tool``'s
   ``guest_tool/__main__.py``).
2. Devices (``hv_emu/devices/`` and below) import no policy, network, update, machine or front end,
   directly or through other modules.
3. Port numbers and fixed guest-physical addresses are written only in ``hv_emu/layout.py``.
4. Every exception class of ``hv_emu/`` and ``guest_tool/`` derives from ``HvEmuError``.
5. Unicorn is imported only in ``hv_emu/vcpu/``, keystone only in ``guest_tool/assemble.py``.
6. Every module opens with a docstring saying what it models and what the guest controls.

Each failure names the file and line, ``path:line: what is wrong``.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from hv_emu import layout

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("hv_emu", "guest_tool")

# ------------------------------------------------------------------------------ the modules


@dataclass(frozen=True)
class Module:
    path: Path
    name: str  # dotted: hv_emu.devices.storage.ata; a package is its __init__'s name
    tree: ast.Module

    @property
    def where(self) -> str:
        return self.path.relative_to(ROOT).as_posix()

    def at(self, node: ast.AST) -> str:
        return f"{self.where}:{getattr(node, 'lineno', 0)}"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def all_modules() -> tuple[Module, ...]:
    paths = sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))
    return tuple(Module(p, _module_name(p), ast.parse(p.read_text(encoding="utf-8"), str(p)))
                 for p in paths)


def modules_under(prefix: str) -> list[Module]:
    return [m for m in all_modules() if within(m.name, prefix)]


def within(name: str, prefix: str) -> bool:
    """``name`` is the module ``prefix`` or inside it (``hv_emu.cli`` is not ``hv_emu.client``)."""
    return name == prefix or name.startswith(prefix + ".")


def _from(module: Module, node: ast.ImportFrom) -> str:
    """The absolute module of ``from ... import``, relative imports resolved."""
    if not node.level:
        return node.module or ""
    package = module.name if module.path.name == "__init__.py" else module.name.rpartition(".")[0]
    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
    return ".".join([*anchor, node.module] if node.module else anchor)


def imports(module: Module) -> Iterator[tuple[ast.AST, str]]:
    """Every module ``module`` imports, anywhere in it (functions, ``TYPE_CHECKING`` blocks), with
    the statement. ``from a import b`` yields ``a``, and ``a.b`` too when that is one of ours."""
    ours = {m.name for m in all_modules()}
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = _from(module, node)
            yield node, base
            for alias in node.names:
                if f"{base}.{alias.name}" in ours:
                    yield node, f"{base}.{alias.name}"


def report(offenders: list[str], rule: str) -> str:
    return f"{rule}:\n  " + "\n  ".join(offenders)


# ------------------------------------------------------------------- rule 1: one-way imports

FRONT_ENDS = ("hv_emu.cli", "hv_emu.testing")
#: The ``guest-tool`` command: a face of guest_tool, imported by nothing (tests aside).
GUEST_TOOL_COMMAND = "guest_tool.cli"
#: ``python -m guest_tool``: the same command, the one module that may import it.
GUEST_TOOL_MAIN = "guest_tool.__main__"


def part(name: str) -> str:
    """``hv_emu.cli`` / ``hv_emu.testing`` (a front end), ``guest_tool``, or ``core``.
    ``python -m hv_emu`` (``hv_emu.__main__``) is the ``hv-emu`` command: part of ``hv_emu.cli``."""
    if name == "hv_emu.__main__":
        return "hv_emu.cli"
    for front_end in FRONT_ENDS:
        if within(name, front_end):
            return front_end
    return "guest_tool" if within(name, "guest_tool") else "core"


def test_imports_flow_from_the_core_to_guest_tool_to_the_front_ends() -> None:
    offenders = []
    for module in all_modules():
        importer = part(module.name)
        for node, imported in imports(module):
            if (within(imported, GUEST_TOOL_COMMAND) or imported == GUEST_TOOL_MAIN) \
                    and module.name not in (GUEST_TOOL_COMMAND, GUEST_TOOL_MAIN):
                offenders.append(f"{module.at(node)}: imports {imported}, the guest-tool command")
            if not within(imported, "hv_emu") and not within(imported, "guest_tool"):
                continue
            target = part(imported)
            if target == importer or target == "core":
                continue
            if target == "guest_tool" and importer in FRONT_ENDS:
                continue
            offenders.append(f"{module.at(node)}: {importer} imports {imported} ({target})")
    assert offenders == [], report(
        offenders, "imports flow core <- guest_tool <- front ends (hv_emu/cli, hv_emu/testing)")


# ---------------------------------------------------------- rule 2: devices know no policy

DEVICE_FORBIDDEN = ("hv_emu.net", "hv_emu.updates", "hv_emu.scanner", "hv_emu.inspection",
                    "hv_emu.machine", "hv_emu.cli", "hv_emu.testing", "guest_tool")


def test_devices_know_no_policy() -> None:
    offenders = sorted({  # one line per statement: the first forbidden module it names
        module.at(node): f"{module.at(node)}: imports {imported}"
        for module in modules_under("hv_emu.devices")
        for node, imported in reversed(list(imports(module)))
        if any(within(imported, forbidden) for forbidden in DEVICE_FORBIDDEN)
    }.values())
    assert offenders == [], report(offenders, f"devices may not import {DEVICE_FORBIDDEN}")


def reached_from(start: str) -> dict[str, str]:
    """Every module of ours that importing ``start`` loads, each with the import chain that loads
    it first (``a -> b -> c``): a device may not reach a policy by a detour either."""
    ours = {m.name: m for m in all_modules()}
    chains = {start: start}
    todo = [start]
    while todo:
        current = todo.pop()
        for _, imported in imports(ours[current]):
            # importing a.b.c also runs a/__init__ and a/b/__init__
            parts = imported.split(".")
            for name in (".".join(parts[:i]) for i in range(1, len(parts) + 1)):
                if name in ours and name not in chains:
                    chains[name] = f"{chains[current]} -> {name}"
                    todo.append(name)
    return chains


def test_devices_reach_no_policy_through_other_modules_either() -> None:
    offenders = sorted({
        f"{module.where}: {chain}"
        for module in modules_under("hv_emu.devices")
        for name, chain in reached_from(module.name).items()
        if any(within(name, forbidden) for forbidden in DEVICE_FORBIDDEN)
    })
    assert offenders == [], report(offenders, "devices may not reach these through other modules")


def test_the_import_closure_follows_chains() -> None:
    """The closure walk itself: the machine reaches the scanner through other modules."""
    chains = reached_from("hv_emu.machine")
    assert "hv_emu.scanner.engine" in chains
    assert chains["hv_emu.scanner.engine"].startswith("hv_emu.machine -> ")


# ---------------------------------------------- rule 3: ports and fixed addresses in layout.py

#: A name that holds a port or a fixed address: FOO_PORT, PORTS, io_base, LOAD_ADDR, address...
ADDRESS_NAME = re.compile(r"(?:^|_)(?:ports?|base|addr|address)$", re.IGNORECASE)
#: Below this a number is an offset, a field, a count or a small code, not a port or an address
#: worth a name in layout.py (the first PC port past the PIC and the PIT is the keyboard's 0x60).
SMALLEST_PORT = 0x60
#: Functions whose first argument is a port: the bus's ``register`` and its ``PortRange``.
PORT_TAKERS = frozenset({"register", "PortRange"})
#: ``.equ ATA_PORT, 0x1f0`` inside assembly text held in a Python string.
EQU_ADDRESS = re.compile(r"\.(?:equ|set)\s+\w*(?:PORTS?|BASE|ADDR)\s*,\s*(?:0x[0-9a-f]+|\d+)",
                         re.IGNORECASE)
#: PC/AT ports that are also everyday numbers: port B's 0x61 is "a" and the NCQ write opcode,
#: the slave PIC's 0xA0 is 160 (a width in pixels). Where they are ports, ``register`` calls and
#: names ending in PORT still catch them.
COMMON_NUMBERS = frozenset({0x61, 0xA0})
#: Numbers that are ports or fixed addresses wherever they appear: every port of layout.py, and
#: its addresses that are not also common sizes (0x10000 is PAGE_TABLES_ADDR but also 64 KiB).
WELL_KNOWN = {
    value: name
    for name, value in vars(layout).items()
    if type(value) is int and (name.startswith("PORT_") or name.endswith("_PORT"))
    and not name.endswith("_LEN") and name != "PORT_SPACE"
    and value >= SMALLEST_PORT  # the PIC's 0x20 and the PIT's 0x40 are also common numbers
    and value not in COMMON_NUMBERS
} | {
    getattr(layout, name): name
    for name in ("VGA_TEXT_BASE", "DEFAULT_LOAD", "DEFAULT_LOAD_REAL", "REAL_MODE_IMAGE_END",
                 "STACK_TOP")
}
#: Statements whose number only looks like a port, by (file, target): why it is not one.
NOT_A_PORT = {
    ("hv_emu/devices/debugcon.py", "READBACK"):
        "the byte a read of the console returns (Bochs/QEMU's readback value), not its port",
    ("hv_emu/devices/storage/ata_registers.py", "DEV_OBSOLETE"):
        "the Device register's obsolete bits 7 and 5, not the slave PIC's port",
    ("hv_emu/devices/storage/ata_registers.py", "w[80]"):
        "IDENTIFY word 80, the major-version bit mask (ATA/ATAPI-4 .. ATA8-ACS), not a port",
}


def _int_literals(node: ast.AST | None) -> Iterator[ast.Constant]:
    """The integer literals of a value: itself, the items of a tuple/list/set, the values of a
    dict (``{64: 0x400000, ...}``), both sides of a sum or a difference (``0xC000 + 16``); not the
    operands of a mask (``value & 0x80FFFFFC``)."""
    if isinstance(node, ast.Constant) and type(node.value) is int:
        yield node
    elif isinstance(node, ast.Tuple | ast.List | ast.Set):
        for item in node.elts:
            yield from _int_literals(item)
    elif isinstance(node, ast.Dict):
        for value in node.values:
            yield from _int_literals(value)
    elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Sub):
        yield from _int_literals(node.left)
        yield from _int_literals(node.right)


def _name(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def _docstrings(tree: ast.Module) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def port_literals(module: Module) -> Iterator[tuple[ast.AST, str]]:
    """Every place ``module`` writes a port or a fixed address as a number, with the reason."""
    targets: dict[int, str] = {}  # id(literal) -> the assignment target it is a value of
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            names = node.targets if isinstance(node, ast.Assign) else [node.target]
            for literal in ast.walk(node.value):
                targets[id(literal)] = ast.unparse(names[0])
            if any(ADDRESS_NAME.search(_name(t)) for t in names):
                for literal in _int_literals(node.value):
                    if literal.value >= SMALLEST_PORT:
                        yield literal, f"{ast.unparse(names[0])} = {literal.value:#x}"
        elif isinstance(node, ast.keyword) and node.arg and ADDRESS_NAME.search(node.arg):
            for literal in _int_literals(node.value):
                if literal.value >= SMALLEST_PORT:
                    yield literal, f"{node.arg}={literal.value:#x}"
        elif isinstance(node, ast.arguments):
            positional = [*node.posonlyargs, *node.args]
            pairs = [*zip(positional[len(positional) - len(node.defaults):], node.defaults,
                          strict=True),
                     *((a, d) for a, d in zip(node.kwonlyargs, node.kw_defaults, strict=True) if d)]
            for arg, default in pairs:
                if ADDRESS_NAME.search(arg.arg):
                    for literal in _int_literals(default):
                        if literal.value >= SMALLEST_PORT:
                            yield literal, f"parameter {arg.arg} = {literal.value:#x}"
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and isinstance(key.value, str) \
                        and ADDRESS_NAME.search(key.value):
                    for literal in _int_literals(value):
                        if literal.value >= SMALLEST_PORT:
                            yield literal, f"{key.value!r}: {literal.value:#x}"
        elif isinstance(node, ast.Call) and _name(node.func) in PORT_TAKERS and node.args:
            for literal in _int_literals(node.args[0]):
                yield literal, f"{_name(node.func)}({literal.value:#x}, ...)"
    docstrings = _docstrings(module.tree)
    for node in ast.walk(module.tree):
        if not isinstance(node, ast.Constant) or id(node) in docstrings:
            continue
        if isinstance(node.value, str) and (m := EQU_ADDRESS.search(node.value)):
            yield node, f"assembly text {m.group()!r}"
        elif type(node.value) is int and node.value in WELL_KNOWN \
                and (module.where, targets.get(id(node))) not in NOT_A_PORT:
            yield node, f"{node.value:#x} is layout.{WELL_KNOWN[node.value]}"


def test_port_numbers_and_fixed_addresses_live_in_layout() -> None:
    offenders = sorted({
        f"{module.at(node)}: {why}"
        for module in all_modules()
        if module.name != "hv_emu.layout"
        for node, why in port_literals(module)
    })
    assert offenders == [], report(offenders, "write ports and fixed addresses in hv_emu/layout.py "
                                              "and import them from there")


def test_the_exceptions_to_the_port_rule_still_exist() -> None:
    """An entry of NOT_A_PORT that matches no statement any more is stale: remove it."""
    for (where, target), why in NOT_A_PORT.items():
        tree = ast.parse((ROOT / where).read_text(encoding="utf-8"))
        found = [node for node in ast.walk(tree)
                 if isinstance(node, ast.Assign | ast.AnnAssign)
                 and ast.unparse(node.targets[0] if isinstance(node, ast.Assign) else node.target)
                 == target]
        assert found, f"{where}: no assignment to {target} any more ({why}): drop the entry"


def test_the_well_known_numbers_are_the_pc_ports_and_addresses() -> None:
    assert {0xE9, 0x1F0, 0x3F6, 0xCF8, 0xCFC, 0xC000, 0xC100, 0xB8000, 0x7C00, 0x100000,
            0xDB00} <= WELL_KNOWN.keys()


# ------------------------------------------------------- rule 4: exceptions are HvEmuErrors

BASE_ERROR = "hv_emu.errors.HvEmuError"


@cache
def _classes() -> dict[str, tuple[Module, ast.ClassDef]]:
    return {f"{module.name}.{node.name}": (module, node)
            for module in all_modules() for node in ast.walk(module.tree)
            if isinstance(node, ast.ClassDef)}


@cache
def _aliases(module_name: str) -> dict[str, str]:
    """What each imported name of a module stands for (``GuestFault`` ->
    ``hv_emu.errors.GuestFault``, ``import hv_emu.errors`` binds ``hv_emu``)."""
    module = next(m for m in all_modules() if m.name == module_name)
    found: dict[str, str] = {}
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    found[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    found[top] = top
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                found[alias.asname or alias.name] = f"{_from(module, node)}.{alias.name}"
    return found


def _resolve(module_name: str, expression: ast.expr) -> str:
    """The dotted name a base class expression stands for in ``module_name``."""
    dotted = ast.unparse(expression)
    head, _, rest = dotted.partition(".")
    if f"{module_name}.{head}" in _classes() and not rest:
        return f"{module_name}.{head}"
    aliases = _aliases(module_name)
    if head in aliases:
        return _follow(aliases[head] + ("." + rest if rest else ""))
    if hasattr(builtins, head):
        return f"builtins.{dotted}"
    return dotted


def _follow(qualified: str) -> str:
    """A project name re-exported by another project module, followed to its definition."""
    if qualified in _classes():
        return qualified
    module_name, _, attr = qualified.rpartition(".")
    if any(m.name == module_name for m in all_modules()):
        aliases = _aliases(module_name)
        if attr in aliases:
            return _follow(aliases[attr])
    return qualified


def _bases(qualified: str) -> list[str]:
    module, node = _classes()[qualified]
    return [_resolve(module.name, base) for base in node.bases]


def is_exception(qualified: str) -> bool:
    if qualified in _classes():
        return any(is_exception(base) for base in _bases(qualified))
    module_name, _, attr = qualified.rpartition(".")
    try:
        outside = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError):
        return attr.endswith(("Error", "Exception", "Warning"))
    return isinstance(outside, type) and issubclass(outside, BaseException)


def derives_from_base_error(qualified: str) -> bool:
    if qualified == BASE_ERROR:
        return True
    return qualified in _classes() and any(derives_from_base_error(b) for b in _bases(qualified))


def test_every_exception_derives_from_hv_emu_error() -> None:
    offenders = []
    for qualified, (module, node) in _classes().items():
        if qualified != BASE_ERROR and is_exception(qualified) \
                and not derives_from_base_error(qualified):
            bases = ", ".join(ast.unparse(base) for base in node.bases)
            offenders.append(f"{module.at(node)}: class {node.name}({bases})")
    assert offenders == [], report(offenders, f"exceptions must derive from {BASE_ERROR}")


def test_the_exception_walk_sees_the_tree() -> None:
    """The walk resolves imported bases: a GuestFault subclass two modules away counts."""
    assert derives_from_base_error("hv_emu.net.switch.ArpError")  # FrameError, in net/headers.py
    assert is_exception("hv_emu.errors.HostError")
    assert not is_exception("hv_emu.exits.Fault")  # a value, not an exception


# ----------------------------------------------------- rule 5: unicorn and keystone stay put


def _importers_of(package: str) -> list[tuple[Module, ast.AST]]:
    return list({(module.at(node), id(node)): (module, node) for module in all_modules()
                 for node, imported in imports(module) if within(imported, package)}.values())


def test_only_the_vcpu_package_imports_unicorn() -> None:
    offenders = [f"{module.at(node)}: imports unicorn" for module, node in _importers_of("unicorn")
                 if not within(module.name, "hv_emu.vcpu")]
    assert offenders == [], report(offenders, "unicorn is imported outside hv_emu/vcpu/")


def test_only_assemble_imports_keystone() -> None:
    offenders = [f"{module.at(node)}: imports keystone"
                 for module, node in _importers_of("keystone")
                 if module.name != "guest_tool.assemble"]
    assert offenders == [], report(offenders, "keystone is imported outside guest_tool/assemble.py")


# -------------------------------------------------------------- rule 6: module docstrings


def test_every_module_opens_with_a_docstring_saying_what_it_models() -> None:
    for module in all_modules():
        if module.path.name == "__init__.py" and not module.path.read_text().strip():
            continue
        doc = ast.get_docstring(module.tree)
        assert doc, f"{module.where}:1: has no module docstring"
        assert "Models" in doc or module.path.name == "__init__.py", \
            f"{module.where}:1: say what it models"
        assert "controls" in doc, f"{module.where}:1: say what the guest controls"
