"""The small typed IR every stage of the translator speaks.

The frontend (fparser2 parse tree -> IR) builds it, analysis annotates it, the backends print it.
Nodes are plain dataclasses so that a test can build one by hand. Every statement carries the
source line (and, where known, column) it came from, so diagnostics and generated comments can
point back at the Fortran.

Contract for other stages (verify, profile, backends, the service layer):
- ``Kernel`` is what the pipeline translates and verifies: ``args`` are in Fortran call order and
  ``fortran_source`` is a compilable Fortran text that defines ``fortran_entry`` (as an external
  subroutine, or inside ``fortran_module`` when that is set), in the source form of the kernel's
  ``file`` (:func:`kernels.engine.frontend.parse.is_fixed_form`). When the project mixes fixed
  and free form, the units of the other form are in ``compiled_before``/``compiled_after``: each
  a file of one form, compiled in that order around ``fortran_source``.
- ``Arg.dims`` holds one ``Dim`` per rank; bounds are IR expressions over the other arguments and
  named constants, evaluated with :func:`eval_int`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

# --------------------------------------------------------------------------------------------
# Types


@dataclass(frozen=True)
class FType:
    """A Fortran intrinsic type: base is 'integer', 'real', 'logical' or 'complex'; kind in bytes."""

    base: str
    kind: int = 4

    @property
    def numpy_dtype(self) -> str:
        if self.base == "real":
            return "float64" if self.kind == 8 else "float32"
        if self.base == "integer":
            return "int64" if self.kind == 8 else "int32"
        if self.base == "logical":
            return "bool"  # converted to/from int32 at the Fortran boundary by verify
        if self.base == "complex":
            return "complex128" if self.kind == 16 else "complex64"
        raise ValueError(f"no dtype for {self}")

    def __str__(self) -> str:
        return f"{self.base}({self.kind})"


INTEGER = FType("integer", 4)
REAL4 = FType("real", 4)
REAL8 = FType("real", 8)
LOGICAL = FType("logical", 4)

# --------------------------------------------------------------------------------------------
# Expressions


@dataclass
class Const:
    value: int | float | bool
    type: FType


@dataclass
class Var:
    name: str  # lower-cased Fortran name


@dataclass
class Slice:
    """A section triplet ``lower:upper:step``; ``None`` parts are open."""

    lower: Expr | None = None
    upper: Expr | None = None
    step: Expr | None = None


@dataclass
class ArrayRef:
    name: str
    indices: list[Expr | Slice]


@dataclass
class BinOp:
    """op is one of + - * / ** == /= < <= > >= and or eqv neqv."""

    op: str
    left: Expr
    right: Expr


@dataclass
class UnaryOp:
    """op is one of - + not."""

    op: str
    operand: Expr


@dataclass
class Call:
    """An intrinsic or user function call in an expression (lower-cased name)."""

    name: str
    args: list[Expr]
    keywords: dict[str, Expr] = field(default_factory=dict)


Expr = Const | Var | ArrayRef | BinOp | UnaryOp | Call

# --------------------------------------------------------------------------------------------
# Declarations


@dataclass
class Dim:
    """One array dimension. ``upper is None`` means assumed shape (``:``) or assumed size (``*``)."""

    lower: Expr
    upper: Expr | None


@dataclass
class Decl:
    name: str
    type: FType
    dims: list[Dim] = field(default_factory=list)
    intent: str | None = None  # 'in' | 'out' | 'inout' | None
    parameter: Expr | None = None  # value of a named constant
    allocatable: bool = False
    line: int = 0
    derived: str | None = None  # a variable of this derived TYPE (``type`` is then DERIVED)

    @property
    def is_array(self) -> bool:
        return bool(self.dims)


DERIVED = FType("type", 0)  # the placeholder type of a derived-type variable (never printed)


@dataclass
class DerivedType:
    """A TYPE defined in the given files: its data components in order.

    ``problem`` says why variables of the type cannot be scalarised (EXTENDS, PRIVATE
    components...); ``pointers`` are POINTER components (unsupported when a kernel uses them).
    """

    name: str
    components: dict[str, Decl]
    module: str | None = None  # the module that defines it (None: inside a procedure)
    pointers: set[str] = field(default_factory=set)
    problem: str = ""
    line: int = 0


@dataclass
class ComponentOf:
    """A port argument that is one component of a derived-type dummy of the original.

    The port takes each component the kernel uses as its own argument (structure of arrays:
    ``p(i)%x`` of ``type(particle) :: p(n)`` is ``p_x(i)``); ``path`` is the component chain
    (``['g', 'x']`` for ``f%g%x``).
    """

    parent: str
    path: list[str]
    allocatable: bool = False  # the array part is an ALLOCATABLE component


@dataclass
class ModuleVariable:
    """A port argument that is a variable of a module (not a PARAMETER) the kernel uses."""

    module: str
    name: str  # its name in the module (the argument has the name the kernel uses)
    allocatable: bool = False  # the wrapper allocates it with the run's bounds


@dataclass
class DerivedArg:
    """A derived-type dummy argument of the original, replaced in the port by its components."""

    name: str
    type_name: str
    module: str  # the module defining the TYPE (the verification wrapper USEs it)
    dims: list[Dim] = field(default_factory=list)  # an array of derived type: its dimensions


@dataclass
class Arg:
    """A dummy argument of a kernel, in call order."""

    name: str
    type: FType
    intent: str  # 'in' | 'out' | 'inout' (inferred from use when the source does not say)
    dims: list[Dim] = field(default_factory=list)
    allocatable: bool = False  # an ALLOCATABLE dummy: the caller passes an allocated array
    # Not a dummy of the original: a component of a derived-type dummy, or a module variable.
    source: ComponentOf | ModuleVariable | None = None

    @property
    def is_array(self) -> bool:
        return bool(self.dims)

    @property
    def rank(self) -> int:
        return len(self.dims)


# --------------------------------------------------------------------------------------------
# Statements


@dataclass
class Assign:
    target: Var | ArrayRef
    value: Expr
    line: int = 0


@dataclass
class Loop:
    """A counted DO loop. The trip count is evaluated once, before the first iteration."""

    var: str
    start: Expr
    stop: Expr
    step: Expr | None
    body: list[Stmt]
    line: int = 0
    label: str | None = None  # construct name or statement label
    # Filled in by analysis:
    parallel: bool = False
    reason: str = ""  # why it is (not) parallel
    private: list[str] = field(default_factory=list)
    reductions: list[Reduction] = field(default_factory=list)
    private_arrays: list[str] = field(default_factory=list)  # local arrays, one copy per iteration


@dataclass
class WhileLoop:
    cond: Expr
    body: list[Stmt]
    line: int = 0
    label: str | None = None


@dataclass
class If:
    """IF / ELSE IF chains: ``branches`` are (condition, body) in order; ``orelse`` is ELSE."""

    branches: list[tuple[Expr, list[Stmt]]]
    orelse: list[Stmt] = field(default_factory=list)
    line: int = 0


@dataclass
class Exit:
    line: int = 0
    label: str | None = None


@dataclass
class Cycle:
    line: int = 0
    label: str | None = None


@dataclass
class CallStmt:
    name: str
    args: list[Expr]
    line: int = 0


@dataclass
class Return:
    line: int = 0


@dataclass
class Unsupported:
    """A construct the frontend does not translate. Never dropped silently: it becomes a diagnostic."""

    construct: str
    line: int
    column: int = 1
    text: str = ""


@dataclass
class Allocate:
    """ALLOCATE of a local allocatable array (added for allocatable locals; DEALLOCATE is a no-op)."""

    name: str
    dims: list[Dim]
    line: int = 0


Stmt = Assign | Loop | WhileLoop | If | Exit | Cycle | CallStmt | Return | Unsupported | Allocate


@dataclass
class Reduction:
    var: str
    op: str  # '+', '*', 'min', 'max', 'argmax', 'argmin'
    index_vars: list[str] = field(default_factory=list)  # for argmax/argmin: the location scalars


# --------------------------------------------------------------------------------------------
# Program units


@dataclass
class Procedure:
    """A subroutine or function (possibly a module procedure)."""

    kind: str  # 'subroutine' | 'function'
    name: str
    args: list[str]
    decls: dict[str, Decl]
    body: list[Stmt]
    line: int = 0
    result: str | None = None  # function result variable
    pure: bool = False
    elemental: bool = False
    module: str | None = None


@dataclass
class SourcePart:
    """Program units of one user file compiled with a kernel, in that file's source form."""

    file: str  # the user's file they come from: its name decides the form
    text: str


