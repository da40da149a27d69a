"""Frontend: Fortran source -> fparser2 parse tree -> IR kernels.

A visitor in the style of Loki's ``FParser2IR`` / PSyclone's ``Fparser2Reader``: one handler per
fparser2 node class (``_stmt_<Class>`` for statements, ``_expr_<Class>`` for expressions). A
node without a handler becomes an explicit :class:`ir.Unsupported` that keeps its line, never a
silent drop.

Lowerings done here so that later stages only see scalar statements and counted loops:
- whole-array and section assignments (``vx(1,:) = 0``, ``c = a*b + 1``) become loop nests
  whose innermost loop runs over the first (contiguous) dimension;
- SUM/MAXVAL/MINVAL/PRODUCT over arrays and sections are hoisted into a temporary computed by
  an explicit loop nest in column-major order (the order gfortran accumulates in);
- PROGRAM units: each outermost loop nest becomes a kernel of its own (see
  :func:`_extract_program`), PRINT / WRITE(*) being left out with a note.
"""

from __future__ import annotations

import math
import re
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import PurePath

from kernels.engine import ir
from kernels.engine.backends.common import INTRINSICS
from kernels.engine.report import Diagnostic, EngineError, FortranSyntaxError

_PARSER = None
_PARSE_LOCK = threading.Lock()

_FIXED_SUFFIXES = {".f", ".for", ".f77", ".ftn", ".fpp"}
_CPP_SUFFIXES = {".F", ".F90", ".F95", ".F03", ".F08", ".FOR", ".FPP", ".FTN", ".F77"}

_ARRAY_REDUCTIONS = {
    "sum",
    "maxval",
    "minval",
    "product",
    "count",
    "any",
    "all",
    "maxloc",
    "minloc",
}
# Intrinsics the frontend lowers itself (the printers never see them).
_LOWERED = {"count", "any", "all", "maxloc", "minloc", "dot_product"}
# Intrinsic inquiry functions whose array argument is not elementwise.
_INQUIRY = {"size", "lbound", "ubound", "kind", "huge", "tiny", "epsilon"}


def _parser():
    # Building the f2008 parser class tree costs ~0.3 s: do it once per process.
    global _PARSER
    if _PARSER is None:
        from fparser.two.parser import ParserFactory

        _PARSER = ParserFactory().create(std="f2008")
    return _PARSER


# --------------------------------------------------------------------------------------------
# Entry points


@dataclass
class ParsedFile:
    """Everything the frontend learnt from one file."""

    source: str  # after preprocessing
    fixed_form: bool
    kernels: list[ir.Kernel] = field(default_factory=list)
    notes: dict[str, list[str]] = field(default_factory=dict)  # per kernel name


def is_fixed_form(filename: str) -> bool:
    return PurePath(filename).suffix.lower() in _FIXED_SUFFIXES


def needs_preprocessing(filename: str) -> bool:
    return PurePath(filename).suffix in _CPP_SUFFIXES


def preprocess(source: str, *, filename: str = "input.F90") -> str:
    """Run the C preprocessor (as gfortran -cpp does) and return the expanded text."""
    argv = None
    # Line markers are kept (no -P) so that every output line goes back to its source line:
    # diagnostics then point at the file the user wrote, not at the expanded text.
    if shutil.which("cpp"):
        argv = ["cpp", "-traditional-cpp", "-undef", "-nostdinc", "-w", "-"]
    elif shutil.which("gfortran"):
        argv = ["gfortran", "-E", "-cpp", "-nostdinc", "-x", "f95-cpp-input", "-"]
    if argv is None:
        raise EngineError("no C preprocessor (cpp or gfortran) is installed")
    from kernels.engine import sandbox

    with sandbox.sandbox_tempdir(prefix="cpp-") as tmp:
        res = sandbox.run_sandboxed(argv, cwd=tmp, timeout_s=20, memory_mb=512, stdin=source)
    if res.timed_out or res.returncode != 0:
        raise FortranSyntaxError(
            f"preprocessing {filename} failed: {res.stderr.strip()[:500]}",
            [Diagnostic(1, 1, "C preprocessor failed")],
        )
    out = res.stdout
    return _realign_lines(out)


def _realign_lines(text: str) -> str:
    """Drop cpp line markers, placing each line of the user's file at its original number."""
    marker = re.compile(r'^#\s*(\d+)\s+"([^"]*)"')
    lines: list[str] = []
    current_is_input = True
    next_line = 1
    for raw in text.splitlines():
        m = marker.match(raw)
        if m:
            name = m.group(2)
            current_is_input = name in ("<stdin>", "-") or not name.startswith(("<", "/"))
            next_line = int(m.group(1))
            continue
        if not current_is_input:
            continue
        while len(lines) < next_line - 1:
            lines.append("")
        if len(lines) >= next_line:
            lines.append(raw)  # a macro expanding to several lines: keep them in order
        else:
            lines.append(raw)
        next_line += 1
    return "\n".join(lines) + "\n"


def parse_file(source: str, *, filename: str = "input.f90") -> ParsedFile:
    """Parse ``source`` and build one IR kernel per subroutine/function/extracted loop nest."""
    if needs_preprocessing(filename):
        source = preprocess(source, filename=filename)
    fixed = is_fixed_form(filename)
    tree = _parse_tree(source, fixed)
    builder = _FileBuilder(source, fixed, filename)
    builder.build(tree)
    return ParsedFile(source=source, fixed_form=fixed, kernels=builder.kernels, notes=builder.notes)


def _parse_tree(source: str, fixed: bool):
    from fparser.common.readfortran import FortranStringReader
    from fparser.common.sourceinfo import FortranFormat
    from fparser.two.symbol_table import SYMBOL_TABLES
    from fparser.two.utils import FparserException

    reader = FortranStringReader(source, ignore_comments=False)
    reader.set_format(FortranFormat(not fixed, False))
    # fparser's reader calls sys.exit(1) on some errors (a mismatched END name, say): in a
    # server that would end the worker thread. Report them as syntax errors instead.
    reader.exit_on_error = False
    reader.error = lambda message, item=None: _reader_error(message, item, reader)
    try:
        # fparser keeps module-level state (symbol tables): one parse at a time per process,
        # since the web service translates from several threads. The tables are cleared
        # first, so they neither grow for the life of the server nor keep a scope left open by
        # a parse that failed half-way.
        with _PARSE_LOCK:
            SYMBOL_TABLES.clear()
            tree = _parser()(reader)
    except FparserException as exc:
        raise _syntax_error(str(exc), source) from None
    except FortranSyntaxError:
        raise
    except Exception as exc:  # noqa: BLE001 - fparser fails on some bad input with its own bugs
        # (assertions, index errors...): whatever it raises, the source did not parse.
        line = max(1, int(getattr(reader, "linecount", 1) or 1))
        detail = str(exc) or type(exc).__name__
        raise FortranSyntaxError(
            f"could not parse the source near line {line}: {detail}",
            [Diagnostic(line, 1, detail)],
        ) from None
    if tree is None or not tree.children:
        raise FortranSyntaxError("no Fortran program unit found", [Diagnostic(1, 1, "empty")])
    return tree


def _reader_error(message: str, item, reader) -> None:
    if item is not None and getattr(item, "span", None):
        line = item.span[0]
    else:  # fparser passes no item for some errors: the line it was reading is the best guess
        line = max(1, int(getattr(reader, "linecount", 1) or 1))
    message = message.removesuffix(" Ignoring.")  # fparser's wording; we do not ignore it
    raise FortranSyntaxError(
        f"syntax error at line {line}: {message}", [Diagnostic(line, 1, message)]
    )


def _syntax_error(message: str, source: str) -> FortranSyntaxError:
    line = 1
    m = re.search(r"at line (\d+)", message)
    if m:
        line = int(m.group(1))
    text = ""
    m2 = re.search(r">>>(.*)", message)
    if m2:
        text = m2.group(1).strip()
    lines = source.splitlines()
    column = 1
    if 1 <= line <= len(lines):
        src_line = lines[line - 1]
        column = len(src_line) - len(src_line.lstrip()) + 1
        column = _guess_column(src_line) or column
    msg = f"syntax error at line {line}"
    if text:
        msg += f": {text}"
    return FortranSyntaxError(msg, [Diagnostic(line, column, msg)])


def _guess_column(line: str) -> int | None:
    """Best-effort column of the fault: an unbalanced parenthesis or a dangling operator."""
    code = line.split("!")[0].rstrip()
    depth = 0
    first_open = None
    for k, ch in enumerate(code):
        if ch == "(":
            if depth == 0:
                first_open = k
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                return k + 1
    if depth > 0 and first_open is not None:
        return first_open + 1
    if code and code[-1] in "+-*/=,":
        return len(code)
    return None


# --------------------------------------------------------------------------------------------
# Small utilities


def _cls(node) -> str:
    return type(node).__name__


def _line(node) -> int:
    item = getattr(node, "item", None)
    if item is not None and getattr(item, "span", None):
        return item.span[0]
    for c in getattr(node, "children", []) or []:
        if hasattr(c, "children") or hasattr(c, "item"):
            ln = _line(c)
            if ln:
                return ln
    return 0


def _end_line(node) -> int:
    item = getattr(node, "item", None)
    if item is not None and getattr(item, "span", None):
        return item.span[1]
    children = [c for c in (getattr(node, "children", []) or []) if c is not None]
    for c in reversed(children):
        if hasattr(c, "children") or hasattr(c, "item"):
            ln = _end_line(c)
            if ln:
                return ln
    return 0


def _name(node) -> str:
    return str(node).lower()


class _Unsupported(Exception):
    def __init__(self, construct: str, line: int = 0, text: str = ""):
        super().__init__(construct)
        self.construct = construct
        self.line = line
        self.text = text


_OPS = {
    ".gt.": ">",
    ".lt.": "<",
    ".ge.": ">=",
    ".le.": "<=",
    ".eq.": "==",
    ".ne.": "/=",
    ">": ">",
    "<": "<",
    ">=": ">=",
    "<=": "<=",
    "==": "==",
    "/=": "/=",
    ".and.": "and",
    ".or.": "or",
    ".eqv.": "eqv",
    ".neqv.": "neqv",
    "+": "+",
    "-": "-",
    "*": "*",
    "/": "/",
    "**": "**",
}


def _real_kind_for_precision(p: int) -> int:
    if p <= 6:
        return 4
    if p <= 15:
        return 8
    return 16


# --------------------------------------------------------------------------------------------
# Constant evaluation (PARAMETERs, kinds)


def const_value(e: ir.Expr, consts: dict[str, ir.Const]) -> ir.Const:
    """Evaluate a constant expression to a typed constant (raises ir.NotConstant)."""
    if isinstance(e, ir.Const):
        return e
    if isinstance(e, ir.Var):
        if e.name in consts:
            return consts[e.name]
        raise ir.NotConstant(e.name)
    if isinstance(e, ir.UnaryOp):
        v = const_value(e.operand, consts)
        if e.op == "-":
            return ir.Const(-v.value, v.type)
        if e.op == "not":
            return ir.Const(not v.value, ir.LOGICAL)
        return v
    if isinstance(e, ir.BinOp):
        a, b = const_value(e.left, consts), const_value(e.right, consts)
        t = _num_type(a.type, b.type)
        x, y = a.value, b.value
        if e.op == "+":
            v = x + y
        elif e.op == "-":
            v = x - y
        elif e.op == "*":
            v = x * y
        elif e.op == "/":
            if t.base == "integer":
                q = abs(x) // abs(y)
                v = q if (x >= 0) == (y >= 0) else -q
            else:
                v = x / y
        elif e.op == "**":
            if a.type.base == "integer" and b.type.base == "integer":
                v = x**y if y >= 0 else (1 if abs(x) == 1 else 0)
                t = a.type
            else:
                v = float(x) ** y
                if b.type.base == "integer":
                    t = a.type
        else:
            raise ir.NotConstant(e.op)
        return _typed(v, t)
    if isinstance(e, ir.Call):
        return _const_call(e, consts)
    raise ir.NotConstant(repr(e))


def _num_type(a: ir.FType, b: ir.FType) -> ir.FType:
    if a.base == "real" or b.base == "real":
        return ir.FType("real", max(t.kind for t in (a, b) if t.base == "real"))
    return ir.FType("integer", max(a.kind, b.kind))


def _typed(v, t: ir.FType) -> ir.Const:
    if t.base == "integer":
        return ir.Const(int(v), t)
    if t.base == "real":
        v = float(v)
        if t.kind == 4:
            import numpy as np

            v = float(np.float32(v))
        return ir.Const(v, t)
    if t.base == "logical":
        return ir.Const(bool(v), t)
    return ir.Const(v, t)


