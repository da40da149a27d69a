"""Derived types: TYPE definitions, and component access scalarised into plain variables.

A kernel that works on ``type(field) :: f`` through ``f%data(i, j)``, or on
``type(particle) :: p(n)`` through ``p(i)%x``, is ported with each component it uses as a variable
of its own (structure of arrays): ``f%data`` is the array ``f_data``, ``p(i)%x`` is ``p_x(i)``
(the component of every element of ``p``, one array). The visitor (:class:`DerivedTypeAccess`,
mixed into the statement visitor) resolves each ``%`` reference to such a flat name;
:mod:`kernels.engine.frontend.units` turns the flat names of a dummy argument into arguments of
the port, and the verification wrapper fills the original's derived-type variable from them.

Not scalarised (an explicit unsupported marker with its line): POINTER components, TYPE
EXTENDS, PRIVATE components, CLASS (polymorphic) variables, a derived-type variable used whole
(assigned, or passed to a procedure), and type-bound procedure calls.
"""

from __future__ import annotations

from dataclasses import dataclass

from kernels.engine import ir
from kernels.engine.dataflow import affine, substitute, top_level_definitions
from kernels.engine.frontend.nodes import _cls, _line, _name


@dataclass
class ComponentRef:
    """What a flat name stands for: ``base%path...`` of a derived-type variable."""

    base: str
    path: list[str]
    type_name: str
    allocatable: bool  # the array part is an ALLOCATABLE component (bounds set by the caller)
    order: tuple[int, ...]  # position of each path step in its TYPE (arguments keep TYPE order)