@dataclass
class Kernel:
    """A translatable unit: a subroutine, or a loop nest extracted from a program."""

    name: str
    args: list[Arg]
    body: list[Stmt]
    locals: dict[str, Decl]
    fortran_source: str
    fortran_entry: str
    line: int = 0
    fortran_module: str | None = None
    constants: dict[str, Const] = field(default_factory=dict)
    functions: dict[str, Procedure] = field(default_factory=dict)  # pure/elemental callees
    unsupported: list[Unsupported] = field(default_factory=list)
    origin: str = "subroutine"  # 'subroutine' | 'function' | 'extracted'
    # Added by the frontend: the result variable of a FUNCTION kernel, and notes for the report
    # (e.g. PRINT statements left out of an extracted program nest).
    result: str | None = None
    notes: list[str] = field(default_factory=list)
    # For each line of ``fortran_source``, the line of the user's file it was copied from (0 for
    # a generated line). Empty means ``fortran_source`` is the user's text from line 1.
    source_lines: list[int] = field(default_factory=list)
    file: str = ""  # the file the kernel is in, as the user named it
    # Units of a project that mixes source forms, compiled before / after ``fortran_source``
    # (a module before the units that USE it); empty when every file has the kernel's form.
    compiled_before: list[SourcePart] = field(default_factory=list)
    compiled_after: list[SourcePart] = field(default_factory=list)
    # The original's dummy arguments in call order, when they are not ``args`` one to one (a
    # derived-type dummy is replaced by its components, module variables are added).
    fortran_args: list[str] | None = None
    derived_args: dict[str, DerivedArg] = field(default_factory=dict)

    def arg(self, name: str) -> Arg:
        for a in self.args:
            if a.name == name:
                return a
        raise KeyError(name)