_CONST_MATH = {
    "sqrt": math.sqrt,
    "exp": math.exp,
    "log": math.log,
    "log10": math.log10,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "atan": math.atan,
    "asin": math.asin,
    "acos": math.acos,
    "abs": abs,
    "datan": math.atan,
    "dsqrt": math.sqrt,
}


def _const_call(e: ir.Call, consts: dict[str, ir.Const]) -> ir.Const:
    n = e.name
    if n == "kind":
        a = const_value(e.args[0], consts)
        return ir.Const(a.type.kind, ir.INTEGER)
    if n == "selected_real_kind":
        p = const_value(
            e.keywords.get("p", e.args[0] if e.args else ir.Const(6, ir.INTEGER)), consts
        )
        return ir.Const(_real_kind_for_precision(int(p.value)), ir.INTEGER)
    if n == "selected_int_kind":
        r = int(const_value(e.args[0], consts).value)
        return ir.Const(4 if r <= 9 else 8, ir.INTEGER)
    args = [const_value(a, consts) for a in e.args]
    if n in _CONST_MATH:
        return _typed(_CONST_MATH[n](args[0].value), args[0].type)
    if n == "atan2":
        return _typed(math.atan2(args[0].value, args[1].value), args[0].type)
    if n in ("max", "min"):
        t = args[0].type
        for a in args[1:]:
            t = _num_type(t, a.type)
        f = max if n == "max" else min
        return _typed(f(a.value for a in args), t)
    if n in ("dble", "dfloat"):
        return _typed(args[0].value, ir.REAL8)
    if n == "real" or n == "float":
        kind = 4
        if len(args) > 1:
            kind = int(args[1].value)
        elif "kind" in e.keywords:
            kind = int(const_value(e.keywords["kind"], consts).value)
        return _typed(args[0].value, ir.FType("real", kind))
    if n == "int":
        return ir.Const(int(args[0].value), ir.INTEGER)
    if n == "nint":
        x = args[0].value
        return ir.Const(int(math.floor(abs(x) + 0.5)) * (1 if x >= 0 else -1), ir.INTEGER)
    if n == "mod":
        x, y = args[0].value, args[1].value
        if args[0].type.base == "integer":
            return ir.Const(int(math.fmod(x, y)), args[0].type)
        return _typed(math.fmod(x, y), args[0].type)
    if n == "huge":
        t = args[0].type
        if t.base == "integer":
            return ir.Const(2**31 - 1 if t.kind == 4 else 2**63 - 1, t)
        return ir.Const(3.4028234663852886e38 if t.kind == 4 else 1.7976931348623157e308, t)
    if n == "epsilon":
        t = args[0].type
        return ir.Const(1.1920928955078125e-07 if t.kind == 4 else 2.220446049250313e-16, t)
    raise ir.NotConstant(n)


# --------------------------------------------------------------------------------------------
# Scopes


class _Scope:
    """Declarations visible while building one procedure."""

    def __init__(self, parent: _Scope | None = None):
        self.parent = parent
        self.decls: dict[str, ir.Decl] = {}
        self.consts: dict[str, ir.Const] = dict(parent.consts) if parent else {}
        self.implicit: dict[str, ir.FType] | None = None  # None = default rules
        self.implicit_none = False
        self.procedures: dict[str, object] = dict(parent.procedures) if parent else {}
        self.pointers: set[str] = set()

    def implicit_type(self, name: str) -> ir.FType:
        scope: _Scope | None = self
        while scope is not None:
            if scope.implicit is not None:
                t = scope.implicit.get(name[0])
                if t is not None:
                    return t
                if scope.implicit_none:
                    break
            elif scope.implicit_none:
                break
            scope = scope.parent
        return ir.INTEGER if name[0] in "ijklmn" else ir.REAL4

    def lookup(self, name: str) -> ir.Decl | None:
        scope: _Scope | None = self
        while scope is not None:
            if name in scope.decls:
                return scope.decls[name]
            scope = scope.parent
        return None

    def is_array(self, name: str) -> bool:
        d = self.lookup(name)
        return d is not None and bool(d.dims)


# --------------------------------------------------------------------------------------------
# Procedure builder


@dataclass
class _ProcInfo:
    node: object
    kind: str  # subroutine | function | program
    name: str
    module: str | None
    proc: ir.Procedure | None = None
    scope: _Scope | None = None
    unsupported: list[ir.Unsupported] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    internal: list[_ProcInfo] = field(default_factory=list)
    start: int = 0
    end: int = 0
    # For programs: parse-tree nodes of the top-level executable statements.
    exec_nodes: list = field(default_factory=list)
    stmt_nodes: dict[int, object] = field(default_factory=dict)
    uses: list[str] = field(default_factory=list)
    allocations: dict[str, list[ir.Dim]] = field(default_factory=dict)


