"""Lint .metal files for what C++ accepts but Metal rejects (msl-on-linux.md section 5).

Layer 1: the strict compile (clang-19, C++ for OpenCL, our metal_stdlib shim) with ``-fsyntax-only``:
         errors anywhere and warnings in the file itself (e.g. an unsuffixed double constant).
Layer 2: a walk of clang's JSON AST (``-Xclang -ast-dump=json``, same invocation), restricted to the
         file's own declarations: recursion (call-graph cycles), new/delete, throw/try, double, ``std::``,
         goto, static locals, lambdas, C-style vector bit-casts; backed by a token scan of the file's
         own (preprocessed) code for constructs the compile error drops from the AST.
Layer 3: kernel signatures and text: pointer/reference kernel parameters without an address space (or in
         ``thread``), parameters without an attribute, duplicate ``[[buffer(n)]]`` indices, includes other
         than ``<metal_*>`` and our own headers. Threadgroup variables outside kernel scope and threadgroup
         arrays sized at run time are compile errors given their own rules.

    python -m harness.msl_lint [files...]      (default: metal/*.metal; exit status 1 on findings)
"""

from __future__ import annotations

import argparse
import bisect
import dataclasses
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from . import msl_harness as h

ALLOWED_QUOTED_INCLUDES = ("gguf_common.h", "gguf_types.h", "gguf_tables.h")
BIG_INITIALIZER = 2000  # header tables above this many characters are blanked for the AST dump

RULES = {
    "compile": "strict C++-for-OpenCL compile error",
    "compile-warning": "strict compile warning in the file itself",
    "recursion": "recursion (Metal has no call stack for it)",
    "new-delete": "new/delete (no dynamic allocation in Metal)",
    "throw-try": "exceptions (not in Metal)",
    "double": "double (not in Metal)",
    "std": "std:: (Metal has no C++ standard library)",
    "goto": "goto (not in Metal)",
    "static-local": "static local variable (not in Metal)",
    "lambda": "lambda (needs MSL 3.2)",
    "function-pointer": "function pointer variable, parameter or member (Metal allows them only as template arguments)",
    "vector-cast": "C-style cast between vector types is a bit-cast here; write T(x) or as_type<T>(x)",
    "param-address-space": "kernel pointer/reference parameter needs device/constant/threadgroup",
    "param-attribute": "kernel parameter without an attribute",
    "duplicate-buffer": "two kernel parameters bound to the same [[buffer(n)]]",
    "include": "include other than <metal_*> and gguf_common.h/gguf_types.h/gguf_tables.h",
    "threadgroup-scope": "threadgroup variable outside kernel scope (Metal allows them only in kernel functions)",
    "threadgroup-size": "threadgroup array whose size is not a compile-time constant",
    "threadgroup-init": "threadgroup variable with an initializer (Metal rejects it; write it after the declaration)",
    "parse": "the harness cannot parse the kernel declarations",
}


@dataclasses.dataclass(frozen=True, order=True)
class Finding:
    file: str
    line: int
    rule: str
    message: str

    def __str__(self):
        return f"{self.file}:{self.line}: [{self.rule}] {self.message}"


_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]*([<"])([^>"]+)[>"]', re.M)
_COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)
_DIAG = re.compile(r"^(.*?):(\d+):(\d+): (error|fatal error|warning): (.*)$", re.M)


def _strip_comments(text: str) -> str:
    return _COMMENT.sub(lambda m: re.sub(r"[^\n]", " ", m.group()), text)


def _include_findings(path: Path, text: str) -> tuple[list[Finding], str]:
    """Findings for disallowed includes, and the text with them commented out (lines kept)."""
    findings = []
    for m in _INCLUDE.finditer(_strip_comments(text)):
        kind, name = m.group(1), m.group(2).strip()
        ok = (kind == "<" and name.startswith("metal_")) or (kind == '"' and name in ALLOWED_QUOTED_INCLUDES)
        if not ok:
            line = text.count("\n", 0, m.start()) + 1
            findings.append(Finding(str(path), line, "include", f"#include {kind}{name}{'>' if kind == '<' else kind}"))
    # commented out so that the strict compile can go on
    return findings, _comment_out(text, [f.line for f in findings])