# --------------------------------------------------------------------------------------------
# Helpers shared by the stages


def argument_sources(kernel: Kernel) -> list[str]:
    """One line per port argument that is no dummy of the original (calling convention, report)."""
    lines = []
    for name, da in kernel.derived_args.items():
        parts = [
            f"{'%'.join([name, *a.source.path])} -> {a.name}"
            for a in kernel.args
            if isinstance(a.source, ComponentOf) and a.source.parent == name
        ]
        lines.append(
            f"argument {name} (TYPE({da.type_name})) is passed as its components, one argument "
            f"each (structure of arrays): {', '.join(parts) or 'none used'}"
        )
    for a in kernel.args:
        if isinstance(a.source, ModuleVariable):
            lines.append(
                f"module variable {a.source.name} of module {a.source.module} is argument "
                f"{a.name}, intent({a.intent}): the caller passes its value"
                + (" and gets the new one back" if a.intent != "in" else "")
            )
    return lines


def walk(stmts: list[Stmt]) -> Iterator[Stmt]:
    """Every statement, depth first, in source order."""
    for s in stmts:
        yield s
        if isinstance(s, (Loop, WhileLoop)):
            yield from walk(s.body)
        elif isinstance(s, If):
            for _, body in s.branches:
                yield from walk(body)
            yield from walk(s.orelse)


def prune(stmts: list[Stmt], drop: Callable[[Stmt], bool]) -> list[Stmt]:
    """A copy of the statement tree without the statements ``drop`` selects (at any depth).

    Loops are rebuilt from their header only (analysis annotations are not carried over): the
    callers use the pruned tree to ask what the code *around* a nest reads and writes.
    """
    out: list[Stmt] = []
    for s in stmts:
        if drop(s):
            continue
        if isinstance(s, Loop):
            out.append(Loop(s.var, s.start, s.stop, s.step, prune(s.body, drop), s.line))
        elif isinstance(s, WhileLoop):
            out.append(WhileLoop(s.cond, prune(s.body, drop), s.line))
        elif isinstance(s, If):
            out.append(
                If([(c, prune(b, drop)) for c, b in s.branches], prune(s.orelse, drop), s.line)
            )
        else:
            out.append(s)
    return out


def walk_expr(
    e: Expr | Slice | None, skip: Callable[[Expr | Slice], bool] | None = None
) -> Iterator[Expr | Slice]:
    """Every sub-expression, parents first; ``skip`` prunes a node and everything below it."""
    if e is None or (skip is not None and skip(e)):
        return
    yield e
    if isinstance(e, Slice):
        for part in (e.lower, e.upper, e.step):
            yield from walk_expr(part, skip)
    elif isinstance(e, ArrayRef):
        for ix in e.indices:
            yield from walk_expr(ix, skip)
    elif isinstance(e, BinOp):
        yield from walk_expr(e.left, skip)
        yield from walk_expr(e.right, skip)
    elif isinstance(e, UnaryOp):
        yield from walk_expr(e.operand, skip)
    elif isinstance(e, Call):
        for a in e.args:
            yield from walk_expr(a, skip)
        for a in e.keywords.values():
            yield from walk_expr(a, skip)


