"""Array lowering: IR -> IR rewrites that leave only scalar statements and counted loops.

- whole-array and section assignments (``vx(1,:) = 0``, ``c = a*b + 1``, WHERE) become loop nests
  whose innermost loop runs over the first (contiguous) dimension;
- SUM/MAXVAL/MINVAL/PRODUCT/COUNT/ANY/ALL/MAXLOC/MINLOC over arrays and sections are hoisted into
  temporaries computed by explicit loop nests in column-major order (the order gfortran
  accumulates in).

:class:`ArrayLowering` works on IR expressions and returns IR statements. It needs from its host
(the statement visitor) only the declarations in scope (``scope.lookup``, ``scope.is_array``,
``scope.procedures``), ``new_temp`` for temporaries and ``_type_of`` for their types.
A construct it cannot lower raises :class:`ir.UnsupportedConstruct`.
"""

from __future__ import annotations

from kernels.engine import ir
from kernels.engine.dataflow import affine
from kernels.engine.intrinsics import ARRAY_REDUCTIONS, INQUIRY


class ArrayLowering:
    """IR-to-IR array lowering, mixed into the statement visitor."""

    def is_array_valued(self, e: ir.Expr) -> bool:
        if isinstance(e, ir.Var):
            return self.scope.is_array(e.name)
        if isinstance(e, ir.ArrayRef):
            return any(isinstance(i, ir.Slice) for i in e.indices)
        if isinstance(e, ir.BinOp):
            return self.is_array_valued(e.left) or self.is_array_valued(e.right)
        if isinstance(e, ir.UnaryOp):
            return self.is_array_valued(e.operand)
        if isinstance(e, ir.Call):
            if e.name in ARRAY_REDUCTIONS or e.name in INQUIRY:
                return False
            return any(self.is_array_valued(a) for a in e.args)
        return False

    def _section(self, e: ir.Var | ir.ArrayRef, line: int) -> tuple[str, list, list]:
        """(name, per-dimension subscript (Expr or Slice with bounds filled), section dims)."""
        name = e.name
        decl = self.scope.lookup(name)
        if decl is None or not decl.dims:
            raise ir.UnsupportedConstruct(f"{name} is not an array", line)
        indices = [ir.Slice() for _ in decl.dims] if isinstance(e, ir.Var) else list(e.indices)
        if len(indices) != len(decl.dims):
            raise ir.UnsupportedConstruct(f"rank mismatch for {name}", line)
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
                raise ir.UnsupportedConstruct(
                    "arrays of different ranks in an array expression", line
                )
            out = []
            k = 0
            for ix in full:
                if isinstance(ix, ir.Slice):
                    blo, _bhi, bst = base[k]
                    if not _same_step(bst, ix.step):
                        raise ir.UnsupportedConstruct("array sections with different strides", line)
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
        if isinstance(e, ir.Call) and e.name not in INQUIRY and e.name not in ARRAY_REDUCTIONS:
            if e.name in self.scope.procedures and not _is_elemental(self.scope.procedures[e.name]):
                if any(self.is_array_valued(a) for a in e.args):
                    raise ir.UnsupportedConstruct(
                        f"array argument to non-elemental function {e.name}", line
                    )
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

    def lower_array_assignment(
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
                    raise ir.UnsupportedConstruct(
                        "overlapping array assignment (needs a temporary)", line
                    )
            if isinstance(ref, ir.ArrayRef) and ref.name == name:
                _, rfull, _ = (
                    self._section(ref, line)
                    if any(isinstance(i, ir.Slice) for i in ref.indices)
                    else (None, ref.indices, None)
                )
                if _sec_key(rfull) != _sec_key(full):
                    raise ir.UnsupportedConstruct(
                        "overlapping array assignment (needs a temporary)", line
                    )

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

    def hoist_reductions(self, e: ir.Expr, pre: list[ir.Stmt], line: int) -> ir.Expr:
        """Replace SUM/MAXVAL/MINVAL/PRODUCT of arrays by temporaries computed in ``pre``."""
        if isinstance(e, ir.Call):
            args = [self.hoist_reductions(a, pre, line) for a in e.args]
            e = ir.Call(e.name, args, e.keywords)
            if e.name in ARRAY_REDUCTIONS and e.name not in self.scope.procedures:
                if e.name in ("maxloc", "minloc"):
                    return self._location(e, pre, line)
                if e.keywords or len(e.args) != 1:
                    raise ir.UnsupportedConstruct(f"{e.name.upper()} with DIM or MASK", line)
                return self._reduction(e, pre, line)
            return e
        if isinstance(e, ir.BinOp):
            return ir.BinOp(
                e.op,
                self.hoist_reductions(e.left, pre, line),
                self.hoist_reductions(e.right, pre, line),
            )
        if isinstance(e, ir.UnaryOp):
            return ir.UnaryOp(e.op, self.hoist_reductions(e.operand, pre, line))
        return e

    def _reduction(self, e: ir.Call, pre: list[ir.Stmt], line: int) -> ir.Expr:
        arg = e.args[0]
        shape_ref = _first_array_ref(arg, self)
        if shape_ref is None:
            raise ir.UnsupportedConstruct(f"{e.name.upper()} of a scalar", line)
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
            raise ir.UnsupportedConstruct(
                f"{e.name.upper()} without DIM=1 (array result) or with MASK", line
            )
        arg = e.args[0]
        ref = _first_array_ref(arg, self)
        if ref is None:
            raise ir.UnsupportedConstruct(f"{e.name.upper()} of a scalar", line)
        _, _, sec = self._section(ref, line)
        if len(sec) != 1:
            raise ir.UnsupportedConstruct(f"{e.name.upper()} of a rank-{len(sec)} array", line)
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


def _is_elemental(p) -> bool:
    proc = p if isinstance(p, ir.Procedure) else p.proc
    return bool(proc is not None and proc.elemental)


def _first_array_ref(e: ir.Expr, b: ArrayLowering):
    if isinstance(e, ir.Var) and b.scope.is_array(e.name):
        return e
    if isinstance(e, ir.ArrayRef) and any(isinstance(i, ir.Slice) for i in e.indices):
        return e
    if isinstance(e, ir.BinOp):
        return _first_array_ref(e.left, b) or _first_array_ref(e.right, b)
    if isinstance(e, ir.UnaryOp):
        return _first_array_ref(e.operand, b)
    if isinstance(e, ir.Call) and e.name not in INQUIRY:
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