class DerivedTypeAccess:
    """TYPE definitions and ``%`` references, mixed into the statement visitor."""

    # -- TYPE definitions -------------------------------------------------------------------
    def _derived_type_def(self, node) -> None:
        head = node.children[0]
        attrs, name_node, params = head.items
        name = _name(name_node)
        module = self.info.module if self.info.kind == "module" else None
        dt = ir.DerivedType(name, {}, module=module, line=_line(node))
        for a in attrs.children if attrs is not None else ():
            text = str(a).lower().replace(" ", "")
            if text.startswith("extends"):
                dt.problem = f"TYPE {name} EXTENDS another type"
            elif text == "abstract":
                dt.problem = f"TYPE {name} is ABSTRACT"
            elif text == "private":
                dt.problem = f"TYPE {name} is PRIVATE to its module"
        if params is not None:
            dt.problem = f"TYPE {name} has type parameters"
        for part in node.children[1:]:
            cls = _cls(part)
            if cls == "Component_Part":
                for stmt in part.children:
                    if _cls(stmt) == "Data_Component_Def_Stmt":
                        self._component_def(stmt, dt)
                    elif _cls(stmt) != "Comment":
                        dt.problem = dt.problem or f"TYPE {name}: {_cls(stmt)}"
            elif cls == "Private_Components_Stmt" or str(part).strip().lower() == "private":
                dt.problem = dt.problem or f"TYPE {name} has PRIVATE components"
            # SEQUENCE, type-bound procedures (their CALLs are refused where they occur),
            # comments and END TYPE leave the data components as they are.
        self.scope.types[name] = dt

    def _component_def(self, stmt, dt: ir.DerivedType) -> None:
        line = _line(stmt)
        tnode, attrs, decls = stmt.items
        derived = None
        if _cls(tnode) == "Declaration_Type_Spec" and str(tnode.items[0]).upper() == "TYPE":
            derived = _name(tnode.items[1])
            t = ir.DERIVED
            if derived not in self.scope.types:
                dt.problem = dt.problem or f"component of TYPE {derived}, not defined before"
        else:
            try:
                t = self._type_spec(tnode, line)
            except ir.UnsupportedConstruct as u:
                dt.problem = dt.problem or f"component of {u.construct}"
                t = ir.REAL8
        dims: list[ir.Dim] = []
        allocatable = pointer = False
        for a in attrs.children if attrs is not None else ():
            if _cls(a) == "Dimension_Component_Attr_Spec":
                dims = self._dims(a.items[1], line)
            else:
                text = str(a).lower()
                allocatable = allocatable or text == "allocatable"
                pointer = pointer or text == "pointer"
                if text == "private":
                    dt.problem = dt.problem or f"TYPE {dt.name} has PRIVATE components"
        for comp in decls.children:
            cname = _name(comp.items[0])
            cdims = self._dims(comp.items[1], line) if comp.items[1] is not None else dims
            d = ir.Decl(cname, t, cdims, allocatable=allocatable, line=line, derived=derived)
            dt.components[cname] = d
            if pointer:
                dt.pointers.add(cname)

    # -- variables of derived type ----------------------------------------------------------
    def _derived_decl_type(self, tnode, line: int) -> str:
        """The TYPE name of a ``TYPE(name)`` declaration (UnsupportedConstruct when not usable)."""
        kind = str(tnode.items[0]).upper()
        name = _name(tnode.items[1])
        if kind != "TYPE":
            raise ir.UnsupportedConstruct(f"CLASS({name}) (polymorphic) variable", line, str(tnode))
        if name not in self.scope.types:
            raise ir.UnsupportedConstruct(
                f"derived TYPE {name} not defined in the given files", line, str(tnode)
            )
        return name

    # -- component references ---------------------------------------------------------------
    def _expr_Data_Ref(self, node) -> ir.Expr:
        parts = list(node.items)
        first = parts[0]
        base = _name(first.items[0] if _cls(first) == "Part_Ref" else first)
        decl = self.scope.lookup(base)
        if decl is None or decl.derived is None:
            raise ir.UnsupportedConstruct(
                f"component access (%) on {base}, which is not a variable of a derived TYPE "
                "defined in the given files",
                0,
                str(node),
            )
        # (dims, subscripts given) of each part that has a rank: at most one may.
        ranked: list[tuple[list[ir.Dim], object]] = []
        if decl.dims:
            ranked.append((decl.dims, first.items[1] if _cls(first) == "Part_Ref" else None))
        type_name = decl.derived
        path: list[str] = []
        order: list[int] = []
        leaf: ir.Decl | None = None
        allocatable = False
        for k, part in enumerate(parts[1:], start=1):
            if type_name is None:
                raise ir.UnsupportedConstruct(
                    f"component access (%) on {'%'.join([base, *path])}, which is no derived TYPE",
                    0,
                    str(node),
                )
            dt = self.scope.types[type_name]
            if dt.problem:
                raise ir.UnsupportedConstruct(dt.problem, 0, str(node))
            cname = _name(part.items[0] if _cls(part) == "Part_Ref" else part)
            if cname not in dt.components:
                raise ir.UnsupportedConstruct(
                    f"TYPE {type_name} has no component {cname}", 0, str(node)
                )
            if cname in dt.pointers:
                raise ir.UnsupportedConstruct(
                    f"POINTER component {cname} of TYPE {type_name}", 0, str(node)
                )
            leaf = dt.components[cname]
            path.append(cname)
            order.append(list(dt.components).index(cname))
            if leaf.dims:
                ranked.append((leaf.dims, part.items[1] if _cls(part) == "Part_Ref" else None))
                if leaf.allocatable and k != len(parts) - 1:
                    raise ir.UnsupportedConstruct(
                        f"ALLOCATABLE component {cname} of derived TYPE elements", 0, str(node)
                    )
                allocatable = leaf.allocatable
            type_name = leaf.derived
        assert leaf is not None
        if leaf.derived is not None:
            raise ir.UnsupportedConstruct(
                f"derived-type component {'%'.join([base, *path])} used whole", 0, str(node)
            )
        if len(ranked) > 1:
            raise ir.UnsupportedConstruct(
                "component access with more than one array part (an array component of an "
                "array of derived type)",
                0,
                str(node),
            )
        dims, subs = ranked[0] if ranked else ([], None)
        ref = ComponentRef(base, path, decl.derived, allocatable, tuple(order))
        flat = self._flat_component(ref, leaf, dims, decl)
        if subs is None:
            return ir.Var(flat)
        return ir.ArrayRef(flat, [self._subscript(s) for s in subs.children])

    def _flat_component(
        self, ref: ComponentRef, leaf: ir.Decl, dims: list[ir.Dim], base: ir.Decl
    ) -> str:
        """The flat name of ``ref`` (declared in the procedure's scope on first use)."""
        for name, known in self.scope.components.items():
            if known.base == ref.base and known.path == ref.path:
                return name
        stem = "_".join([ref.base, *ref.path])
        name, k = stem, 1
        while self.scope.lookup(name) is not None or name in self.scope.consts:
            k += 1
            name = f"{stem}_{k}"
        self.scope.decls[name] = ir.Decl(
            name,
            leaf.type,
            [ir.Dim(d.lower, d.upper) for d in dims],
            intent=base.intent,
            allocatable=ref.allocatable,
            line=base.line,
        )
        self.scope.components[name] = ref
        return name


# --------------------------------------------------------------------------------------------
# Bounds of deferred-shape arrays (ALLOCATABLE components and module arrays)


