"""The statement visitor: one handler per fparser2 node class -> IR statements and expressions.

In the style of Loki's ``FParser2IR`` / PSyclone's ``Fparser2Reader`` handler table
(``_stmt_<Class>`` for statements, ``_expr_<Class>`` for expressions). A node without a handler
becomes an explicit :class:`ir.Unsupported` that keeps its line, never a silent drop. Array
syntax and array reductions are lowered by :class:`kernels.engine.lowering.ArrayLowering`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kernels.engine import ir
from kernels.engine.dataflow import names_in_expr
from kernels.engine.frontend.constants import _typed, const_value
from kernels.engine.frontend.derived import ComponentRef, DerivedTypeAccess
from kernels.engine.frontend.nodes import (
    _cls,
    _construct_name,
    _end_line,
    _flatten,
    _lhs_construct,
    _line,
    _name,
)
from kernels.engine.intrinsics import COMMAND_LINE, INTRINSICS, LOWERED
from kernels.engine.lowering import ArrayLowering, _only_same_element
from kernels.engine.types import Scope, type_of

if TYPE_CHECKING:
    from kernels.engine.frontend.units import _FileBuilder


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
        # CHARACTER locals: fine to declare (a message buffer, ERRMSG=), unsupported to use.
        self.strings: set[str] = set()
        self.types: dict[str, ir.DerivedType] = dict(parent.types) if parent else {}
        self.module: str | None = (
            None  # set on a module's own scope: its decls are module variables
        )
        # Module variables made visible by USE: local name -> (module, name there, declaration).
        self.imported: dict[str, tuple[str, str, ir.Decl]] = {}
        self.components: dict[str, ComponentRef] = {}  # flat name -> the component it stands for
        # Initialised (non-PARAMETER) locals of a procedure: name -> (value, declaration node).
        self.initialised: dict[str, tuple[ir.Expr, object]] = {}

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
            if name in scope.imported:
                return scope.imported[name][2]
            scope = scope.parent
        return None

    def module_variable(self, name: str) -> tuple[str, str, ir.Decl] | None:
        """(module, its name there, declaration) when ``name`` is a module variable here."""
        scope: _Scope | None = self
        while scope is not None:
            if name in scope.decls:
                d = scope.decls[name]
                if scope.module is None or d.parameter is not None:
                    return None
                return scope.module, name, d
            if name in scope.imported:
                return scope.imported[name]
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
    owner: _FileBuilder | None = None  # the file the unit is in (projects have several)


class _ProcBuilder(DerivedTypeAccess, ArrayLowering):
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
        self.spans: dict[int, tuple[int, int]] = {}  # id(Loop/WhileLoop/If) -> (first, last line)
        # id(statement) -> the source statement it came from, for the statements of a source
        # statement that became several (see :meth:`stmt`).
        self.source_statement: dict[int, int] = {}

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
        elif cls == "Derived_Type_Def":
            self._derived_type_def(node)
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
            self._unsupported(f"USE of module {modname} not defined in the given files", node)
            return
        for local, remote in _use_names(node, mod):
            if remote in mod["consts"]:
                self.scope.consts[local] = mod["consts"][remote]
            if remote in mod["procs"]:
                self.scope.procedures[local] = mod["procs"][remote]
            if remote in mod["types"]:
                self.scope.types[local] = mod["types"][remote]
            if remote in mod["vars"]:
                self.scope.imported[local] = mod["vars"][remote]

    def _type_spec(self, tnode, line: int) -> ir.FType:
        cls = _cls(tnode)
        if cls == "Declaration_Type_Spec":
            raise ir.UnsupportedConstruct("derived TYPE variable", line, str(tnode))
        if cls != "Intrinsic_Type_Spec":
            raise ir.UnsupportedConstruct(f"type {tnode}", line, str(tnode))
        base = str(tnode.items[0]).lower()
        sel = tnode.items[1]
        if base == "double precision":
            return ir.REAL8
        if base == "double complex":
            raise ir.UnsupportedConstruct("COMPLEX type", line, str(tnode))
        if base not in ("integer", "real", "logical"):
            raise ir.UnsupportedConstruct(f"{base.upper()} type", line, str(tnode))
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
                        raise ir.UnsupportedConstruct(
                            f"unknown kind {sel}", line, str(tnode)
                        ) from None
            else:
                raise ir.UnsupportedConstruct(f"type selector {sel}", line, str(tnode))
        if base == "real" and kind not in (4, 8):
            raise ir.UnsupportedConstruct(f"REAL(kind={kind})", line, str(tnode))
        if base == "integer" and kind not in (1, 2, 4, 8):
            raise ir.UnsupportedConstruct(f"INTEGER(kind={kind})", line, str(tnode))
        if base == "integer" and kind in (1, 2):
            kind = 4
        if base == "logical":
            kind = 4
        return ir.FType(base, kind)

    def _type_decl(self, node) -> None:
        line = _line(node)
        tnode, attrs, entities = node.items
        names = [_name(ent.items[0]) for ent in entities.children]
        dummies = getattr(self.info, "dummy_args", ())
        if (
            _cls(tnode) == "Intrinsic_Type_Spec"
            and str(tnode.items[0]).lower() == "character"
            and not set(names) & set(dummies)
        ):
            for nm in names:
                self.scope.strings.add(nm)
            return
        derived = None
        try:
            if _cls(tnode) == "Declaration_Type_Spec":
                derived = self._derived_decl_type(tnode, line)
                t = ir.DERIVED
            else:
                t = self._type_spec(tnode, line)
        except ir.UnsupportedConstruct as u:
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
            d.derived = derived
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
                elif self.info.kind in ("subroutine", "function"):
                    # A constant unless the procedure assigns it (decided once the body is
                    # built, see units._resolve_initialised).
                    self.scope.initialised[nm] = (value, node)
                elif self.info.kind != "module":  # a module variable's first value is harmless
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
                    raise ir.UnsupportedConstruct(f"array spec {spec}", line, str(spec))
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
            raise ir.UnsupportedConstruct(
                f"expression {cls.replace('_', ' ').lower()}", 0, str(node)
            )
        return handler(node)

    def _expr_Name(self, node) -> ir.Expr:
        name = _name(node)
        if name in self.scope.pointers:
            raise ir.UnsupportedConstruct("POINTER variable", 0, name)
        decl = self.scope.lookup(name)
        if decl is not None and decl.derived is not None:
            raise ir.UnsupportedConstruct(
                f"derived-type variable {name} used whole (assigned or passed as a whole)", 0, name
            )
        if any(name in s.strings for s in _scope_chain(self.scope)):
            raise ir.UnsupportedConstruct("CHARACTER variable", 0, name)
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
            raise ir.UnsupportedConstruct(f"unknown kind parameter {text}", 0, text)
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
            raise ir.UnsupportedConstruct(f"REAL(kind={k}) literal", 0, text)
        return _typed(float(t), ir.FType("real", k))

    def _expr_Logical_Literal_Constant(self, node) -> ir.Expr:
        return ir.Const(str(node.items[0]).upper() == ".TRUE.", ir.LOGICAL)

    def _expr_Parenthesis(self, node) -> ir.Expr:
        return self.expr(node.items[1])

    def _binop(self, node) -> ir.Expr:
        left, op, right = node.items
        pyop = _OPS.get(str(op).lower())
        if pyop is None:
            raise ir.UnsupportedConstruct(f"operator {op}", 0, str(node))
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
        raise ir.UnsupportedConstruct("CHARACTER constant", 0, str(node))

    def _expr_Array_Constructor(self, node) -> ir.Expr:
        raise ir.UnsupportedConstruct("array constructor", 0, str(node))

    def _expr_Structure_Constructor(self, node) -> ir.Expr:
        return self._call_node(node.items[0], node.items[1])

    def _expr_Part_Ref(self, node) -> ir.Expr:
        name = _name(node.items[0])
        subs = node.items[1]
        decl = self.scope.lookup(name)
        if name in self.scope.pointers:
            raise ir.UnsupportedConstruct("POINTER variable", 0, str(node))
        if decl is not None and decl.dims:
            return ir.ArrayRef(name, [self._subscript(s) for s in subs.children])
        if decl is not None and not decl.dims and name not in self.scope.procedures:
            if name in INTRINSICS or self.file.find_procedure(name):
                return self._call_node(node.items[0], subs)
            raise ir.UnsupportedConstruct(
                f"{name} is used as an array but not declared with dimensions", 0, str(node)
            )
        return self._call_node(node.items[0], subs)

    def _expr_Function_Reference(self, node) -> ir.Expr:
        return self._call_node(node.items[0], node.items[1])

    def _expr_Intrinsic_Function_Reference(self, node) -> ir.Expr:
        name = _name(node.items[0])
        if name in COMMAND_LINE and name not in self.scope.procedures:
            raise ir.UnsupportedConstruct(_command_line_message(name), 0, str(node))
        if name not in INTRINSICS and name not in LOWERED and name not in self.scope.procedures:
            raise ir.UnsupportedConstruct(f"intrinsic {name.upper()}", 0, str(node))
        if name == "dot_product":
            # DOT_PRODUCT(x, y) of reals is SUM(x*y), accumulated in order.
            call = self._call_node(node.items[0], node.items[1])
            if len(call.args) != 2:
                raise ir.UnsupportedConstruct("DOT_PRODUCT arguments", 0, str(node))
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
        if name not in INTRINSICS and name not in self.scope.procedures and name not in LOWERED:
            proc = self.file.find_procedure(name)
            if proc is None:
                raise ir.UnsupportedConstruct(f"call of unknown function {name.upper()}", 0, name)
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
            out = handler(node)
        except ir.UnsupportedConstruct as u:
            return [self._unsupported(u.construct, node, u.line or line)]
        # Line spans of constructs, so a program's inner nests can be extracted on their own.
        end = _end_line(node)
        for s in out:
            if isinstance(s, (ir.Loop, ir.WhileLoop, ir.If)) and id(s) not in self.spans:
                self.spans[id(s)] = (s.line or line, max(end, s.line or line))
        if len(out) > 1:
            # ``x = maxval(...)`` became an initialisation, a loop and the assignment of the
            # result: a program's nest is extracted with all of them or not at all.
            for s in out:
                self.source_statement.setdefault(id(s), id(node))
        return out

    def _stmt_Assignment_Stmt(self, node) -> list[ir.Stmt]:
        line = _line(node)
        lhs_node, _, rhs_node = node.items
        if _cls(lhs_node) not in ("Name", "Part_Ref", "Data_Ref"):
            raise ir.UnsupportedConstruct(_lhs_construct(lhs_node), line, str(node))
        target = self.expr(lhs_node)
        value = self.expr(rhs_node)
        for e in (target, value):
            for sub in ir.walk_expr(e):
                if isinstance(sub, ir.Var):
                    self.ensure_declared(sub.name, line)
        if isinstance(target, ir.Call):
            # ``f(x) = ...`` where f is no array: a statement function.
            raise ir.UnsupportedConstruct("statement function", line, str(node))
        pre: list[ir.Stmt] = []
        value = self.hoist_reductions(value, pre, line)
        if isinstance(target, ir.Var) and target.name in self.info.proc_result_names:
            pass
        if self.is_array_valued(target):
            return pre + self.lower_array_assignment(target, value, line)
        if self.is_array_valued(value):
            raise ir.UnsupportedConstruct(
                "array-valued expression assigned to a scalar", line, str(node)
            )
        return pre + [ir.Assign(target, value, line)]

    def _stmt_Pointer_Assignment_Stmt(self, node) -> list[ir.Stmt]:
        raise ir.UnsupportedConstruct("pointer assignment (=>)", _line(node), str(node))

    def _stmt_If_Stmt(self, node) -> list[ir.Stmt]:
        line = _line(node)
        cond_node, action = node.items
        self.line_hint = line
        body = self.stmt(action)
        self.line_hint = 0
        if not body and _cls(action) in ("Print_Stmt", "Write_Stmt"):
            return []
        pre: list[ir.Stmt] = []
        cond = self.hoist_reductions(self.expr(cond_node), pre, line)
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
                cond = self.hoist_reductions(self.expr(child.items[0]), pre, line)
                self._declare_names(cond, line)
            elif c == "Else_If_Stmt":
                branches.append((cond, flush()))
                sub: list[ir.Stmt] = []
                cond = self.hoist_reductions(self.expr(child.items[0]), sub, _line(child))
                if sub:
                    raise ir.UnsupportedConstruct(
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
            raise ir.UnsupportedConstruct("DO without loop control (infinite DO)", line, str(head))
        if len(ctrl.items) > 3 and ctrl.items[3] is not None:
            return self._do_concurrent(ctrl.items[3], body, line, label)
        whilecond = ctrl.items[0]
        if whilecond is not None:
            pre: list[ir.Stmt] = []
            cond = self.hoist_reductions(self.expr(whilecond), pre, line)
            if pre:
                raise ir.UnsupportedConstruct(
                    "array reduction in DO WHILE condition", line, str(head)
                )
            self._declare_names(cond, line)
            return [ir.WhileLoop(cond, body, line, label)]
        var_node, bounds = ctrl.items[1]
        var = _name(var_node)
        self.ensure_declared(var, line)
        pre = []
        exprs = [self.hoist_reductions(self.expr(b), pre, line) for b in bounds]
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
            raise ir.UnsupportedConstruct("alternate RETURN", _line(node), str(node))
        return [ir.Return(_line(node))]

    def _stmt_Call_Stmt(self, node) -> list[ir.Stmt]:
        line = _line(node)
        name = _name(node.items[0])
        if _cls(node.items[0]) != "Name":
            raise ir.UnsupportedConstruct("CALL of a type-bound procedure", line, str(node))
        proc = self.scope.procedures.get(name) or self.file.find_procedure(name)
        if proc is None and name in COMMAND_LINE:
            raise ir.UnsupportedConstruct(_command_line_message(name), line, str(node))
        if proc is None:
            raise ir.UnsupportedConstruct(
                f"CALL of external subroutine {name.upper()}", line, str(node)
            )
        self.scope.procedures[name] = proc
        args = []
        if node.items[1] is not None:
            for a in node.items[1].children:
                if _cls(a) == "Actual_Arg_Spec":
                    raise ir.UnsupportedConstruct("keyword argument in CALL", line, str(node))
                e = self.expr(a)
                if isinstance(e, ir.ArrayRef) and any(isinstance(i, ir.Slice) for i in e.indices):
                    raise ir.UnsupportedConstruct(
                        "array section passed to a subroutine", line, str(node)
                    )
                args.append(e)
        for e in args:
            self._declare_names(e, line)
        return [ir.CallStmt(name, args, line)]

    def _stmt_Print_Stmt(self, node) -> list[ir.Stmt]:
        self.notes.append(f"line {_line(node)}: PRINT left out of the kernel (output only)")
        return []

    def _stmt_Write_Stmt(self, node) -> list[ir.Stmt]:
        control = str(node.items[0]).lower() if node.items else ""
        unit = re.sub(r"^unit\s*=\s*", "", control.split(",")[0].strip())
        if unit in ("*", "6", "0"):  # standard output or standard error
            self.notes.append(
                f"line {_line(node)}: WRITE({unit}) left out of the kernel (output only)"
            )
            return []
        raise ir.UnsupportedConstruct("WRITE to a file unit", _line(node), str(node))

    def _stmt_Allocate_Stmt(self, node) -> list[ir.Stmt]:
        line = _line(node)
        if node.items[0] is not None:
            raise ir.UnsupportedConstruct("ALLOCATE with a type spec", line, str(node))
        # STAT= and ERRMSG=: the port's allocation cannot fail, so STAT is 0 and ERRMSG is left
        # as it was, which is what Fortran does when the allocation succeeds.
        stat: ir.Expr | None = None
        options = node.items[2].children if len(node.items) > 2 and node.items[2] else ()
        for opt in options:
            keyword = str(opt.items[0]).lower()
            if keyword == "stat":
                stat = self.expr(opt.items[1])
                self._declare_names(stat, line)
            elif keyword != "errmsg":
                raise ir.UnsupportedConstruct(f"ALLOCATE with {keyword.upper()}=", line, str(node))
        out: list[ir.Stmt] = []
        for alloc in node.items[1].children:
            name = _name(alloc.items[0])
            decl = self.scope.lookup(name)
            if decl is None or not decl.allocatable:
                raise ir.UnsupportedConstruct(
                    f"ALLOCATE of non-allocatable {name}", line, str(node)
                )
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
        if isinstance(stat, (ir.Var, ir.ArrayRef)):
            out.append(ir.Assign(stat, ir.Const(0, ir.INTEGER), line))
        return out

    def _stmt_Stop_Stmt(self, node) -> list[ir.Stmt]:
        raise ir.UnsupportedConstruct("STOP statement", _line(node), str(node))

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
                raise ir.UnsupportedConstruct(
                    f"{_construct_name(c)} inside WHERE", _line(child), str(child)
                )
        return self._where(branches, _line(node))

    def _where(self, branches, line: int) -> list[ir.Stmt]:
        """WHERE/ELSEWHERE as one masked loop nest per assignment, in statement order.

        Fortran evaluates the masks once, before any assignment; re-evaluating them per
        element is only equivalent when no assignment of the construct writes a mask array.
        """
        masks = [self.expr(m) if m is not None else None for m, _ in branches]
        mask_names = {n for m in masks if m is not None for n in names_in_expr(m)}
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
                if not isinstance(target, (ir.Var, ir.ArrayRef)) or not self.is_array_valued(
                    target
                ):
                    raise ir.UnsupportedConstruct("WHERE assignment to a scalar", a_line, str(a))
                single = len(branches) == 1 and len(assigns) == 1
                if target.name in mask_names and not (
                    single and _only_same_element(masks[0], target)
                ):
                    raise ir.UnsupportedConstruct(
                        "WHERE assignment to an array its mask reads (needs a mask temporary)",
                        a_line,
                        str(a),
                    )
                value = self.expr(a.items[2])
                for e in (target, value) + ((cond,) if cond is not None else ()):
                    self._declare_names(e, a_line)
                pre: list[ir.Stmt] = []
                value = self.hoist_reductions(value, pre, a_line)
                out.extend(pre)
                out.extend(self.lower_array_assignment(target, value, a_line, mask=cond))
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
            raise ir.UnsupportedConstruct("empty CASE selector", line)
        return cond

    def _type_of(self, e: ir.Expr) -> ir.FType:
        scope = Scope()
        for s in _scope_chain(self.scope):
            visible = list(s.decls.items()) + [(n, v[2]) for n, v in s.imported.items()]
            for n, d in visible:
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
            return type_of(e, scope)
        except Exception:  # noqa: BLE001 - typing is best effort here; default to real(8)
            return ir.REAL8


def _use_names(node, mod: dict) -> list[tuple[str, str]]:
    """(local name, name in the module) of every entity a USE statement makes visible."""
    _, _, _, spec, items = node.items
    pairs: list[tuple[str, str]] = []
    for x in items.children if items is not None else ():
        if _cls(x) == "Rename":
            pairs.append((_name(x.items[1]), _name(x.items[2])))
        else:
            pairs.append((_name(x), _name(x)))
    if "only" in str(spec or "").lower():
        return pairs
    renamed = {remote for _, remote in pairs}
    every = set(mod["consts"]) | set(mod["procs"]) | set(mod["types"]) | set(mod["vars"])
    return [(n, n) for n in sorted(every - renamed)] + pairs


def _command_line_message(name: str) -> str:
    return (
        f"{name.upper()} reads the program's command line, which a kernel does not have "
        "(pass what it parses as an argument)"
    )


def _scope_chain(scope: _Scope):
    while scope is not None:
        yield scope
        scope = scope.parent


_ProcBuilder._stmt_Block_Label_Do_Construct = _ProcBuilder._label_do  # type: ignore[assignment]
_ProcBuilder._stmt_Action_Term_Do_Construct = _ProcBuilder._label_do  # type: ignore[attr-defined]
_ProcBuilder._stmt_Outer_Shared_Do_Construct = _ProcBuilder._label_do  # type: ignore[attr-defined]
_ProcInfo.proc_result_names = ()  # type: ignore[attr-defined]