def _comment_out(text: str, lines: list[int]) -> str:
    rows = text.split("\n")
    for ln in lines:
        rows[ln - 1] = "//" + rows[ln - 1]
    return "\n".join(rows)


class _Regions:
    """Which offsets of the preprocessed text belong to the main file."""

    def __init__(self, lines: h.LineMap, main: str, size: int):
        self.spans = []
        for k, start in enumerate(lines.starts):
            stop = lines.starts[k + 1] if k + 1 < len(lines.starts) else size
            if lines.entries[k][0] == main:
                self.spans.append((start, stop))
        self.begins = [s for s, _ in self.spans]

    def __contains__(self, offset) -> bool:
        k = bisect.bisect_right(self.begins, offset) - 1
        return k >= 0 and offset < self.spans[k][1]


def _blank_big_initializers(source: str, masked: str, regions: _Regions) -> str:
    out = list(source)
    for m in re.finditer(r"=\s*\{", masked):
        if m.start() in regions:
            continue
        b = m.end() - 1
        e = h._match(masked, b, "{", "}")
        if e - b > BIG_INITIALIZER:
            out[b + 1:e - 1] = [c if c == "\n" else " " for c in source[b + 1:e - 1]]
    return "".join(out)


def _node_offset(node) -> int | None:
    for key in ("loc", "range"):
        loc = node.get(key)
        if not loc:
            continue
        if key == "range":
            loc = loc.get("begin", {})
        if "offset" in loc:
            return loc["offset"]
        for sub in ("expansionLoc", "spellingLoc"):
            if sub in loc and "offset" in loc[sub]:
                return loc[sub]["offset"]
    return None


_SIMPLE_AST_RULES = {
    "CXXNewExpr": ("new-delete", "new expression"),
    "CXXDeleteExpr": ("new-delete", "delete expression"),
    "CXXThrowExpr": ("throw-try", "throw"),
    "CXXTryStmt": ("throw-try", "try block"),
    "GotoStmt": ("goto", "goto"),
    "IndirectGotoStmt": ("goto", "computed goto"),
    "LambdaExpr": ("lambda", "lambda expression"),
}
_FUNCTION_KINDS = ("FunctionDecl", "CXXMethodDecl", "CXXConstructorDecl", "CXXDestructorDecl", "CXXConversionDecl")


def _callee_name(node) -> str | None:
    stack = [node]
    while stack:
        n = stack.pop(0)
        kind = n.get("kind")
        if kind == "DeclRefExpr" and n.get("referencedDecl", {}).get("kind") in _FUNCTION_KINDS:
            return n["referencedDecl"].get("name")
        if kind in ("UnresolvedLookupExpr", "UnresolvedMemberExpr", "DependentScopeDeclRefExpr"):
            return n.get("name")
        if kind == "MemberExpr":
            return n.get("name")
        stack.extend(n.get("inner", []))
    return None


_FUNCTION_POINTER = re.compile(r"\((?:\s*__\w+)*\s*\*[^()]*\)\s*\(")  # float (__generic *__private)(float)


def _qual_type(node) -> str:
    return node.get("type", {}).get("qualType", "") if isinstance(node.get("type"), dict) else ""