class _ProcBuilder:
    """Builds the IR of one procedure (or program) from its fparser2 subtree."""

    def __init__(self, info: _ProcInfo, scope: _Scope, file: _FileBuilder):
        self.info = info
        self.scope = scope
        self.file = file
        self.unsupported = info.unsupported
        self.notes = info.notes
        self.temps = 0
        self.extra_decls: dict[str, ir.Decl] = {}
        self.line_hint = 0  # line of the enclosing statement (one-line IF actions have none)

    # -- specification part ---------------------------------------------------------------------
    def spec(self, spec_node) -> None:
        for node in _flatten(spec_node):
            self._spec_stmt(node)
        # Every name given a dimension/intent only through attribute statements gets a type now.
        for d in self.scope.decls.values():
            if d.type is None:  # type: ignore[comparison-overlap]
                d.type = self.scope.implicit_type(d.name)

    def _spec_stmt(self, node) -> None:
        cls = _cls(node)
        line = _line(node)
        if cls in ("Comment", "Implicit_Part", "Contains_Stmt"):
            return
        if cls == "Implicit_Stmt":
            self._implicit(node)
        elif cls == "Use_Stmt":
            self._use(node)
        elif cls == "Type_Declaration_Stmt":
            self._type_decl(node)
        elif cls == "Dimension_Stmt":
            for name_node, shape in node.items[0]:
                d = self._decl(_name(name_node), line)
                d.dims = self._dims(shape, line)
        elif cls == "Allocatable_Stmt":
            for item in node.children[1].children if len(node.children) > 1 else []:
                nm = item if _cls(item) == "Name" else item.children[0]
                d = self._decl(_name(nm), line)
                d.allocatable = True
        elif cls == "Intent_Stmt":
            intent = str(node.items[0]).lower().replace(" ", "")
            for nm in node.items[1].children:
                self._decl(_name(nm), line).intent = intent
        elif cls == "Parameter_Stmt":
            for nc in node.items[1].children:
                nm, ex = nc.items
                d = self._decl(_name(nm), line)
                self._set_parameter(d, self.expr(ex))
        elif cls in ("Save_Stmt", "External_Stmt", "Intrinsic_Stmt"):
            return
        elif cls == "Data_Stmt":
            self._unsupported("DATA statement", node)
        elif cls in ("Derived_Type_Def", "Type_Declaration_Stmt_Derived"):
            self._unsupported("derived TYPE definition", node)
        elif cls in ("Interface_Block",):
            return
        elif cls in ("Common_Stmt", "Equivalence_Stmt", "Namelist_Stmt"):
            self._unsupported(cls.replace("_Stmt", "").upper() + " statement", node)
        elif cls in ("Pointer_Stmt", "Target_Stmt"):
            self._unsupported(cls.replace("_Stmt", "").upper() + " attribute", node)
        elif cls == "Format_Stmt":
            return
        else:
            self._unsupported(f"declaration {cls}", node)

    def _unsupported(self, construct: str, node, line: int | None = None) -> ir.Unsupported:
        ln = line if line is not None else _line(node)
        text = str(node).strip() if node is not None else ""
        u = ir.Unsupported(construct, ln, self.file.column_of(ln, text), text[:200])
        self.unsupported.append(u)
        return u

    def _decl(self, name: str, line: int) -> ir.Decl:
        d = self.scope.decls.get(name)
        if d is None:
            d = ir.Decl(name, None, line=line)  # type: ignore[arg-type]
            self.scope.decls[name] = d
        return d

    def _implicit(self, node) -> None:
        spec = node.items[0]
        if isinstance(spec, str) and spec.upper() == "NONE":
            self.scope.implicit_none = True
            self.scope.implicit = {}
            return
        mapping = self.scope.implicit if self.scope.implicit is not None else {}
        for c in "abcdefghijklmnopqrstuvwxyz":
            mapping.setdefault(c, ir.INTEGER if c in "ijklmn" else ir.REAL4)
        for ispec in spec.children:
            tnode, letters = ispec.items
            t = self._type_spec(tnode, _line(node))
            for ls in letters.children:
                lo, hi = (
                    (str(x).lower() for x in ls.items if x is not None)
                    if ls.items[1]
                    else (
                        str(ls.items[0]).lower(),
                        str(ls.items[0]).lower(),
                    )
                )
                for code in range(ord(lo), ord(hi) + 1):
                    mapping[chr(code)] = t
        self.scope.implicit = mapping

    def _use(self, node) -> None:
        modname = _name(node.items[2])
        self.info.uses.append(str(node))
        if modname == "iso_fortran_env":
            for nm, k in (("real32", 4), ("real64", 8), ("int32", 4), ("int64", 8)):
                self.scope.consts[nm] = ir.Const(k, ir.INTEGER)
            return
        mod = self.file.modules.get(modname)
        if mod is None:
            self._unsupported(f"USE of module {modname} not defined in this file", node)
            return
        only = None
        if len(node.items) > 4 and node.items[4] is not None:
            only = {str(x).lower() for x in node.items[4].children}
        for nm, c in mod["consts"].items():
            if only is None or nm in only:
                self.scope.consts[nm] = c
        for nm, p in mod["procs"].items():
            if only is None or nm in only:
                self.scope.procedures[nm] = p

    def _type_spec(self, tnode, line: int) -> ir.FType:
        cls = _cls(tnode)
        if cls == "Declaration_Type_Spec":
            raise _Unsupported("derived TYPE variable", line, str(tnode))
        if cls != "Intrinsic_Type_Spec":
            raise _Unsupported(f"type {tnode}", line, str(tnode))
        base = str(tnode.items[0]).lower()
        sel = tnode.items[1]
        if base == "double precision":
            return ir.REAL8
        if base == "double complex":
            raise _Unsupported("COMPLEX type", line, str(tnode))
        if base not in ("integer", "real", "logical"):
            raise _Unsupported(f"{base.upper()} type", line, str(tnode))
        kind = 4
        if sel is not None:
            if _cls(sel) == "Kind_Selector":
                if sel.items[0] == "*":
                    kind = int(str(sel.items[1]))
                else:
                    kexpr = self.expr(sel.items[1])
                    try:
                        kind = int(const_value(kexpr, self.scope.consts).value)
                    except ir.NotConstant:
                        raise _Unsupported(f"unknown kind {sel}", line, str(tnode)) from None
            else:
                raise _Unsupported(f"type selector {sel}", line, str(tnode))
        if base == "real" and kind not in (4, 8):
            raise _Unsupported(f"REAL(kind={kind})", line, str(tnode))
        if base == "integer" and kind not in (1, 2, 4, 8):
            raise _Unsupported(f"INTEGER(kind={kind})", line, str(tnode))
        if base == "integer" and kind in (1, 2):
            kind = 4
        if base == "logical":
            kind = 4
        return ir.FType(base, kind)

    def _type_decl(self, node) -> None:
        line = _line(node)
        tnode, attrs, entities = node.items
        try:
            t = self._type_spec(tnode, line)
        except _Unsupported as u:
            self._unsupported(u.construct, node)
            for ent in entities.children:
                nm = _name(ent.items[0])
                d = self._decl(nm, line)
                d.type = ir.REAL8
            return
        intent = None
        parameter = False
        allocatable = False
        dims: list[ir.Dim] = []
        if attrs is not None:
            for a in attrs.children:
                acls = _cls(a)
                text = str(a).lower()
                if acls == "Intent_Attr_Spec":
                    intent = str(a.items[1]).lower().replace(" ", "")
                elif acls == "Dimension_Attr_Spec":
                    dims = self._dims(a.items[1], line)
                elif text == "parameter":
                    parameter = True
                elif text == "allocatable":
                    allocatable = True
                elif text in ("pointer", "target"):
                    self._unsupported(f"{text.upper()} attribute", node)
                    if text == "pointer":
                        for ent in entities.children:
                            self.scope.pointers.add(_name(ent.items[0]))
                elif text in ("save", "contiguous", "value", "optional", "external"):
                    if text == "optional":
                        self._unsupported("OPTIONAL argument", node)
                else:
                    self._unsupported(f"attribute {text.upper()}", node)
        for ent in entities.children:
            nm = _name(ent.items[0])
            d = self._decl(nm, line)
            d.type = t
            if intent:
                d.intent = intent
            d.allocatable = d.allocatable or allocatable
            edims = dims
            if ent.items[1] is not None:
                edims = self._dims(ent.items[1], line)
            if edims:
                d.dims = edims
            if (
                len(ent.items) > 2
                and ent.items[2] is not None
                and _cls(ent.items[2]) not in ("Initialization",)
            ):
                self._unsupported("CHARACTER length", node)
            init = ent.items[3] if len(ent.items) > 3 else None
            if init is not None:
                value = self.expr(init.items[1])
                if parameter:
                    self._set_parameter(d, value)
                else:
                    self._unsupported("initialised variable (implicit SAVE)", node)

    def _set_parameter(self, d: ir.Decl, value: ir.Expr) -> None:
        if d.type is None:  # type: ignore[comparison-overlap]
            d.type = self.scope.implicit_type(d.name)
        d.parameter = value
        if d.dims:
            self._unsupported(f"array PARAMETER {d.name}", None, d.line)
            return
        try:
            c = const_value(value, self.scope.consts)
        except (ir.NotConstant, ZeroDivisionError, ValueError, OverflowError):
            self._unsupported(f"PARAMETER {d.name} is not a constant expression", None, d.line)
            return
        self.scope.consts[d.name] = _typed(c.value, d.type)

    def _dims(self, shape, line: int) -> list[ir.Dim]:
        if _cls(shape) == "Assumed_Size_Spec":
            # x(*), y(n, *), z(2:*): explicit leading dims, then an open last dimension.
            explicit, last_lower = shape.items
            dims = self._dims(explicit, line) if explicit is not None else []
            lo = self.expr(last_lower) if last_lower is not None else ir.Const(1, ir.INTEGER)
            return dims + [ir.Dim(lo, None)]
        dims = []
        for spec in shape.children if hasattr(shape, "children") else shape:
            cls = _cls(spec)
            if cls == "Explicit_Shape_Spec":
                lo, hi = spec.items
                dims.append(
                    ir.Dim(
                        self.expr(lo) if lo is not None else ir.Const(1, ir.INTEGER), self.expr(hi)
                    )
                )
            elif cls in ("Assumed_Shape_Spec", "Deferred_Shape_Spec"):
                lo = spec.items[0] if spec.items else None
                dims.append(
                    ir.Dim(self.expr(lo) if lo is not None else ir.Const(1, ir.INTEGER), None)
                )
            elif cls == "Assumed_Size_Spec":
                items = [x for x in spec.items if x is not None]
                for sub in items:
                    if hasattr(sub, "children") and _cls(sub).endswith("_List"):
                        dims.extend(self._dims(sub, line))
                lo = ir.Const(1, ir.INTEGER)
                dims.append(ir.Dim(lo, None))
            elif cls == "Name" or cls.endswith("Constant") or cls.endswith("Expr"):
                dims.append(ir.Dim(ir.Const(1, ir.INTEGER), self.expr(spec)))
            else:
                # Deferred shape lists show up as a bare ':' string sometimes.
                if str(spec).strip() == ":":
                    dims.append(ir.Dim(ir.Const(1, ir.INTEGER), None))
                else:
                    raise _Unsupported(f"array spec {spec}", line, str(spec))
        return dims

    # -- names --------------------------------------------------------------------------------
    def ensure_declared(self, name: str, line: int) -> None:
        if name in self.scope.consts:
            return
        if self.scope.lookup(name) is None:
            if name in self.scope.procedures or name in INTRINSICS:
                return
            d = ir.Decl(name, self.scope.implicit_type(name), line=line)
            self.scope.decls[name] = d

    def new_temp(self, prefix: str, t: ir.FType) -> str:
        self.temps += 1
        name = f"{prefix}{self.temps}"
        self.scope.decls[name] = ir.Decl(name, t)
        return name

    # -- expressions --------------------------------------------------------------------------
    def expr(self, node) -> ir.Expr:
        cls = _cls(node)
        handler = getattr(self, f"_expr_{cls}", None)
        if handler is None:
            raise _Unsupported(f"expression {cls.replace('_', ' ').lower()}", 0, str(node))
        return handler(node)

    def _expr_Name(self, node) -> ir.Expr:
        name = _name(node)
        if name in self.scope.pointers:
            raise _Unsupported("POINTER variable", 0, name)
        return ir.Var(name)

    def _expr_Int_Literal_Constant(self, node) -> ir.Expr:
        value, kind = node.items
        k = 4
        if kind is not None:
            k = self._kind_value(kind)
        return ir.Const(int(value), ir.FType("integer", 8 if k == 8 else 4))

    def _kind_value(self, kind) -> int:
        text = str(kind).lower()
        if text.isdigit():
            return int(text)
        c = self.scope.consts.get(text)
        if c is None:
            raise _Unsupported(f"unknown kind parameter {text}", 0, text)
        return int(c.value)

    def _expr_Real_Literal_Constant(self, node) -> ir.Expr:
        text, kind = node.items
        t = text.lower()
        k = 4
        if "d" in t:
            k = 8
            t = t.replace("d", "e")
        if kind is not None:
            k = self._kind_value(kind)
        if k not in (4, 8):
            raise _Unsupported(f"REAL(kind={k}) literal", 0, text)
        return _typed(float(t), ir.FType("real", k))

    def _expr_Logical_Literal_Constant(self, node) -> ir.Expr:
        return ir.Const(str(node.items[0]).upper() == ".TRUE.", ir.LOGICAL)

    def _expr_Parenthesis(self, node) -> ir.Expr:
        return self.expr(node.items[1])

    def _binop(self, node) -> ir.Expr:
        left, op, right = node.items
        pyop = _OPS.get(str(op).lower())
        if pyop is None:
            raise _Unsupported(f"operator {op}", 0, str(node))
        return ir.BinOp(pyop, self.expr(left), self.expr(right))

    _expr_Level_2_Expr = _binop
    _expr_Add_Operand = _binop
    _expr_Mult_Operand = _binop
    _expr_Level_4_Expr = _binop
    _expr_Or_Operand = _binop
    _expr_Equiv_Operand = _binop
    _expr_Level_5_Expr = _binop
    _expr_Expr = _binop

    def _expr_Level_2_Unary_Expr(self, node) -> ir.Expr:
        op, operand = node.items
        e = self.expr(operand)
        if str(op) == "-" and isinstance(e, ir.Const) and e.type.base != "logical":
            return ir.Const(-e.value, e.type)
        return ir.UnaryOp(str(op), e)

    def _expr_And_Operand(self, node) -> ir.Expr:
        op, operand = node.items
        return ir.UnaryOp("not", self.expr(operand))

    def _expr_Char_Literal_Constant(self, node) -> ir.Expr:
        raise _Unsupported("CHARACTER constant", 0, str(node))

    def _expr_Array_Constructor(self, node) -> ir.Expr:
        raise _Unsupported("array constructor", 0, str(node))

    def _expr_Data_Ref(self, node) -> ir.Expr:
        raise _Unsupported("derived-type component access (%)", 0, str(node))

    def _expr_Structure_Constructor(self, node) -> ir.Expr:
        return self._call_node(node.items[0], node.items[1])

    def _expr_Part_Ref(self, node) -> ir.Expr:
        name = _name(node.items[0])
        subs = node.items[1]
        decl = self.scope.lookup(name)
        if name in self.scope.pointers:
            raise _Unsupported("POINTER variable", 0, str(node))
        if decl is not None and decl.dims:
            return ir.ArrayRef(name, [self._subscript(s) for s in subs.children])
        if decl is not None and not decl.dims and name not in self.scope.procedures:
            if name in INTRINSICS or self.file.find_procedure(name):
                return self._call_node(node.items[0], subs)
            raise _Unsupported(
                f"{name} is used as an array but not declared with dimensions", 0, str(node)
            )
        return self._call_node(node.items[0], subs)

    def _expr_Function_Reference(self, node) -> ir.Expr:
        return self._call_node(node.items[0], node.items[1])

    def _expr_Intrinsic_Function_Reference(self, node) -> ir.Expr:
        name = _name(node.items[0])
        if name not in INTRINSICS and name not in _LOWERED and name not in self.scope.procedures:
            raise _Unsupported(f"intrinsic {name.upper()}", 0, str(node))
        if name == "dot_product":
            # DOT_PRODUCT(x, y) of reals is SUM(x*y), accumulated in order.
            call = self._call_node(node.items[0], node.items[1])
            if len(call.args) != 2:
                raise _Unsupported("DOT_PRODUCT arguments", 0, str(node))
            return ir.Call("sum", [ir.BinOp("*", call.args[0], call.args[1])])
        return self._call_node(node.items[0], node.items[1])

    def _call_node(self, name_node, args_node) -> ir.Expr:
        name = _name(name_node)
        args: list[ir.Expr] = []
        kw: dict[str, ir.Expr] = {}
        for a in args_node.children if args_node is not None else []:
            if _cls(a) == "Actual_Arg_Spec":
                kw[str(a.items[0]).lower()] = self.expr(a.items[1])
            elif _cls(a) == "Subscript_Triplet":
                args.append(self._subscript(a))  # type: ignore[arg-type]
            else:
                args.append(self.expr(a))
        if name not in INTRINSICS and name not in self.scope.procedures and name not in _LOWERED:
            proc = self.file.find_procedure(name)
            if proc is None:
                raise _Unsupported(f"call of unknown function {name.upper()}", 0, name)
            self.scope.procedures[name] = proc
        if name in ("dim",) and "dim" in kw:
            pass
        return ir.Call(name, args, kw)

    def _subscript(self, s) -> ir.Expr | ir.Slice:
        if _cls(s) == "Subscript_Triplet":
            lo, hi, st = s.items
            return ir.Slice(
                self.expr(lo) if lo is not None else None,
                self.expr(hi) if hi is not None else None,
                self.expr(st) if st is not None else None,
            )
        return self.expr(s)

    # -- statements ---------------------------------------------------------------------------
    def body(self, nodes) -> list[ir.Stmt]:
        out: list[ir.Stmt] = []
        nodes = [n for n in nodes if n is not None]
        k = 0
        while k < len(nodes):
            node = nodes[k]
            k += 1
            out.extend(self.stmt(node))
        return out

    def stmt(self, node) -> list[ir.Stmt]:
        cls = _cls(node)
        if cls in ("Comment", "Continue_Stmt", "Format_Stmt", "Deallocate_Stmt"):
            return []
        handler = getattr(self, f"_stmt_{cls}", None)
        line = _line(node) or self.line_hint
        if handler is None:
            return [self._unsupported(_construct_name(cls), node, line)]
        try:
            return handler(node)
        except _Unsupported as u:
            return [self._unsupported(u.construct, node, u.line or line)]

    def _stmt_Assignment_Stmt(self, node) -> list[ir.Stmt]:
        line = _line(node)
        lhs_node, _, rhs_node = node.items
        if _cls(lhs_node) not in ("Name", "Part_Ref"):
            raise _Unsupported(_lhs_construct(lhs_node), line, str(node))
        target = self.expr(lhs_node)
        value = self.expr(rhs_node)
        for e in (target, value):
            for sub in ir.walk_expr(e):
                if isinstance(sub, ir.Var):
                    self.ensure_declared(sub.name, line)
        if isinstance(target, ir.Call):
            # ``f(x) = ...`` where f is no array: a statement function.
            raise _Unsupported("statement function", line, str(node))
        pre: list[ir.Stmt] = []
        value = self._hoist_reductions(value, pre, line)
        if isinstance(target, ir.Var) and target.name in self.info.proc_result_names:
            pass
        if self._is_array_valued(target):
            return pre + self._lower_array_assignment(target, value, line)
        if self._is_array_valued(value):
            raise _Unsupported("array-valued expression assigned to a scalar", line, str(node))
        return pre + [ir.Assign(target, value, line)]

    def _stmt_Pointer_Assignment_Stmt(self, node) -> list[ir.Stmt]:
        raise _Unsupported("pointer assignment (=>)", _line(node), str(node))

    def _stmt_If_Stmt(self, node) -> list[ir.Stmt]:
        line = _line(node)
        cond_node, action = node.items
        self.line_hint = line
        body = self.stmt(action)
        self.line_hint = 0
        if not body and _cls(action) in ("Print_Stmt", "Write_Stmt"):
            return []
        pre: list[ir.Stmt] = []
        cond = self._hoist_reductions(self.expr(cond_node), pre, line)
        self._declare_names(cond, line)
        return pre + [ir.If([(cond, body)], [], line)]

    def _stmt_If_Construct(self, node) -> list[ir.Stmt]:
        line = _line(node)
        branches: list[tuple[ir.Expr, list[ir.Stmt]]] = []
        orelse: list[ir.Stmt] | None = None
        current: list = []
        cond = None
        pre: list[ir.Stmt] = []

        def flush():
            nonlocal current
            stmts = self.body(current)
            current = []
            return stmts

        for child in node.children:
            c = _cls(child)
            if c == "If_Then_Stmt":
                cond = self._hoist_reductions(self.expr(child.items[0]), pre, line)
                self._declare_names(cond, line)
            elif c == "Else_If_Stmt":
                branches.append((cond, flush()))
                sub: list[ir.Stmt] = []
                cond = self._hoist_reductions(self.expr(child.items[0]), sub, _line(child))
                if sub:
                    raise _Unsupported(
                        "array reduction in ELSE IF condition", _line(child), str(child)
                    )
                self._declare_names(cond, line)
            elif c == "Else_Stmt":
                branches.append((cond, flush()))
                cond = None
                orelse = []
            elif c == "End_If_Stmt":
                if cond is not None:
                    branches.append((cond, flush()))
                else:
                    orelse = flush()
            else:
                current.append(child)
        return pre + [ir.If(branches, orelse or [], line)]

    def _declare_names(self, e: ir.Expr, line: int) -> None:
        for sub in ir.walk_expr(e):
            if isinstance(sub, ir.Var):
                self.ensure_declared(sub.name, line)

    def _stmt_Block_Nonlabel_Do_Construct(self, node) -> list[ir.Stmt]:
        # fparser puts a comment that precedes a nested DO inside that construct, before its head.
        children = [c for c in node.children if _cls(c) != "Comment"]
        head = children[0]
        body_nodes = [c for c in children[1:] if _cls(c) != "End_Do_Stmt"]
        label = getattr(head.item, "name", None)
        return self._do(head, body_nodes, label.lower() if label else None)

    _stmt_Block_Label_Do_Construct = None  # set below

    def _label_do(self, node) -> list[ir.Stmt]:
        children = [c for c in node.children if _cls(c) != "Comment"]
        head = children[0]
        rest = children[1:]
        # Shared terminal labels: fparser keeps the inner `DO 10` as a sibling statement.
        return self._label_do_from(head, rest)

    def _label_do_from(self, head, rest) -> list[ir.Stmt]:
        body_nodes = []
        k = 0
        while k < len(rest):
            c = rest[k]
            if _cls(c) == "Label_Do_Stmt":
                body_nodes.append(("nested", c, rest[k + 1 :]))
                break
            body_nodes.append(c)
            k += 1
        # Drop the terminal CONTINUE / END DO (an action terminal statement stays in the body).
        flat = []
        for item in body_nodes:
            flat.append(item)
        if (
            flat
            and not isinstance(flat[-1], tuple)
            and _cls(flat[-1]) in ("Continue_Stmt", "End_Do_Stmt")
        ):
            flat = flat[:-1]
        label = None
        stmts_nodes = []
        nested_stmts: list[ir.Stmt] = []
        for item in flat:
            if isinstance(item, tuple):
                _, nhead, nrest = item
                nested_stmts = self._label_do_from(nhead, list(nrest))
            else:
                stmts_nodes.append(item)
        loops = self._do(head, stmts_nodes, label)
        if nested_stmts:
            loop = loops[-1]
            if isinstance(loop, (ir.Loop, ir.WhileLoop)):
                loop.body.extend(nested_stmts)
        return loops

    def _do(self, head, body_nodes, label) -> list[ir.Stmt]:
        line = _line(head)
        ctrl = None
        for it in head.items:
            if _cls(it) == "Loop_Control":
                ctrl = it
        body = self.body(body_nodes)
        if ctrl is None:
            raise _Unsupported("DO without loop control (infinite DO)", line, str(head))
        if len(ctrl.items) > 3 and ctrl.items[3] is not None:
            return self._do_concurrent(ctrl.items[3], body, line, label)
        whilecond = ctrl.items[0]
        if whilecond is not None:
            pre: list[ir.Stmt] = []
            cond = self._hoist_reductions(self.expr(whilecond), pre, line)
            if pre:
                raise _Unsupported("array reduction in DO WHILE condition", line, str(head))
            self._declare_names(cond, line)
            return [ir.WhileLoop(cond, body, line, label)]
        var_node, bounds = ctrl.items[1]
        var = _name(var_node)
        self.ensure_declared(var, line)
        pre = []
        exprs = [self._hoist_reductions(self.expr(b), pre, line) for b in bounds]
        for e in exprs:
            self._declare_names(e, line)
        step = exprs[2] if len(exprs) > 2 else None
        if step is not None and isinstance(step, ir.Const) and step.value == 1:
            step = None
        return pre + [ir.Loop(var, exprs[0], exprs[1], step, body, line, label)]

    def _do_concurrent(self, header, body, line: int, label) -> list[ir.Stmt]:
        """DO CONCURRENT: iterations are independent, so the first index runs innermost."""
        specs, mask = header.items[0], header.items[1] if len(header.items) > 1 else None
        if mask is not None:
            cond = self.expr(mask)
            self._declare_names(cond, line)
            body = [ir.If([(cond, body)], [], line)]
        stmts = body
        for spec in specs.children:
            var_node, lo, hi, st = spec.items
            var = _name(var_node)
            self.ensure_declared(var, line)
            step = self.expr(st) if st is not None else None
            loop = ir.Loop(var, self.expr(lo), self.expr(hi), step, stmts, line)
            stmts = [loop]
        stmts[0].label = label
        return stmts

    def _stmt_Exit_Stmt(self, node) -> list[ir.Stmt]:
        nm = node.items[1]
        return [ir.Exit(_line(node), _name(nm) if nm is not None else None)]

    def _stmt_Cycle_Stmt(self, node) -> list[ir.Stmt]:
        nm = node.items[1]
        return [ir.Cycle(_line(node), _name(nm) if nm is not None else None)]

    def _stmt_Return_Stmt(self, node) -> list[ir.Stmt]:
        if node.items and node.items[0] is not None:
            raise _Unsupported("alternate RETURN", _line(node), str(node))
        return [ir.Return(_line(node))]

    def _stmt_Call_Stmt(self, node) -> list[ir.Stmt]:
        line = _line(node)
        name = _name(node.items[0])
        if _cls(node.items[0]) != "Name":
            raise _Unsupported("CALL of a type-bound procedure", line, str(node))
        proc = self.scope.procedures.get(name) or self.file.find_procedure(name)
        if proc is None:
            raise _Unsupported(f"CALL of external subroutine {name.upper()}", line, str(node))
        self.scope.procedures[name] = proc
        args = []
        if node.items[1] is not None:
            for a in node.items[1].children:
                if _cls(a) == "Actual_Arg_Spec":
                    raise _Unsupported("keyword argument in CALL", line, str(node))
                e = self.expr(a)
                if isinstance(e, ir.ArrayRef) and any(isinstance(i, ir.Slice) for i in e.indices):
                    raise _Unsupported("array section passed to a subroutine", line, str(node))
                args.append(e)
        for e in args:
            self._declare_names(e, line)
        return [ir.CallStmt(name, args, line)]

    def _stmt_Print_Stmt(self, node) -> list[ir.Stmt]:
        self.notes.append(f"line {_line(node)}: PRINT left out of the kernel (output only)")
        return []

    def _stmt_Write_Stmt(self, node) -> list[ir.Stmt]:
        unit = str(node.items[0]).lower() if node.items else ""
        if (
            unit.startswith("*")
            or unit.startswith("unit = *")
            or unit.startswith("unit=*")
            or unit.split(",")[0].strip() in ("*", "6")
        ):
            self.notes.append(f"line {_line(node)}: WRITE(*) left out of the kernel (output only)")
            return []
        raise _Unsupported("WRITE to a file unit", _line(node), str(node))

    def _stmt_Allocate_Stmt(self, node) -> list[ir.Stmt]:
        line = _line(node)
        if node.items[0] is not None or (len(node.items) > 2 and node.items[2] is not None):
            raise _Unsupported("ALLOCATE with type spec or options", line, str(node))
        out: list[ir.Stmt] = []
        for alloc in node.items[1].children:
            name = _name(alloc.items[0])
            decl = self.scope.lookup(name)
            if decl is None or not decl.allocatable:
                raise _Unsupported(f"ALLOCATE of non-allocatable {name}", line, str(node))
            shape = alloc.items[1]
            dims: list[ir.Dim] = []
            for spec in shape.children:
                lo, hi = spec.items
                dims.append(
                    ir.Dim(
                        self.expr(lo) if lo is not None else ir.Const(1, ir.INTEGER), self.expr(hi)
                    )
                )
            for d in dims:
                for e in (d.lower, d.upper):
                    self._declare_names(e, line)
            self.info.allocations[name] = dims
            decl.dims = dims
            out.append(ir.Allocate(name, dims, line))
        return out

    def _stmt_Stop_Stmt(self, node) -> list[ir.Stmt]:
        raise _Unsupported("STOP statement", _line(node), str(node))

    # -- array lowering -----------------------------------------------------------------------
    def _is_array_valued(self, e: ir.Expr) -> bool:
        if isinstance(e, ir.Var):
            return self.scope.is_array(e.name)
        if isinstance(e, ir.ArrayRef):
            return any(isinstance(i, ir.Slice) for i in e.indices)
        if isinstance(e, ir.BinOp):
            return self._is_array_valued(e.left) or self._is_array_valued(e.right)
        if isinstance(e, ir.UnaryOp):
            return self._is_array_valued(e.operand)
        if isinstance(e, ir.Call):
            if e.name in _ARRAY_REDUCTIONS or e.name in _INQUIRY:
                return False
            return any(self._is_array_valued(a) for a in e.args)
        return False

    def _section(self, e: ir.Var | ir.ArrayRef, line: int) -> tuple[str, list, list]:
        """(name, per-dimension subscript (Expr or Slice with bounds filled), section dims)."""
        name = e.name
        decl = self.scope.lookup(name)
        if decl is None or not decl.dims:
            raise _Unsupported(f"{name} is not an array", line)
        indices = [ir.Slice() for _ in decl.dims] if isinstance(e, ir.Var) else list(e.indices)
        if len(indices) != len(decl.dims):
            raise _Unsupported(f"rank mismatch for {name}", line)
        full: list = []
        sec: list[tuple[ir.Expr, ir.Expr, ir.Expr | None]] = []
        for k, (ix, d) in enumerate(zip(indices, decl.dims, strict=True)):
            if isinstance(ix, ir.Slice):
                lo = ix.lower if ix.lower is not None else d.lower
                hi = ix.upper
                if hi is None:
                    hi = d.upper
                if hi is None:
                    # Assumed shape: upper = lower + size - 1.
                    hi = _add(
                        _add(d.lower, ir.Call("size", [ir.Var(name), ir.Const(k + 1, ir.INTEGER)])),
                        ir.Const(-1, ir.INTEGER),
                    )
                s = ir.Slice(lo, hi, ix.step)
                full.append(s)
                sec.append((lo, hi, ix.step))
            else:
                full.append(ix)
        return name, full, sec

    def _elementwise(self, e: ir.Expr, loop_vars: list[str], base: list, line: int) -> ir.Expr:
        """``e`` with every array section replaced by the element at ``loop_vars``."""
        if isinstance(e, ir.Var) and self.scope.is_array(e.name):
            return self._elementwise(
                ir.ArrayRef(e.name, [ir.Slice() for _ in self.scope.lookup(e.name).dims]),
                loop_vars,
                base,
                line,
            )
        if isinstance(e, ir.ArrayRef) and any(isinstance(i, ir.Slice) for i in e.indices):
            _, full, sec = self._section(e, line)
            if len(sec) != len(loop_vars):
                raise _Unsupported("arrays of different ranks in an array expression", line)
            out = []
            k = 0
            for ix in full:
                if isinstance(ix, ir.Slice):
                    blo, _bhi, bst = base[k]
                    if not _same_step(bst, ix.step):
                        raise _Unsupported("array sections with different strides", line)
                    # element = lo_r + (v - lo_t): same stride on both sides.
                    out.append(_simplify(_add(ix.lower, _sub(ir.Var(loop_vars[k]), blo))))
                    k += 1
                else:
                    out.append(ix)
            return ir.ArrayRef(e.name, out)
        if isinstance(e, ir.BinOp):
            return ir.BinOp(
                e.op,
                self._elementwise(e.left, loop_vars, base, line),
                self._elementwise(e.right, loop_vars, base, line),
            )
        if isinstance(e, ir.UnaryOp):
            return ir.UnaryOp(e.op, self._elementwise(e.operand, loop_vars, base, line))
        if isinstance(e, ir.Call) and e.name not in _INQUIRY and e.name not in _ARRAY_REDUCTIONS:
            if e.name in self.scope.procedures and not _is_elemental(self.scope.procedures[e.name]):
                if any(self._is_array_valued(a) for a in e.args):
                    raise _Unsupported(f"array argument to non-elemental function {e.name}", line)
            return ir.Call(
                e.name, [self._elementwise(a, loop_vars, base, line) for a in e.args], e.keywords
            )
        return e

    def _loop_nest(self, sec, body_for, line: int, prefix: str) -> list[ir.Stmt]:
        loop_vars = [self.new_temp(prefix, ir.INTEGER) for _ in sec]
        inner = body_for(loop_vars)
        # The first dimension is the innermost loop (column-major, contiguous access).
        stmts = inner
        for k in range(len(sec)):
            lo, hi, st = sec[k]
            stmts = [ir.Loop(loop_vars[k], lo, hi, st, stmts, line)]
        return stmts

    def _lower_array_assignment(
        self, target, value, line: int, mask: ir.Expr | None = None
    ) -> list[ir.Stmt]:
        """Loop nest for an array assignment; ``mask`` (WHERE) guards each element."""
        name, full, sec = self._section(target, line)
        # Fortran evaluates the whole right-hand side first. Element-by-element is only
        # equivalent when the target array is read at the very element being written.
        for sub in ir.walk_expr(value):
            ref = sub
            if isinstance(ref, ir.Var) and ref.name == name:
                if any(isinstance(i, ir.Slice) for i in full) and full != [
                    ir.Slice(*s) for s in sec
                ]:
                    raise _Unsupported("overlapping array assignment (needs a temporary)", line)
            if isinstance(ref, ir.ArrayRef) and ref.name == name:
                _, rfull, _ = (
                    self._section(ref, line)
                    if any(isinstance(i, ir.Slice) for i in ref.indices)
                    else (None, ref.indices, None)
                )
                if _sec_key(rfull) != _sec_key(full):
                    raise _Unsupported("overlapping array assignment (needs a temporary)", line)

        def body(loop_vars):
            idx = []
            k = 0
            for ix in full:
                if isinstance(ix, ir.Slice):
                    idx.append(ir.Var(loop_vars[k]))
                    k += 1
                else:
                    idx.append(ix)
            elem_value = self._elementwise(value, loop_vars, sec, line)
            assign = ir.Assign(ir.ArrayRef(name, idx), elem_value, line)
            if mask is None:
                return [assign]
            return [ir.If([(self._elementwise(mask, loop_vars, sec, line), [assign])], [], line)]

        return self._loop_nest(sec, body, line, "i_")

    # -- WHERE and SELECT CASE ------------------------------------------------------------------
    def _stmt_Where_Stmt(self, node) -> list[ir.Stmt]:
        return self._where([(node.items[0], [node.items[1]])], _line(node))

    def _stmt_Where_Construct(self, node) -> list[ir.Stmt]:
        branches: list[tuple[object, list]] = []
        for child in node.children:
            c = _cls(child)
            if c == "Where_Construct_Stmt":
                branches.append((child.items[0], []))
            elif c == "Masked_Elsewhere_Stmt":
                branches.append((child.items[0], []))
            elif c == "Elsewhere_Stmt":
                branches.append((None, []))
            elif c in ("End_Where_Stmt", "Comment"):
                continue
            elif c == "Assignment_Stmt":
                branches[-1][1].append(child)
            else:
                raise _Unsupported(f"{_construct_name(c)} inside WHERE", _line(child), str(child))
        return self._where(branches, _line(node))

    def _where(self, branches, line: int) -> list[ir.Stmt]:
        """WHERE/ELSEWHERE as one masked loop nest per assignment, in statement order.

        Fortran evaluates the masks once, before any assignment; re-evaluating them per
        element is only equivalent when no assignment of the construct writes a mask array.
        """
        masks = [self.expr(m) if m is not None else None for m, _ in branches]
        mask_names = {n for m in masks if m is not None for n in _names_in_expr(m)}
        out: list[ir.Stmt] = []
        for k, (_, assigns) in enumerate(branches):
            cond: ir.Expr | None = masks[k]
            for earlier in masks[:k]:
                if earlier is not None:
                    neg = ir.UnaryOp("not", earlier)
                    cond = neg if cond is None else ir.BinOp("and", neg, cond)
            for a in assigns:
                a_line = _line(a) or line
                target = self.expr(a.items[0])
                if not isinstance(target, (ir.Var, ir.ArrayRef)) or not self._is_array_valued(
                    target
                ):
                    raise _Unsupported("WHERE assignment to a scalar", a_line, str(a))
                single = len(branches) == 1 and len(assigns) == 1
                if target.name in mask_names and not (
                    single and _only_same_element(masks[0], target)
                ):
                    raise _Unsupported(
                        "WHERE assignment to an array its mask reads (needs a mask temporary)",
                        a_line,
                        str(a),
                    )
                value = self.expr(a.items[2])
                for e in (target, value) + ((cond,) if cond is not None else ()):
                    self._declare_names(e, a_line)
                pre: list[ir.Stmt] = []
                value = self._hoist_reductions(value, pre, a_line)
                out.extend(pre)
                out.extend(self._lower_array_assignment(target, value, a_line, mask=cond))
        return out

    def _stmt_Case_Construct(self, node) -> list[ir.Stmt]:
        line = _line(node)
        selector = None
        branches: list[tuple[ir.Expr, list]] = []
        default: list | None = None
        current: list | None = None
        for child in node.children:
            c = _cls(child)
            if c == "Select_Case_Stmt":
                selector = self.expr(child.items[0])
                self._declare_names(selector, line)
            elif c == "Case_Stmt":
                sel = child.items[0]
                current = []
                if sel.items[0] is None:
                    default = current
                else:
                    branches.append((self._case_condition(selector, sel.items[0], line), current))
            elif c == "End_Select_Stmt":
                continue
            elif current is not None:
                current.append(child)
        # CASE blocks are disjoint, so an IF chain in any order picks the same block.
        ir_branches = [(cond, self.body(nodes)) for cond, nodes in branches]
        orelse = self.body(default) if default is not None else []
        if not ir_branches:
            return orelse
        return [ir.If(ir_branches, orelse, line)]

    def _case_condition(self, selector, ranges, line: int) -> ir.Expr:
        cond: ir.Expr | None = None
        for item in ranges.children:
            if _cls(item) == "Case_Value_Range":
                lo, hi = item.items
                parts = []
                if lo is not None:
                    parts.append(ir.BinOp(">=", selector, self.expr(lo)))
                if hi is not None:
                    parts.append(ir.BinOp("<=", selector, self.expr(hi)))
                term = parts[0] if len(parts) == 1 else ir.BinOp("and", parts[0], parts[1])
            else:
                term = ir.BinOp("==", selector, self.expr(item))
            cond = term if cond is None else ir.BinOp("or", cond, term)
        if cond is None:
            raise _Unsupported("empty CASE selector", line)
        return cond

    def _hoist_reductions(self, e: ir.Expr, pre: list[ir.Stmt], line: int) -> ir.Expr:
        """Replace SUM/MAXVAL/MINVAL/PRODUCT of arrays by temporaries computed in ``pre``."""
        if isinstance(e, ir.Call):
            args = [self._hoist_reductions(a, pre, line) for a in e.args]
            e = ir.Call(e.name, args, e.keywords)
            if e.name in _ARRAY_REDUCTIONS and e.name not in self.scope.procedures:
                if e.name in ("maxloc", "minloc"):
                    return self._location(e, pre, line)
                if e.keywords or len(e.args) != 1:
                    raise _Unsupported(f"{e.name.upper()} with DIM or MASK", line)
                return self._reduction(e, pre, line)
            return e
        if isinstance(e, ir.BinOp):
            return ir.BinOp(
                e.op,
                self._hoist_reductions(e.left, pre, line),
                self._hoist_reductions(e.right, pre, line),
            )
        if isinstance(e, ir.UnaryOp):
            return ir.UnaryOp(e.op, self._hoist_reductions(e.operand, pre, line))
        return e

    def _reduction(self, e: ir.Call, pre: list[ir.Stmt], line: int) -> ir.Expr:
        arg = e.args[0]
        shape_ref = _first_array_ref(arg, self)
        if shape_ref is None:
            raise _Unsupported(f"{e.name.upper()} of a scalar", line)
        _, _, sec = self._section(shape_ref, line)
        t = self._type_of(arg)
        if e.name in ("count", "any", "all"):
            return self._logical_reduction(e.name, arg, sec, pre, line)
        tmp = self.new_temp(f"{e.name}_", t)
        if e.name == "sum":
            init = ir.Const(0 if t.base == "integer" else 0.0, t)
        elif e.name == "product":
            init = ir.Const(1 if t.base == "integer" else 1.0, t)
        else:
            big = (
                (2**31 - 1)
                if t.base == "integer"
                else (3.4028234663852886e38 if t.kind == 4 else 1.7976931348623157e308)
            )
            init = ir.Const(-big if e.name == "maxval" else big, t)

        def body(loop_vars):
            elem = self._elementwise(arg, loop_vars, sec, line)
            if e.name == "sum":
                new = ir.BinOp("+", ir.Var(tmp), elem)
            elif e.name == "product":
                new = ir.BinOp("*", ir.Var(tmp), elem)
            else:
                new = ir.Call("max" if e.name == "maxval" else "min", [ir.Var(tmp), elem])
            return [ir.Assign(ir.Var(tmp), new, line)]

        pre.append(ir.Assign(ir.Var(tmp), init, line))
        pre.extend(self._loop_nest(sec, body, line, "r_"))
        return ir.Var(tmp)

    def _logical_reduction(self, name: str, mask, sec, pre, line: int) -> ir.Expr:
        """COUNT / ANY / ALL of a logical array expression, as an explicit loop nest."""
        if name == "count":
            tmp = self.new_temp("count_", ir.INTEGER)
            init = ir.Const(0, ir.INTEGER)
        else:
            tmp = self.new_temp(f"{name}_", ir.LOGICAL)
            init = ir.Const(name == "all", ir.LOGICAL)

        def body(loop_vars):
            elem = self._elementwise(mask, loop_vars, sec, line)
            if name == "count":
                upd = ir.Assign(ir.Var(tmp), ir.BinOp("+", ir.Var(tmp), ir.Const(1, ir.INTEGER)))
                return [ir.If([(elem, [upd])], [], line)]
            if name == "any":
                return [ir.If([(elem, [ir.Assign(ir.Var(tmp), ir.Const(True, ir.LOGICAL))])])]
            neg = ir.UnaryOp("not", elem)
            return [ir.If([(neg, [ir.Assign(ir.Var(tmp), ir.Const(False, ir.LOGICAL))])])]

        pre.append(ir.Assign(ir.Var(tmp), init, line))
        pre.extend(self._loop_nest(sec, body, line, "r_"))
        return ir.Var(tmp)

    def _location(self, e: ir.Call, pre: list[ir.Stmt], line: int) -> ir.Expr:
        """MAXLOC/MINLOC(x, DIM=1) of a rank-1 section: the first position of the extremum."""
        dim = e.keywords.get("dim") or (e.args[1] if len(e.args) > 1 else None)
        extra = set(e.keywords) - {"dim"}
        if dim is None or extra or not (isinstance(dim, ir.Const) and dim.value == 1):
            raise _Unsupported(f"{e.name.upper()} without DIM=1 (array result) or with MASK", line)
        arg = e.args[0]
        ref = _first_array_ref(arg, self)
        if ref is None:
            raise _Unsupported(f"{e.name.upper()} of a scalar", line)
        _, _, sec = self._section(ref, line)
        if len(sec) != 1:
            raise _Unsupported(f"{e.name.upper()} of a rank-{len(sec)} array", line)
        lo, _hi, step = sec[0]
        t = self._type_of(arg)
        pos = self.new_temp(f"{e.name}_", ir.INTEGER)
        best = self.new_temp(f"{e.name}_val", t)
        op = ">" if e.name == "maxloc" else "<"

        def body(loop_vars):
            elem = self._elementwise(arg, loop_vars, sec, line)
            v = ir.Var(loop_vars[0])
            offset = _sub(v, lo)
            if step is not None and not (isinstance(step, ir.Const) and step.value == 1):
                offset = ir.BinOp("/", offset, step)
            position = _simplify(_add(offset, ir.Const(1, ir.INTEGER)))
            # Strict comparison keeps the FIRST position; pos == 0 takes the first element.
            cond = ir.BinOp(
                "or",
                ir.BinOp("==", ir.Var(pos), ir.Const(0, ir.INTEGER)),
                ir.BinOp(op, elem, ir.Var(best)),
            )
            return [
                ir.If(
                    [
                        (
                            cond,
                            [
                                ir.Assign(ir.Var(best), elem, line),
                                ir.Assign(ir.Var(pos), position, line),
                            ],
                        )
                    ],
                    [],
                    line,
                )
            ]

        pre.append(ir.Assign(ir.Var(pos), ir.Const(0, ir.INTEGER), line))
        pre.append(ir.Assign(ir.Var(best), ir.Const(0 if t.base == "integer" else 0.0, t), line))
        pre.extend(self._loop_nest(sec, body, line, "r_"))
        return ir.Var(pos)

    def _type_of(self, e: ir.Expr) -> ir.FType:
        from kernels.engine.backends.common import ExprPrinter, Scope

        scope = Scope()
        for s in _scope_chain(self.scope):
            for n, d in s.decls.items():
                if d.type is not None and n not in scope.types:
                    scope.types[n] = d.type
                    if d.dims:
                        scope.dims[n] = d.dims
        scope.constants = dict(self.scope.consts)
        for n, c in self.scope.consts.items():
            scope.types[n] = c.type
        for n, p in self.scope.procedures.items():
            if isinstance(p, _ProcInfo) and p.proc is not None:
                scope.functions[n] = p.proc
        try:
            return ExprPrinter(scope).type_of(e)
        except Exception:  # noqa: BLE001 - typing is best effort here; default to real(8)
            return ir.REAL8


