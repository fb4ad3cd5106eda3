"""Threadgroup-memory access checks: every load and store through a ``threadgroup`` pointer in the
optimised LLVM IR of a kernel library gets a call to the scheduler's ``msl_tg_access`` (bounds and data
races between barriers, reported with the access's ``file:line``).

The compile driver builds with ``-ffake-address-space-map``, so ``threadgroup`` (OpenCL ``__local``) is
LLVM address space 3 in the IR. Generic pointers (address space 4) cast from a threadgroup pointer in the
same function (and offsets from them) are followed too: a struct copy through the implicit assignment
operator, whose ``this`` is generic, becomes such a memcpy. Generic pointers that reach a function as
arguments (a method on a threadgroup object that was not inlined) are not checked.
"""

from __future__ import annotations

import re

LOCAL = "ptr addrspace(3)"
_VALUE = r"(%[\w.$-]+|%\"[^\"]+\")"
_DBG = re.compile(r"!dbg (![0-9]+)")
_LOAD = re.compile(rf"^(\s*)(?:%[\w.$-]+|%\"[^\"]+\") = load (?!atomic)(?:volatile )?(.*?), ptr addrspace\(([34])\) "
                   rf"{_VALUE}")
_STORE = re.compile(rf"^(\s*)store (?!atomic)(?:volatile )?(.*), ptr addrspace\(([34])\) {_VALUE}")
_TO_GENERIC = re.compile(rf"^\s*{_VALUE} = addrspacecast ptr addrspace\(3\) \S+ to ptr addrspace\(4\)")
_GENERIC_GEP = re.compile(rf"^\s*{_VALUE} = getelementptr .*?, ptr addrspace\(4\) {_VALUE}")
_MEM = re.compile(r"^(\s*)(?:tail |musttail |notail )?call void @llvm\.mem(cpy|move|set)(?:\.inline)?\.[\w.]+\((.*)\)")
_META = re.compile(r"^(![0-9]+) = (?:distinct )?!(\w+)\((.*)\)\s*$")
_FIELD = re.compile(r"(\w+): (\"(?:[^\"\\]|\\.)*\"|![0-9]+|[\w-]+)")

READ, WRITE = 0, 1


def _split_type(text: str) -> str:
    """The leading IR type of ``<type> <value>``."""
    text = text.strip()
    pairs = {"<": ">", "[": "]", "{": "}"}
    if text[0] in pairs:
        depth = 0
        for i, c in enumerate(text):
            if c in "<[{":
                depth += 1
            elif c in ">]}":
                depth -= 1
                if depth == 0:
                    return text[:i + 1]
    m = re.match(r"ptr(?: addrspace\(\d+\))?|%[\w.$-]+|%\"[^\"]+\"|[\w]+", text)
    return m.group()


def _sizeof(ty: str) -> str:
    return f"ptrtoint (ptr getelementptr ({ty}, ptr null, i32 1) to i64)"


def _args(text: str) -> list[str]:
    out, depth, start = [], 0, 0
    for i, c in enumerate(text):
        if c in "([{<":
            depth += 1
        elif c in ")]}>":
            depth -= 1
        elif c == "," and depth == 0:
            out.append(text[start:i].strip())
            start = i + 1
    out.append(text[start:].strip())
    return out


class _Locations:
    """file:line of debug locations (innermost frame: the access itself, even when inlined)."""

    def __init__(self, ir: str):
        self.nodes = {}
        for line in ir.splitlines():
            m = _META.match(line)
            if m:
                self.nodes[m.group(1)] = (m.group(2), dict(_FIELD.findall(m.group(3))))

    def file_of(self, scope: str) -> str:
        for _ in range(100):
            kind, f = self.nodes.get(scope, ("", {}))
            if kind == "DIFile":
                name = f.get("filename", '"?"').strip('"')
                directory = f.get("directory", '""').strip('"')
                return name if name.startswith("/") or not directory else f"{directory}/{name}"
            scope = f.get("file") or f.get("scope")
            if scope is None:
                break
        return "?"

    def __call__(self, dbg: str | None) -> str:
        kind, f = self.nodes.get(dbg, ("", {})) if dbg else ("", {})
        if kind != "DILocation":
            return "?"
        return f"{self.file_of(f.get('scope', ''))}:{f.get('line', '?')}"


def instrument(ir: str) -> tuple[str, list[str]]:
    """The IR with threadgroup accesses checked, and the access sites (index -> file:line)."""
    where = _Locations(ir)
    sites: list[str] = []
    index: dict[str, int] = {}

    def site(line: str) -> tuple[int, str]:
        m = _DBG.search(line)
        loc = where(m.group(1) if m else None)
        if loc not in index:
            index[loc] = len(sites)
            sites.append(loc)
        return index[loc], (f", !dbg {m.group(1)}" if m else "")

    out = []
    generic: set[str] = set()  # generic pointers into threadgroup memory in the current function
    casts = 0

    def threadgroup(space: str, value: str) -> bool:
        return space == "3" or value in generic

    for line in ir.splitlines():
        if line.startswith("define "):
            generic.clear()
        elif m := _TO_GENERIC.match(line):
            generic.add(m.group(1))
        elif (m := _GENERIC_GEP.match(line)) and m.group(2) in generic:
            generic.add(m.group(1))
        checks = []
        if "addrspace(3)" in line or (generic and "addrspace(4)" in line):
            if (m := _LOAD.match(line)) and threadgroup(m.group(3), m.group(4)):
                checks.append((m.group(1), m.group(3), m.group(4), _sizeof(m.group(2).strip()), READ))
            elif (m := _STORE.match(line)) and threadgroup(m.group(3), m.group(4)):
                checks.append((m.group(1), m.group(3), m.group(4), _sizeof(_split_type(m.group(2))), WRITE))
            elif m := _MEM.match(line):
                args = _args(m.group(3))
                size = args[2].split(None, 1)[1]
                for pos, kind in ((0, WRITE), (1, READ)) if m.group(2) != "set" else ((0, WRITE),):
                    space = re.match(r"ptr addrspace\((\d+)\)", args[pos])
                    if space and threadgroup(space.group(1), args[pos].split()[-1]):
                        checks.append((m.group(1), space.group(1), args[pos].split()[-1], size, kind))
        for indent, space, ptr, size, kind in checks:
            k, dbg = site(line)
            if space != "3":
                casts += 1
                out.append(f"{indent}%msl.tg.{casts} = addrspacecast ptr addrspace({space}) {ptr} to {LOCAL}")
                ptr = f"%msl.tg.{casts}"
            out.append(f"{indent}call void @msl_tg_access({LOCAL} {ptr}, i64 {size}, i32 {kind}, i32 {k}){dbg}")
        out.append(line)
    if sites:
        out.append(f"declare void @msl_tg_access({LOCAL}, i64, i32, i32)")
    return "\n".join(out) + "\n", sites