def _ast_findings(ast: dict, regions: _Regions, locate) -> list[Finding]:
    findings: list[Finding] = []
    calls: dict[str, set[str]] = {}
    defined: dict[str, int] = {}

    def add(rule, offset, msg):
        file, line = locate(offset)
        findings.append(Finding(file, line, rule, msg))

    def walk(node, fn: str | None, in_body: bool, last_offset: int):
        off = _node_offset(node)
        off = last_offset if off is None else off
        kind = node.get("kind", "")
        if kind in _FUNCTION_KINDS and node.get("name"):
            fn = node["name"]
            if any(c.get("kind") == "CompoundStmt" for c in node.get("inner", [])):
                defined.setdefault(fn, off)
            calls.setdefault(fn, set())
        if kind in _SIMPLE_AST_RULES:
            rule, msg = _SIMPLE_AST_RULES[kind]
            add(rule, off, f"{msg}" + (f" in {fn}" if fn else ""))
        elif kind == "CallExpr" and fn and node.get("inner"):
            callee = _callee_name(node["inner"][0])
            if callee:
                calls[fn].add(callee)
        elif kind == "VarDecl" and in_body and node.get("storageClass") == "static":
            add("static-local", off, f"static local variable {node.get('name')!r}" + (f" in {fn}" if fn else ""))
        elif kind in ("VarDecl", "ParmVarDecl", "FieldDecl") and _FUNCTION_POINTER.search(_qual_type(node)):
            add("function-pointer", off, f"{node.get('name')!r} has type {_qual_type(node)!r}")
        elif kind == "CStyleCastExpr" and node.get("castKind") == "BitCast":
            add("vector-cast", off, f"C-style cast to {node.get('type', {}).get('qualType')} reinterprets bits")
        qt = _qual_type(node)
        if re.search(r"\bdouble\b", qt) and not node.get("isImplicit"):
            add("double", off, f"{kind} of type {qt!r}")
        body = in_body or kind == "CompoundStmt"
        for child in node.get("inner", []):
            walk(child, fn, body, off)

    def top(node):
        kind = node.get("kind")
        if kind in ("NamespaceDecl", "LinkageSpecDecl"):
            for child in node.get("inner", []):
                top(child)
            return
        off = _node_offset(node)
        if off is None or off not in regions or node.get("isImplicit"):
            return
        walk(node, None, False, off)

    for node in ast.get("inner", []):
        top(node)

    # recursion: cycles in the call graph of the file's own functions (Tarjan's SCC)
    graph = {f: {c for c in cs if c in defined} for f, cs in calls.items() if f in defined}
    index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            sccs.append(comp)

    for v in graph:
        if v not in index:
            strong(v)
    for comp in sccs:
        if len(comp) > 1 or comp[0] in graph.get(comp[0], ()):
            cycle = " -> ".join(sorted(comp) + [sorted(comp)[0]])
            add("recursion", defined[sorted(comp)[0]], f"recursive call cycle {cycle}")
    return findings


# strict-compile errors that have a rule of their own
_COMPILE_RULES = [
    (re.compile(r"cannot be declared in local address space|program scope variable must reside in"),
     "threadgroup-scope"),
    (re.compile(r"array size is not a constant expression|variable length array"), "threadgroup-size"),
]

_TOKEN_RULES = [
    ("threadgroup-init", re.compile(r"\b__local\s+[A-Za-z_][\w:<>,\s]*?\s+[A-Za-z_]\w*\s*(?:\[[^\];]*\]\s*)*=(?!=)"),
     "initialised threadgroup variable"),
    ("std", re.compile(r"\bstd\s*::"), "std:: used"),
    ("double", re.compile(r"\bdouble\b"), "double used"),
    ("new-delete", re.compile(r"\b(new|delete)\b"), "dynamic allocation"),
    ("throw-try", re.compile(r"\b(throw|try|catch)\b"), "exceptions used"),
    ("goto", re.compile(r"\bgoto\b"), "goto used"),
]


def _token_findings(masked: str, regions: _Regions, locate) -> list[Finding]:
    findings = []
    for start, stop in regions.spans:
        chunk = masked[start:stop]
        for rule, rx, msg in _TOKEN_RULES:
            for m in rx.finditer(chunk):
                if rule == "new-delete" and re.search(r"(operator|=)\s*$", chunk[:m.start()][-20:]):
                    continue  # operator new/delete declarations, `= delete`d functions
                file, line = locate(start + m.start())
                findings.append(Finding(file, line, rule, f"{msg}: {m.group().strip()!r}"))
    return findings