def _scope_chain(scope: _Scope):
    while scope is not None:
        yield scope
        scope = scope.parent


def _is_elemental(p) -> bool:
    proc = p.proc if isinstance(p, _ProcInfo) else p
    return bool(proc is not None and proc.elemental)


def _first_array_ref(e: ir.Expr, b: _ProcBuilder):
    if isinstance(e, ir.Var) and b.scope.is_array(e.name):
        return e
    if isinstance(e, ir.ArrayRef) and any(isinstance(i, ir.Slice) for i in e.indices):
        return e
    if isinstance(e, ir.BinOp):
        return _first_array_ref(e.left, b) or _first_array_ref(e.right, b)
    if isinstance(e, ir.UnaryOp):
        return _first_array_ref(e.operand, b)
    if isinstance(e, ir.Call) and e.name not in _INQUIRY:
        for a in e.args:
            r = _first_array_ref(a, b)
            if r is not None:
                return r
    return None


def _only_same_element(mask: ir.Expr, target) -> bool:
    """Whether ``mask`` reads ``target``'s array only at the element being assigned."""
    for sub in ir.walk_expr(mask):
        if isinstance(sub, (ir.Var, ir.ArrayRef)) and sub.name == target.name:
            if repr(sub) != repr(target):
                return False
    return True