def fortran_text(e: Expr | Slice | None) -> str:
    """Compact Fortran-looking text of an expression (``(n-2)*m``), for formulas and messages."""
    if e is None:
        return ""
    if isinstance(e, Const):
        return str(e.value).lower() if isinstance(e.value, bool) else str(e.value)
    if isinstance(e, Var):
        return e.name
    if isinstance(e, ArrayRef):
        return f"{e.name}({','.join(fortran_text(i) for i in e.indices)})"
    if isinstance(e, Slice):
        text = f"{fortran_text(e.lower)}:{fortran_text(e.upper)}"
        return text + (f":{fortran_text(e.step)}" if e.step is not None else "")
    if isinstance(e, BinOp):
        return f"({fortran_text(e.left)}{e.op}{fortran_text(e.right)})"
    if isinstance(e, UnaryOp):
        return f"{e.op}{fortran_text(e.operand)}"
    if isinstance(e, Call):
        return f"{e.name}({','.join(fortran_text(a) for a in e.args)})"
    return "?"


def fortran_comment_text(e: Expr) -> str:
    """A compact Fortran-like rendering of an expression, for comments."""
    if isinstance(e, Const):
        if e.type.base == "logical":
            return ".true." if e.value else ".false."
        return str(e.value)
    if isinstance(e, Var):
        return e.name
    if isinstance(e, ArrayRef):
        return f"{e.name}({', '.join(fortran_comment_text(i) if not isinstance(i, Slice) else ':' for i in e.indices)})"
    if isinstance(e, UnaryOp):
        return f"{'.not. ' if e.op == 'not' else e.op}{fortran_comment_text(e.operand)}"
    if isinstance(e, BinOp):
        op = e.op if e.op not in ("and", "or", "eqv", "neqv") else f".{e.op}."
        left, right = fortran_comment_text(e.left), fortran_comment_text(e.right)
        if isinstance(e.left, BinOp):
            left = f"({left})"
        if isinstance(e.right, BinOp):
            right = f"({right})"
        return f"{left} {op} {right}"
    if isinstance(e, Call):
        return f"{e.name}({', '.join(fortran_comment_text(a) for a in e.args)})"
    return "?"


class UnsupportedConstruct(Exception):
    """Raised while building or lowering IR for a construct that is not translated.

    The statement visitor turns it into an :class:`Unsupported` marker with its line.
    """

    def __init__(self, construct: str, line: int = 0, text: str = ""):
        super().__init__(construct)
        self.construct = construct
        self.line = line
        self.text = text


class NotConstant(ValueError):
    """Raised by eval_int when an expression depends on something not in the environment."""


def eval_int(expr: Expr, env: Mapping[str, int | float]) -> int:
    """Evaluate an integer expression (array bounds, sizes) with Fortran integer semantics."""
    value = _eval(expr, env)
    if isinstance(value, float):
        if value != math.floor(value):
            raise NotConstant(f"bound is not an integer: {value}")
        return int(value)
    return int(value)


def _eval(e: Expr, env: Mapping[str, int | float]) -> int | float:
    if isinstance(e, Const):
        return e.value  # type: ignore[return-value]
    if isinstance(e, Var):
        if e.name not in env:
            raise NotConstant(e.name)
        return env[e.name]
    if isinstance(e, UnaryOp):
        v = _eval(e.operand, env)
        return -v if e.op == "-" else v
    if isinstance(e, BinOp):
        a, b = _eval(e.left, env), _eval(e.right, env)
        if e.op == "+":
            return a + b
        if e.op == "-":
            return a - b
        if e.op == "*":
            return a * b
        if e.op == "/":
            if isinstance(a, int) and isinstance(b, int):
                q = abs(a) // abs(b)  # Fortran truncates toward zero
                return q if (a >= 0) == (b >= 0) else -q
            return a / b
        if e.op == "**":
            return a**b
    if isinstance(e, Call):
        vals = [_eval(a, env) for a in e.args]
        if e.name == "max":
            return max(vals)
        if e.name == "min":
            return min(vals)
        if e.name == "abs":
            return abs(vals[0])
        if e.name == "int":
            return int(vals[0])
        if e.name == "mod":
            a, b = vals
            return int(math.fmod(a, b))
    raise NotConstant(f"cannot evaluate {e!r}")