def _kernel_findings(prep: h.Prepared, locate) -> list[Finding]:
    findings = []
    for k in prep.kernels.values():
        file, line = locate(k.offset)
        seen: dict[int, str] = {}
        for p in k.params:
            if (p.is_pointer or p.is_reference) and p.address_space in (None, "generic", "private"):
                what = "no address space" if p.address_space in (None, "generic") else "the thread address space"
                findings.append(Finding(file, line, "param-address-space",
                                        f"kernel {k.name}: parameter {p.text!r} has {what}"))
            if p.attr is None:
                findings.append(Finding(file, line, "param-attribute", f"kernel {k.name}: parameter {p.text!r}"))
            if p.attr == "buffer":
                if p.attr_arg in seen:
                    findings.append(Finding(file, line, "duplicate-buffer",
                                            f"kernel {k.name}: [[buffer({p.attr_arg})]] on {seen[p.attr_arg]!r} "
                                            f"and {p.text!r}"))
                seen.setdefault(p.attr_arg, p.text)
    return findings


def lint(path, extra_include_dirs=()) -> list[Finding]:
    """All findings for one .metal file (an empty list means clean)."""
    path = Path(path).resolve()
    text = path.read_text()
    findings, cleaned = _include_findings(path, text)
    with tempfile.TemporaryDirectory(prefix="msl_lint_") as tmp:
        tmp_path = Path(tmp) / path.name
        tmp_path.write_text(cleaned)
        main = str(tmp_path)

        def fix(s: str) -> str:
            return s.replace(main, str(path))

        try:
            prep = h.prepare(tmp_path, include_dirs=[path.parent, *extra_include_dirs])
        except h.MslError as e:
            msg = fix(str(e))
            diags = [Finding(fix(m.group(1)), int(m.group(2)), "compile", m.group(5)) for m in _DIAG.finditer(msg)]
            return sorted(set(findings + (diags or [Finding(str(path), 0, "parse", msg)])))

        masked = h.mask(prep.source)
        regions = _Regions(prep.lines, main, len(prep.source))

        def locate(offset):
            file, line = prep.lines.locate(offset)
            return fix(file), line

        source = _blank_big_initializers(prep.source, masked, regions)
        unit = Path(tmp) / (path.stem + ".lint.cpp")
        unit.write_text(source)
        cmd = [h.CLANG, *h.OCL_FLAGS, "-Wall", "-Wno-unknown-attributes", "-Wno-unused-function",
               "-fno-fast-math", "-ffp-contract=off", f"-I{h.SHIM}", "-fsyntax-only", "-ferror-limit=0",
               "-fno-caret-diagnostics", "-Xclang", "-ast-dump=json", str(unit)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        for m in _DIAG.finditer(proc.stderr):
            file = fix(m.group(1))
            if m.group(4) == "warning":
                if file == str(path):
                    findings.append(Finding(file, int(m.group(2)), "compile-warning", m.group(5)))
            else:
                rule = next((r for rx, r in _COMPILE_RULES if rx.search(m.group(5))), "compile")
                findings.append(Finding(file, int(m.group(2)), rule, m.group(5)))
        try:
            ast = json.loads(proc.stdout)
        except json.JSONDecodeError:
            ast = {}
            findings.append(Finding(str(path), 0, "compile", "clang produced no AST"))
        findings += _ast_findings(ast, regions, locate)
        # the token scan backs up the AST walk where a compile error dropped the construct from the AST
        have = {(f.file, f.line, f.rule) for f in findings}
        findings += [f for f in _token_findings(masked, regions, locate) if (f.file, f.line, f.rule) not in have]
        findings += _kernel_findings(prep, locate)
    return sorted(set(findings))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.msl_lint", description=__doc__.split("\n")[0])
    ap.add_argument("files", nargs="*", type=Path, help=".metal files (default: metal/*.metal)")
    ap.add_argument("--rules", action="store_true", help="list the rules and exit")
    args = ap.parse_args(argv)
    if args.rules:
        for rule, what in RULES.items():
            print(f"{rule:20} {what}")
        return 0
    if not h.available():
        print(f"{h.CLANG} not found", file=sys.stderr)
        return 2
    files = args.files or sorted(h.METAL.glob("*.metal"))
    bad = 0
    for f in files:
        found = lint(f)
        for x in found:
            print(x)
        print(f"{'ok  ' if not found else 'FAIL'} {f}: {len(found)} finding(s)", file=sys.stderr)
        bad += bool(found)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