def _sec_key(full) -> str:
    return repr(full)


def _same_step(a, b) -> bool:
    def norm(x):
        if x is None or (isinstance(x, ir.Const) and x.value == 1):
            return "1"
        return repr(x)

    return norm(a) == norm(b)


def _add(a: ir.Expr, b: ir.Expr) -> ir.Expr:
    return _simplify(ir.BinOp("+", a, b))


def _sub(a: ir.Expr, b: ir.Expr) -> ir.Expr:
    return _simplify(ir.BinOp("-", a, b))


def _simplify(e: ir.Expr) -> ir.Expr:
    """Fold integer affine expressions (``1 + (i_1 - 1)`` -> ``i_1``)."""
    from kernels.engine.backends.common import affine

    a = affine(e)
    if a is None:
        return e
    coef, const = a
    out: ir.Expr | None = None
    for name, c in coef.items():
        term: ir.Expr = (
            ir.Var(name)
            if abs(c) == 1
            else ir.BinOp("*", ir.Const(abs(c), ir.INTEGER), ir.Var(name))
        )
        if out is None:
            out = term if c > 0 else ir.UnaryOp("-", term)
        else:
            out = ir.BinOp("+" if c > 0 else "-", out, term)
    if out is None:
        return ir.Const(const, ir.INTEGER)
    if const > 0:
        out = ir.BinOp("+", out, ir.Const(const, ir.INTEGER))
    elif const < 0:
        out = ir.BinOp("-", out, ir.Const(-const, ir.INTEGER))
    return out