def deferred_bounds(
    names: list[str], groups: dict[str, object], body: list[ir.Stmt], known: set[str]
) -> dict[str, list[ir.Dim]]:
    """Bounds for deferred-shape arrays: the smallest box holding every access the kernel makes.

    The caller allocated them, so the kernel does not say their bounds. Every subscript that is
    affine in loop variables (whose ranges are affine in ``known`` names, after substituting the
    kernel's top-level definitions such as ``nx = curr%nx``) gives a symbolic range; the box is
    the smallest holding them all, and arrays of one ``groups`` key (the same component of the
    same TYPE, module arrays declared together) share one box. A constant lower bound above 1
    is lowered to 1, ALLOCATE's default. ``curr%data`` and ``prev%data`` read at ``i-1..i+1``
    for ``i = 1, nx`` both get ``0:nx+1``. An array with an access that is not affine in such
    names is left out (the caller keeps its assumed-shape handling).
    """
    defs = top_level_definitions(body, exclude=known)
    lows: dict[object, list[list[tuple[dict[str, int], int]]]] = {}
    highs: dict[object, list[list[tuple[dict[str, int], int]]]] = {}
    failed: set[object] = set()
    wanted = set(names)

    def bound(e: ir.Expr | None, ranges, upper: bool) -> tuple[dict[str, int], int] | None:
        if e is None:
            return None
        a = affine(substitute(e, defs))
        if a is None:
            return None
        coef, const = a
        out: dict[str, int] = {}
        for v, c in coef.items():
            if v in ranges:
                lo, hi = ranges[v]
                part = hi if (c > 0) == upper else lo
                if part is None:
                    return None
                const += c * part[1]
                for w, cw in part[0].items():
                    out[w] = out.get(w, 0) + c * cw
            elif v in known:
                out[v] = out.get(v, 0) + c
            else:
                return None
        return {k: v for k, v in out.items() if v}, const

    def visit(stmts: list[ir.Stmt], ranges) -> None:
        for s in stmts:
            exprs = list(_all_exprs(s))
            for e in exprs:
                for sub in ir.walk_expr(e):
                    if not isinstance(sub, ir.ArrayRef) or sub.name not in wanted:
                        continue
                    key = groups.get(sub.name, sub.name)
                    box_lo = lows.setdefault(key, [[] for _ in sub.indices])
                    box_hi = highs.setdefault(key, [[] for _ in sub.indices])
                    if len(box_lo) != len(sub.indices):
                        failed.add(key)
                        continue
                    for k, ix in enumerate(sub.indices):
                        if isinstance(ix, ir.Slice):
                            failed.add(key)
                            continue
                        lo, hi = bound(ix, ranges, False), bound(ix, ranges, True)
                        if lo is None or hi is None:
                            failed.add(key)
                            continue
                        box_lo[k].append(lo)
                        box_hi[k].append(hi)
            if isinstance(s, ir.Loop):
                step = affine(s.step) if s.step is not None else ({}, 1)
                inner = dict(ranges)
                if step is None or step[0] or step[1] == 0:
                    inner[s.var] = (None, None)
                else:
                    first, last = (s.start, s.stop) if step[1] > 0 else (s.stop, s.start)
                    inner[s.var] = (bound(first, ranges, False), bound(last, ranges, True))
                visit(s.body, inner)
            elif isinstance(s, ir.WhileLoop):
                visit(s.body, ranges)
            elif isinstance(s, ir.If):
                for _, b in s.branches:
                    visit(b, ranges)
                visit(s.orelse, ranges)
            elif (
                isinstance(s, ir.Assign)
                and isinstance(s.target, ir.Var)
                and s.target.name in wanted
            ):
                failed.add(groups.get(s.target.name, s.target.name))  # whole-array assignment

    visit(body, {})
    out: dict[str, list[ir.Dim]] = {}
    for n in names:
        key = groups.get(n, n)
        if key in failed or key not in lows or not all(lows[key]):
            continue
        out[n] = [
            ir.Dim(_extreme(_from_one(lo), "min"), _extreme(hi, "max"))
            for lo, hi in zip(lows[key], highs[key], strict=True)
        ]
    return out


def _all_exprs(s: ir.Stmt) -> list[ir.Expr]:
    if isinstance(s, ir.Assign):
        return [s.target, s.value]
    if isinstance(s, ir.If):
        return [c for c, _ in s.branches]
    if isinstance(s, ir.WhileLoop):
        return [s.cond]
    if isinstance(s, ir.CallStmt):
        return list(s.args)
    return []


def _from_one(forms: list[tuple[dict[str, int], int]]) -> list[tuple[dict[str, int], int]]:
    """Constant lower bounds include 1 (``allocate(u(n))`` starts there)."""
    return forms + [({}, 1)] if all(not coef for coef, _ in forms) else forms


def _extreme(forms: list[tuple[dict[str, int], int]], op: str) -> ir.Expr:
    """min/max of affine forms: forms differing by a constant fold to one."""
    best: dict[tuple, tuple[dict[str, int], int]] = {}
    for coef, const in forms:
        key = tuple(sorted(coef.items()))
        old = best.get(key)
        if old is None or (const < old[1] if op == "min" else const > old[1]):
            best[key] = (coef, const)
    exprs = [_affine_expr(c, k) for c, k in best.values()]
    return exprs[0] if len(exprs) == 1 else ir.Call(op, exprs)


def _affine_expr(coef: dict[str, int], const: int) -> ir.Expr:
    e: ir.Expr | None = None
    for v, c in sorted(coef.items()):
        term: ir.Expr = ir.Var(v)
        if abs(c) != 1:
            term = ir.BinOp("*", ir.Const(abs(c), ir.INTEGER), term)
        if e is None:
            e = term if c > 0 else ir.UnaryOp("-", term)
        else:
            e = ir.BinOp("+" if c > 0 else "-", e, term)
    if e is None:
        return ir.Const(const, ir.INTEGER)
    if const:
        e = ir.BinOp("+" if const > 0 else "-", e, ir.Const(abs(const), ir.INTEGER))
    return e