def _construct_name(cls: str) -> str:
    names = {
        "Goto_Stmt": "GOTO",
        "Computed_Goto_Stmt": "computed GOTO",
        "Arithmetic_If_Stmt": "arithmetic IF",
        "Read_Stmt": "READ statement",
        "Open_Stmt": "OPEN statement",
        "Close_Stmt": "CLOSE statement",
        "Where_Construct": "WHERE construct",
        "Where_Stmt": "WHERE statement",
        "Forall_Construct": "FORALL construct",
        "Forall_Stmt": "FORALL statement",
        "Select_Case_Construct": "SELECT CASE construct",
        "Case_Construct": "SELECT CASE construct",
        "Select_Type_Construct": "SELECT TYPE construct",
        "Do_Concurrent_Construct": "DO CONCURRENT",
        "Associate_Construct": "ASSOCIATE construct",
        "Block_Construct": "BLOCK construct",
        "Nullify_Stmt": "NULLIFY statement",
        "Pointer_Assignment_Stmt": "pointer assignment (=>)",
        "Assign_Stmt": "ASSIGN statement",
        "Entry_Stmt": "ENTRY statement",
    }
    return names.get(cls, cls.replace("_Stmt", "").replace("_", " ").upper() + " statement")


def _lhs_construct(node) -> str:
    if _cls(node) == "Data_Ref":
        return "derived-type component access (%)"
    return f"assignment to {_cls(node)}"


def _head(unit):
    """The first statement of a unit (comments before it are attached to the unit by fparser)."""
    return next(c for c in unit.children if _cls(c) != "Comment")


def _flatten(node):
    """Specification statements in order (Implicit_Part groups are opened)."""
    for c in getattr(node, "children", []) or []:
        if c is None:
            continue
        if _cls(c) == "Implicit_Part":
            yield from _flatten(c)
        else:
            yield c


_ProcBuilder._stmt_Block_Label_Do_Construct = _ProcBuilder._label_do  # type: ignore[assignment]
_ProcBuilder._stmt_Action_Term_Do_Construct = _ProcBuilder._label_do  # type: ignore[attr-defined]
_ProcBuilder._stmt_Outer_Shared_Do_Construct = _ProcBuilder._label_do  # type: ignore[attr-defined]
_ProcInfo.proc_result_names = ()  # type: ignore[attr-defined]


# --------------------------------------------------------------------------------------------
# File builder: units, modules, kernels


class _FileBuilder:
    def __init__(self, source: str, fixed: bool, filename: str):
        self.source = source
        self.lines = source.splitlines()
        self.fixed = fixed
        self.filename = filename
        self.modules: dict[str, dict] = {}
        self.procs: dict[str, _ProcInfo] = {}  # external + module procedures by name
        self.order: list[_ProcInfo] = []
        self.programs: list[_ProcInfo] = []
        self.kernels: list[ir.Kernel] = []
        self.notes: dict[str, list[str]] = {}
        self.unit_spans: list[tuple[str, int, int]] = []  # (kind, start, end)

    def column_of(self, line: int, text: str) -> int:
        if not (1 <= line <= len(self.lines)):
            return 1
        src = self.lines[line - 1]
        low = src.lower()
        for probe in _column_probes(text):
            k = low.find(probe)
            if k >= 0:
                return k + 1
        stripped = len(src) - len(src.lstrip())
        return stripped + 1

    def find_procedure(self, name: str) -> _ProcInfo | None:
        return self.procs.get(name)

    # -- pass 1: collect units ------------------------------------------------------------------
    def build(self, tree) -> None:
        for unit in tree.children:
            cls = _cls(unit)
            if cls == "Comment":
                continue
            if cls == "Module":
                self._collect_module(unit)
            elif cls in ("Subroutine_Subprogram", "Function_Subprogram"):
                info = self._collect_proc(unit, None)
                self.procs[info.name] = info
                self.order.append(info)
                self.unit_spans.append(("proc", info.start, info.end))
            elif cls == "Main_Program":
                stmt = _head(unit)
                name = _name(stmt.items[1]) if _cls(stmt) == "Program_Stmt" else "main"
                info = _ProcInfo(
                    unit, "program", name, None, start=_line(unit), end=_end_line(unit)
                )
                for c in unit.children:
                    if _cls(c) == "Internal_Subprogram_Part":
                        for sub in c.children:
                            if _cls(sub) in ("Subroutine_Subprogram", "Function_Subprogram"):
                                info.internal.append(self._collect_proc(sub, None))
                self.programs.append(info)
            else:
                raise FortranSyntaxError(
                    f"unsupported program unit {cls}", [Diagnostic(_line(unit), 1, cls)]
                )
        # pass 2: module declarations, then procedure bodies (callees first when possible).
        for mod in self.modules.values():
            self._build_module_spec(mod)
        for info in self.order:
            try:
                self._build_proc(info)
            except Exception as exc:  # noqa: BLE001 - one odd unit must not sink the file
                info.failure = exc  # type: ignore[attr-defined]
        for info in self.order:
            if info.kind == "subroutine" or info.kind == "function":
                try:
                    if getattr(info, "failure", None) is not None:
                        raise info.failure  # type: ignore[attr-defined]
                    self.kernels.append(self._kernel_from_proc(info))
                except Exception as exc:  # noqa: BLE001
                    self.kernels.append(self._broken_kernel(info.name, info.start, exc))
        for prog in self.programs:
            try:
                self.kernels.extend(self._extract_program(prog))
            except Exception as exc:  # noqa: BLE001
                self.kernels.append(self._broken_kernel(prog.name, prog.start, exc))

    def _broken_kernel(self, name: str, line: int, exc: Exception) -> ir.Kernel:
        """A kernel the frontend could not build: reported as unsupported, never a traceback."""
        msg = f"construct the frontend cannot handle ({type(exc).__name__}: {exc})"
        return ir.Kernel(
            name=name,
            args=[],
            body=[],
            locals={},
            fortran_source=self.source,
            fortran_entry=name,
            line=line,
            unsupported=[ir.Unsupported(msg, line, 1, "")],
        )

    def _collect_module(self, unit) -> None:
        stmt = _head(unit)
        name = _name(stmt.items[1])
        mod = {
            "name": name,
            "node": unit,
            "consts": {},
            "procs": {},
            "vars": {},
            "scope": None,
            "unsupported": [],
            "start": _line(unit),
            "end": _end_line(unit),
        }
        self.modules[name] = mod
        self.unit_spans.append(("module", mod["start"], mod["end"]))
        for c in unit.children:
            if _cls(c) == "Module_Subprogram_Part":
                for sub in c.children:
                    if _cls(sub) in ("Subroutine_Subprogram", "Function_Subprogram"):
                        info = self._collect_proc(sub, name)
                        mod["procs"][info.name] = info
                        self.procs[info.name] = info
                        self.order.append(info)

    def _collect_proc(self, unit, module: str | None) -> _ProcInfo:
        stmt = _head(unit)
        kind = "subroutine" if _cls(unit) == "Subroutine_Subprogram" else "function"
        name = next(_name(it) for it in stmt.items if it is not None and _cls(it) == "Name")
        info = _ProcInfo(unit, kind, name, module, start=_line(unit), end=_end_line(unit))
        for c in unit.children:
            if _cls(c) == "Internal_Subprogram_Part":
                for sub in c.children:
                    if _cls(sub) in ("Subroutine_Subprogram", "Function_Subprogram"):
                        inner = self._collect_proc(sub, module)
                        info.internal.append(inner)
        return info

    def _build_module_spec(self, mod) -> None:
        scope = _Scope()
        info = _ProcInfo(mod["node"], "module", mod["name"], mod["name"])
        b = _ProcBuilder(info, scope, self)
        for c in mod["node"].children:
            if _cls(c) == "Specification_Part":
                try:
                    b.spec(c)
                except _Unsupported as u:
                    b._unsupported(u.construct, c, u.line)
                for c2 in _flatten(c):
                    if _cls(c2) == "Derived_Type_Def":
                        pass
        mod["scope"] = scope
        mod["consts"] = dict(scope.consts)
        for n, d in scope.decls.items():
            if d.parameter is None:
                mod["vars"][n] = d
        mod["unsupported"] = info.unsupported

    def _build_proc(self, info: _ProcInfo, parent: _Scope | None = None) -> None:
        if info.proc is not None:
            return
        if parent is None:
            parent = self.modules[info.module]["scope"] if info.module else None
        scope = _Scope(parent)
        if info.module:
            for n, p in self.modules[info.module]["procs"].items():
                scope.procedures[n] = p
            if parent is not None and parent.implicit is not None:
                pass
        for inner in info.internal:
            scope.procedures[inner.name] = inner
            self.procs.setdefault(inner.name, inner)
        info.scope = scope
        b = _ProcBuilder(info, scope, self)
        unit = info.node
        stmt = _head(unit)
        args: list[str] = []
        result = None
        pure = elemental = False
        for it in stmt.items:
            if it is None:
                continue
            c = _cls(it)
            if c == "Dummy_Arg_List":
                args = [_name(x) for x in it.children]
            elif c == "Prefix":
                for p in it.children:
                    pc = _cls(p)
                    if pc == "Prefix_Spec":
                        t = str(p).lower()
                        pure = pure or t == "pure"
                        elemental = elemental or t == "elemental"
                    elif pc == "Intrinsic_Type_Spec":
                        info.result_type_node = p  # type: ignore[attr-defined]
            elif c == "Suffix":
                if it.items and it.items[0] is not None:
                    result = _name(it.items[0])
        if info.kind == "function":
            if result is None:
                m = re.search(r"result\s*\(\s*(\w+)\s*\)", str(stmt), re.I)
                result = m.group(1).lower() if m else info.name
        spec = None
        exe = None
        for c in unit.children:
            if _cls(c) == "Specification_Part":
                spec = c
            elif _cls(c) == "Execution_Part":
                exe = c
        if spec is not None:
            try:
                b.spec(spec)
            except _Unsupported as u:
                b._unsupported(u.construct, spec, u.line)
        if info.kind == "function":
            rt = getattr(info, "result_type_node", None)
            d = b._decl(result, info.start)
            if rt is not None:
                try:
                    d.type = b._type_spec(rt, info.start)
                except _Unsupported as u:
                    b._unsupported(u.construct, None, info.start)
                    d.type = ir.REAL8
            if d.type is None:  # type: ignore[comparison-overlap]
                d.type = scope.implicit_type(result)
        for a in args:
            b.ensure_declared(a, info.start)
        # Callees first so their result types are known while typing this body.
        for inner in info.internal:
            self._build_proc(inner, scope)
        body: list[ir.Stmt] = []
        if exe is not None:
            if info.kind == "program":
                info.exec_nodes = [c for c in exe.children if c is not None]
            else:
                body = b.body(exe.children)
        decls = {}
        for s in _scope_chain(scope):
            if s is scope:
                for n, d in s.decls.items():
                    decls[n] = d
        for n, d in decls.items():
            if d.type is None:  # type: ignore[comparison-overlap]
                d.type = scope.implicit_type(n)
        info.proc = ir.Procedure(
            info.kind,
            info.name,
            args,
            decls,
            body,
            info.start,
            result=result,
            pure=pure or elemental,
            elemental=elemental,
            module=info.module,
        )
        info.builder = b  # type: ignore[attr-defined]

    # -- kernels ------------------------------------------------------------------------------
    def _callees(self, body: list[ir.Stmt], scope: _Scope, seen: dict[str, ir.Procedure]) -> None:
        names = set()
        for s in ir.walk(body):
            if isinstance(s, ir.CallStmt):
                names.add(s.name)
            from kernels.engine.backends.common import stmt_exprs

            for e in stmt_exprs(s):
                for sub in ir.walk_expr(e):
                    if isinstance(sub, ir.Call) and sub.name not in INTRINSICS:
                        names.add(sub.name)
                    elif isinstance(sub, ir.Call) and sub.name in scope.procedures:
                        names.add(sub.name)
        for n in sorted(names):
            if n in seen:
                continue
            p = scope.procedures.get(n) or self.procs.get(n)
            if not isinstance(p, _ProcInfo):
                continue
            self._build_proc(p)
            seen[n] = p.proc
            self._callees(p.proc.body, p.scope, seen)

    def _unit_text(self, start: int, end: int) -> str:
        return "\n".join(self.lines[start - 1 : end])

    def _library_source(self) -> str:
        """Modules and external procedures (no main program): compilable into a library."""
        parts = []
        for _kind, start, end in sorted(self.unit_spans, key=lambda x: x[1]):
            parts.append(self._unit_text(start, end))
        return "\n".join(parts) + "\n"

    def _kernel_from_proc(self, info: _ProcInfo) -> ir.Kernel:
        proc = info.proc
        scope = info.scope
        assert proc is not None and scope is not None
        functions: dict[str, ir.Procedure] = {}
        self._callees(proc.body, scope, functions)
        functions = _pass_host_variables(proc, functions, {i.name for i in info.internal})
        # Module-level problems (a TYPE definition, DATA...) only matter through the names a
        # kernel uses, and those are caught below as references to module variables.
        unsupported = list(info.unsupported)
        unsupported.extend(_callee_problems(functions, self.procs, constants_of(scope)))
        for s in ir.walk(proc.body):
            if isinstance(s, ir.Unsupported) and s not in unsupported:
                unsupported.append(s)
        args = []
        for a in proc.args:
            d = proc.decls.get(a)
            if d is None:
                d = ir.Decl(a, scope.implicit_type(a))
            intent = d.intent or _infer_intent(a, proc.body)
            if intent == "in out":
                intent = "inout"
            dims = list(d.dims)
            if any(dd.upper is None for dd in dims):
                dims = _infer_assumed_extents(a, dims, proc)
            args.append(ir.Arg(a, d.type, intent, dims))
        locals_ = {
            n: d for n, d in proc.decls.items() if n not in proc.args and d.parameter is None
        }
        if info.kind == "function" and proc.result in locals_:
            pass
        constants = dict(scope.consts)
        unsupported.extend(_call_problems(proc.body, functions, proc.decls))
        known = set(proc.decls) | set(constants) | set(functions) | INTRINSICS
        for n in sorted(_names_in(proc.body) - known):
            # Host-associated or module variables are shared state the port cannot see.
            unsupported.append(
                ir.Unsupported(f"reference to module/host variable {n}", info.start, 1, n)
            )
        kernel = ir.Kernel(
            name=info.name,
            args=args,
            body=proc.body,
            locals=locals_,
            fortran_source=self._library_source(),
            fortran_entry=info.name,
            line=info.start,
            fortran_module=info.module,
            constants=constants,
            functions=functions,
            unsupported=unsupported,
            origin=info.kind,
        )
        if info.kind == "function":
            kernel.result = proc.result
        kernel.notes = list(info.notes)
        self.notes[kernel.name] = list(info.notes)
        return kernel

    # -- programs -----------------------------------------------------------------------------
    def _extract_program(self, prog: _ProcInfo) -> list[ir.Kernel]:
        self._build_proc(prog)
        b: _ProcBuilder = prog.builder  # type: ignore[attr-defined]
        scope = prog.scope
        assert scope is not None
        # Convert every top-level statement once; remember which are loops.
        items: list[tuple[object, list[ir.Stmt], int, int]] = []
        for node in prog.exec_nodes:
            before_notes = len(prog.notes)
            stmts = b.stmt(node)
            new_notes = prog.notes[before_notes:]
            items.append((node, stmts, _line(node), _end_line(node), new_notes))
        kernels = []
        count = 0
        for k, (_node, stmts, start, end, notes) in enumerate(items):
            loops = [s for s in stmts if isinstance(s, (ir.Loop, ir.WhileLoop))]
            if not loops:
                continue
            count += 1
            later: list[ir.Stmt] = []
            for _, st, *_ in items[k + 1 :]:
                later.extend(st)
            earlier: list[ir.Stmt] = []
            for _, st, *_ in items[:k]:
                earlier.extend(st)
            name = f"{prog.name}_loop{count}"
            kernels.append(self._program_kernel(prog, name, stmts, start, end, later, notes))
        if not kernels:
            self.notes.setdefault(prog.name, []).append("program has no loop nest to extract")
        return kernels

    def _program_kernel(self, prog, name, stmts, start, end, later, notes) -> ir.Kernel:
        scope = prog.scope
        decls = prog.proc.decls
        functions: dict[str, ir.Procedure] = {}
        self._callees(stmts, scope, functions)
        functions = _pass_host_variables(
            prog.proc, functions, {i.name for i in prog.internal}, body=stmts
        )
        used = _names_in(stmts)
        loop_vars = {s.var for s in ir.walk(stmts) if isinstance(s, ir.Loop)}
        unsupported = [s for s in ir.walk(stmts) if isinstance(s, ir.Unsupported)]
        unsupported.extend(_callee_problems(functions, self.procs, constants_of(scope)))
        # Declaration problems only matter when they concern names this nest uses.
        for u in prog.unsupported:
            if u.line < start or u.line > end:
                if any(re.search(rf"\b{re.escape(n)}\b", u.text.lower()) for n in used):
                    if u not in unsupported and not isinstance(u, ir.Unsupported) or u.line < start:
                        unsupported.append(u)
        unsupported.extend(_call_problems(stmts, functions, decls))
        written = _written_names(stmts)
        args: list[ir.Arg] = []
        locals_: dict[str, ir.Decl] = {}
        needed = set()
        for n in sorted(used, key=lambda x: (decls[x].line if x in decls else 0, x)):
            if n in scope.consts or n in functions or n in INTRINSICS and n not in decls:
                continue
            d = decls.get(n) or scope.lookup(n)
            if d is None:
                continue
            if d.parameter is not None:
                continue
            is_written = n in written
            rbw = _read_before_write(n, stmts)
            if d.dims:
                if any(dd.upper is None for dd in d.dims):
                    dims = prog.allocations.get(n)
                    if dims is None:
                        unsupported.append(
                            ir.Unsupported(f"array {n} without known shape", start, 1, n)
                        )
                        dims = d.dims
                    d = ir.Decl(d.name, d.type, dims, d.intent, None, False, d.line)
                if is_written:
                    intent = "inout" if (rbw or _reads(n, stmts)) else "out"
                else:
                    intent = "in"
                args.append(ir.Arg(n, d.type, intent, d.dims))
                for dd in d.dims:
                    for e in (dd.lower, dd.upper):
                        needed |= {v for v in _names_in_expr(e) if v not in scope.consts}
            else:
                used_later = _read_before_write(n, later)
                if n in loop_vars and not rbw and not used_later:
                    locals_[n] = d
                    continue
                if not is_written:
                    args.append(ir.Arg(n, d.type, "in", []))
                elif rbw:
                    args.append(ir.Arg(n, d.type, "inout", []))
                elif used_later:
                    args.append(ir.Arg(n, d.type, "out", []))
                else:
                    locals_[n] = d
        have = {a.name for a in args}
        for n in sorted(needed - have):
            d = decls.get(n) or ir.Decl(n, scope.implicit_type(n))
            args.insert(0, ir.Arg(n, d.type, "in", []))
        for n, d in decls.items():
            if (
                n.startswith(("i_", "r_", "sum_", "maxval_", "minval_", "product_"))
                and n in used
                and n not in have
            ):
                locals_.setdefault(n, d)
        source = self._program_kernel_source(prog, name, args, locals_, start, end, stmts)
        kernel = ir.Kernel(
            name=name,
            args=args,
            body=stmts,
            locals=locals_,
            fortran_source=source,
            fortran_entry=name,
            line=start,
            fortran_module=None,
            constants=dict(scope.consts),
            functions=functions,
            unsupported=unsupported,
            origin="extracted",
        )
        self.notes[name] = [f"extracted from program {prog.name}, lines {start}-{end}"] + list(
            notes
        )
        return kernel

    def _program_kernel_source(self, prog, name, args, locals_, start, end, stmts) -> str:
        """A standalone subroutine holding the nest's own source text (for gfortran)."""
        lib = ""
        if self.modules or any(i.kind != "program" for i in self.order):
            lib = self._library_source()
        lines = [f"subroutine {name}({', '.join(a.name for a in args)})"]
        for u in prog.uses:
            lines.append(f"  {u}")
        lines.append("  implicit none")
        # Named constants of the program, in declaration order (they may depend on each other).
        for n, d in prog.proc.decls.items():
            if d.parameter is not None and n in prog.scope.consts and not d.dims:
                c = prog.scope.consts[n]
                lines.append(f"  {_ftype(d.type)}, parameter :: {n} = {_fconst(c)}")
        for a in args:
            dims = f"({', '.join(_fdim(d) for d in a.dims)})" if a.dims else ""
            lines.append(f"  {_ftype(a.type)}, intent({a.intent}) :: {a.name}{dims}")
        for n, d in locals_.items():
            if d.dims:
                if any(dd.upper is None for dd in d.dims):
                    dims = ", ".join(":" for _ in d.dims)
                    lines.append(f"  {_ftype(d.type)}, allocatable :: {n}({dims})")
                else:
                    lines.append(
                        f"  {_ftype(d.type)} :: {n}({', '.join(_fdim(x) for x in d.dims)})"
                    )
            else:
                lines.append(f"  {_ftype(d.type)} :: {n}")
        header = [_wrap_fortran(x, self.fixed) for x in lines]
        io = _io_lines(stmts_nodes=None, prog=prog, start=start, end=end)
        comment = "C" if self.fixed else "!"
        body = []
        for ln in range(start, end + 1):
            text = self.lines[ln - 1]
            if ln in io:
                body.append(f"{comment} {text.strip()[:60]}   (output left out of the kernel)")
            else:
                body.append(text)
        # The program's internal procedures the nest calls come along (host association
        # then binds their references to the program's variables to this subroutine's).
        called = {s.name for s in ir.walk(stmts) if isinstance(s, ir.CallStmt)}
        called |= {
            c.name
            for st in ir.walk(stmts)
            for e in _stmt_exprs(st)
            for c in ir.walk_expr(e)
            if isinstance(c, ir.Call)
        }
        inner = [i for i in prog.internal if i.name in called]
        if inner:
            body.append(_wrap_fortran("contains", self.fixed))
            for i in prog.internal:  # all of them: they may call each other
                body.append(self._unit_text(i.start, i.end))
        footer = _wrap_fortran(f"end subroutine {name}", self.fixed)
        return lib + "\n".join(header + body + [footer]) + "\n"


def constants_of(scope: _Scope) -> dict[str, ir.Const]:
    return dict(scope.consts)


def _pass_host_variables(
    host: ir.Procedure,
    functions: dict[str, ir.Procedure],
    internal: set[str],
    body: list[ir.Stmt] | None = None,
) -> dict[str, ir.Procedure]:
    """Turn host association into explicit arguments for the host's internal procedures.

    An internal procedure that reads its host's variables gets them as extra trailing dummy
    arguments (arrays are passed whole and may be updated in place; scalars must only be
    read), and every call site passes them. The backends then see ordinary procedures.
    """
    import copy

    free: dict[str, list[str]] = {}
    for name in internal & set(functions):
        fp = functions[name]
        own = set(fp.decls) | set(functions) | INTRINSICS
        names = sorted(n for n in _names_in(fp.body) - own if n in host.decls)
        names = [n for n in names if host.decls[n].parameter is None]
        written = _written_names(fp.body)
        if any(n in written and not host.decls[n].dims for n in names):
            continue  # a host scalar assigned inside: left for the diagnostics
        if names:
            free[name] = names
    if not free:
        return functions
    out = dict(functions)
    for name, names in free.items():
        fp = copy.deepcopy(functions[name])
        for n in names:
            d = copy.deepcopy(host.decls[n])
            d.intent = "inout" if d.dims else "in"
            fp.decls[n] = d
        fp.args = list(fp.args) + names
        out[name] = fp
    from kernels.engine.backends.common import stmt_exprs

    bodies = [host.body if body is None else body] + [fp.body for fp in out.values()]
    calls: dict[int, ir.Call] = {}
    for block in bodies:
        for st in ir.walk(block):
            if isinstance(st, ir.CallStmt) and st.name in free:
                st.args = list(st.args) + [ir.Var(n) for n in free[st.name]]
            for e in stmt_exprs(st):
                for c in ir.walk_expr(e):
                    if isinstance(c, ir.Call) and c.name in free:
                        calls[id(c)] = c
    for c in calls.values():
        c.args = list(c.args) + [ir.Var(n) for n in free[c.name]]
    return out


def _callee_problems(functions: dict[str, ir.Procedure], procs, consts) -> list[ir.Unsupported]:
    """Unsupported constructs inside callees, and callees that use their host's variables."""
    out: list[ir.Unsupported] = []
    for name, fp in functions.items():
        pinfo = procs.get(name)
        if pinfo is not None:
            out.extend(pinfo.unsupported)
        pconsts = set(consts)
        if pinfo is not None and pinfo.scope is not None:
            pconsts |= set(pinfo.scope.consts)
        known = set(fp.decls) | pconsts | set(functions) | INTRINSICS
        for n in sorted(_names_in(fp.body) - known):
            out.append(
                ir.Unsupported(
                    f"{fp.kind} {name} uses variable {n} of its host (host association)",
                    fp.line,
                    1,
                    n,
                )
            )
    return out


def _call_problems(body, functions: dict[str, ir.Procedure], decls) -> list[ir.Unsupported]:
    """CALLs whose actual arguments do not match the dummies one to one (sequence association)."""
    out = []
    for s in ir.walk(body):
        if not isinstance(s, ir.CallStmt) or s.name not in functions:
            continue
        callee = functions[s.name]
        if len(s.args) != len(callee.args):
            out.append(ir.Unsupported(f"CALL {s.name} with optional/missing arguments", s.line, 1))
            continue
        for dummy, actual in zip(callee.args, s.args, strict=True):
            d = callee.decls.get(dummy)
            rank = len(d.dims) if d is not None else 0
            if rank == 0:
                continue
            ok = isinstance(actual, ir.Var) and actual.name in decls
            ok = ok and len(decls[actual.name].dims) == rank
            if not ok:
                out.append(
                    ir.Unsupported(
                        f"CALL {s.name}: array argument {dummy} is not a whole array of the same "
                        "rank (sequence association)",
                        s.line,
                        1,
                    )
                )
    return out


def _wrap_fortran(line: str, fixed: bool) -> str:
    """Fit a generated statement in the source form's line length (72 fixed / 132 free)."""
    text = line.strip()
    if fixed:
        width = 66  # columns 7-72
        parts = [text[k : k + width] for k in range(0, len(text), width)] or [""]
        return "\n".join(("      " if k == 0 else "     &") + p for k, p in enumerate(parts))
    indent = line[: len(line) - len(line.lstrip())]
    width = 120
    if len(line) <= width:
        return line
    out = []
    rest = text
    first = True
    while len(rest) > width:
        cut = rest.rfind(",", 0, width)
        cut = width if cut <= 0 else cut + 1
        out.append(("" if first else "&") + rest[:cut] + "&")
        rest = rest[cut:]
        first = False
    out.append("&" + rest)
    return "\n".join(indent + x for x in out)


def _stmt_exprs(st):
    from kernels.engine.backends.common import stmt_exprs

    return stmt_exprs(st)


def _io_lines(stmts_nodes, prog, start, end) -> set[int]:
    """Lines of PRINT/WRITE(*) statements between start and end (they are left out)."""
    out: set[int] = set()
    from fparser.two.utils import walk

    for node in prog.exec_nodes:
        for sub in walk(node):
            if _cls(sub) in ("Print_Stmt", "Write_Stmt"):
                ln = _line(sub)
                if start <= ln <= end:
                    out.update(range(ln, _end_line(sub) + 1))
    return out


def _ftype(t: ir.FType) -> str:
    if t.base == "logical":
        return "logical"
    return f"{t.base}({t.kind})"


def _fconst(c: ir.Const) -> str:
    if c.type.base == "logical":
        return ".true." if c.value else ".false."
    if c.type.base == "integer":
        return str(c.value)
    text = repr(float(c.value))
    if "e" in text:
        mant, ex = text.split("e")
        return f"{mant}{'d' if c.type.kind == 8 else 'e'}{ex}"
    return text + ("d0" if c.type.kind == 8 else "")


def _fexpr(e: ir.Expr) -> str:
    if isinstance(e, ir.Const):
        if e.type.base == "integer" and e.value < 0:
            return f"({e.value})"
        return _fconst(e)
    if isinstance(e, ir.Var):
        return e.name
    if isinstance(e, ir.UnaryOp):
        return f"(-{_fexpr(e.operand)})" if e.op == "-" else _fexpr(e.operand)
    if isinstance(e, ir.BinOp):
        return f"({_fexpr(e.left)} {e.op} {_fexpr(e.right)})"
    if isinstance(e, ir.Call):
        return f"{e.name}({', '.join(_fexpr(a) for a in e.args)})"
    if isinstance(e, ir.ArrayRef):
        return f"{e.name}({', '.join(_fexpr(a) for a in e.indices)})"
    raise ValueError(e)


def _fdim(d: ir.Dim) -> str:
    if d.upper is None:
        return ":"
    lo = _fexpr(d.lower)
    if lo == "1":
        return _fexpr(d.upper)
    return f"{lo}:{_fexpr(d.upper)}"


def _column_probes(text: str) -> list[str]:
    low = text.lower().strip()
    probes = []
    if low:
        probes.append(low[:40])
        first = re.split(r"[\s(=]", low)[0]
        if first:
            probes.append(first)
    return probes


def _names_in_expr(e) -> set[str]:
    out = set()
    for sub in ir.walk_expr(e):
        if isinstance(sub, ir.Var):
            out.add(sub.name)
        elif isinstance(sub, ir.ArrayRef):
            out.add(sub.name)
    return out


def _names_in(stmts: list[ir.Stmt]) -> set[str]:
    from kernels.engine.backends.common import stmt_exprs

    out: set[str] = set()
    for s in ir.walk(stmts):
        for e in stmt_exprs(s):
            out |= _names_in_expr(e)
        if isinstance(s, ir.Assign):
            out.add(s.target.name)
        if isinstance(s, ir.Loop):
            out.add(s.var)
        if isinstance(s, ir.Allocate):
            out.add(s.name)
            for d in s.dims:
                out |= _names_in_expr(d.lower) | _names_in_expr(d.upper)
    return out


def _written_names(stmts: list[ir.Stmt]) -> set[str]:
    out = set()
    for s in ir.walk(stmts):
        if isinstance(s, ir.Assign):
            out.add(s.target.name)
        elif isinstance(s, ir.Loop):
            out.add(s.var)
        elif isinstance(s, ir.CallStmt):
            for a in s.args:
                if isinstance(a, (ir.Var, ir.ArrayRef)):
                    out.add(a.name)
    return out


def _reads(name: str, stmts: list[ir.Stmt]) -> bool:
    from kernels.engine.backends.common import reads_var

    return reads_var(stmts, name)


def _read_before_write(name: str, stmts: list[ir.Stmt]) -> bool:
    """Conservative: True unless every path writes ``name`` (a scalar) before reading it."""
    state = _rbw_block(name, stmts, False)
    return state == "read"


def _rbw_block(name: str, stmts: list[ir.Stmt], written: bool):
    from kernels.engine.backends.common import stmt_exprs

    for s in stmts:
        if written:
            return "written"
        reads = any(name in _names_in_expr(e) for e in stmt_exprs(s))
        if isinstance(s, ir.Assign):
            if reads:
                return "read"
            if isinstance(s.target, ir.Var) and s.target.name == name:
                written = True
            elif isinstance(s.target, ir.ArrayRef) and s.target.name == name:
                # An element write does not define the whole array.
                pass
        elif isinstance(s, ir.Loop):
            if reads:
                return "read"
            if s.var == name:
                written = True
                continue
            r = _rbw_block(name, s.body, False)
            if r == "read":
                return "read"
        elif isinstance(s, ir.WhileLoop):
            if reads:
                return "read"
            if _rbw_block(name, s.body, False) == "read":
                return "read"
        elif isinstance(s, ir.If):
            if reads:
                return "read"
            results = [_rbw_block(name, b, False) for _, b in s.branches]
            results.append(_rbw_block(name, s.orelse, False))
            if "read" in results:
                return "read"
            if all(r == "written" for r in results):
                written = True
        elif isinstance(s, ir.CallStmt):
            if any(isinstance(a, (ir.Var, ir.ArrayRef)) and a.name == name for a in s.args):
                return "read"
        elif reads:
            return "read"
    return "written" if written else "none"


def _infer_intent(name: str, body: list[ir.Stmt]) -> str:
    written = name in _written_names(body)
    if not written:
        return "in"
    if _read_before_write(name, body):
        return "inout"
    return "out" if not _reads(name, body) else "inout"


def _infer_assumed_extents(name: str, dims: list[ir.Dim], proc: ir.Procedure) -> list[ir.Dim]:
    """For assumed-shape dummies, find an integer argument that bounds a loop indexing them."""
    out = list(dims)
    int_args = {
        a
        for a in proc.args
        if a in proc.decls and proc.decls[a].type.base == "integer" and not proc.decls[a].dims
    }
    if not int_args:
        return out
    loops = {s.var: s for s in ir.walk(proc.body) if isinstance(s, ir.Loop)}
    for s in ir.walk(proc.body):
        from kernels.engine.backends.common import stmt_exprs

        exprs = stmt_exprs(s)
        if isinstance(s, ir.Assign):
            exprs = exprs + [s.target]
        for e in exprs:
            for sub in ir.walk_expr(e):
                if isinstance(sub, ir.ArrayRef) and sub.name == name:
                    for k, ix in enumerate(sub.indices):
                        if k >= len(out) or out[k].upper is not None:
                            continue
                        if isinstance(ix, ir.Var) and ix.name in loops:
                            stop = loops[ix.name].stop
                            if isinstance(stop, ir.Var) and stop.name in int_args:
                                out[k] = ir.Dim(out[k].lower, stop)
    return out
