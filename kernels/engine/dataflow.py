"""Dataflow queries over IR statements: what a statement reads and writes, liveness, affine forms.

Used by the frontend, lowering, analysis and both backends; it imports nothing but the IR.
"""

from __future__ import annotations

from kernels.engine import ir


def affine(e: ir.Expr) -> tuple[dict[str, int], int] | None:
    """``e`` as (coefficients by variable, constant) when it is an integer affine form."""
    if isinstance(e, ir.Const) and isinstance(e.value, int) and not isinstance(e.value, bool):
        return {}, e.value
    if isinstance(e, ir.Var):
        return {e.name: 1}, 0
    if isinstance(e, ir.UnaryOp) and e.op in "+-":
        a = affine(e.operand)
        if a is None:
            return None
        if e.op == "+":
            return a
        return {k: -v for k, v in a[0].items()}, -a[1]
    if isinstance(e, ir.BinOp) and e.op in ("+", "-"):
        a, b = affine(e.left), affine(e.right)
        if a is None or b is None:
            return None
        sign = 1 if e.op == "+" else -1
        coef = dict(a[0])
        for k, v in b[0].items():
            coef[k] = coef.get(k, 0) + sign * v
        return {k: v for k, v in coef.items() if v != 0}, a[1] + sign * b[1]
    if isinstance(e, ir.BinOp) and e.op == "*":
        a, b = affine(e.left), affine(e.right)
        if a is None or b is None:
            return None
        if not a[0]:
            return {k: v * a[1] for k, v in b[0].items() if v * a[1] != 0}, a[1] * b[1]
        if not b[0]:
            return {k: v * b[1] for k, v in a[0].items() if v * b[1] != 0}, a[1] * b[1]
    return None


def reads_var(stmts: list[ir.Stmt], name: str) -> bool:
    """True when ``name`` is read (as a scalar or array) anywhere in ``stmts``."""
    for s in ir.walk(stmts):
        for e in stmt_exprs(s):
            for sub in ir.walk_expr(e):
                if isinstance(sub, ir.Var) and sub.name == name:
                    return True
                if isinstance(sub, ir.ArrayRef) and sub.name == name:
                    return True
    return False


def stmt_exprs(s: ir.Stmt) -> list[ir.Expr]:
    """The expressions a statement reads (assignment targets contribute only their subscripts)."""
    if isinstance(s, ir.Assign):
        out: list[ir.Expr] = [s.value]
        if isinstance(s.target, ir.ArrayRef):
            out.extend(ix for ix in s.target.indices if not isinstance(ix, ir.Slice))
        return out
    if isinstance(s, ir.Loop):
        return [x for x in (s.start, s.stop, s.step) if x is not None]
    if isinstance(s, ir.WhileLoop):
        return [s.cond]
    if isinstance(s, ir.If):
        return [c for c, _ in s.branches]
    if isinstance(s, ir.CallStmt):
        return list(s.args)
    return []


def continuation(stmts: list[ir.Stmt], target) -> list[ir.Stmt]:
    """The statements that may run after ``target`` finishes, in order (used for liveness).

    Following siblings at each nesting level, and for an enclosing loop also the statements
    that precede ``target`` in its body (they run again on the next iteration).
    """

    def find(block: list[ir.Stmt]) -> list[ir.Stmt] | None:
        for k, s in enumerate(block):
            if s is target:
                return list(block[k + 1 :])
            inner_blocks: list[tuple[list[ir.Stmt], bool]] = []
            if isinstance(s, (ir.Loop, ir.WhileLoop)):
                inner_blocks.append((s.body, True))
            elif isinstance(s, ir.If):
                inner_blocks.extend((b, False) for _, b in s.branches)
                inner_blocks.append((s.orelse, False))
            for b, is_loop in inner_blocks:
                found = find(b)
                if found is not None:
                    out = list(found)
                    if is_loop:
                        idx = next(i for i, x in enumerate(b) if _contains(x, target))
                        out.extend(b[:idx])
                    return out + list(block[k + 1 :])
        return None

    return find(stmts) or []


def _contains(s: ir.Stmt, target) -> bool:
    if s is target:
        return True
    return any(x is target for x in ir.walk([s]))


def without_loop_body(stmts: list[ir.Stmt], loop: ir.Loop) -> list[ir.Stmt]:
    """``stmts`` with ``loop``'s body removed (its header expressions stay)."""
    return ir.prune(stmts, lambda s: s is loop)


def names_in_expr(e) -> set[str]:
    out = set()
    for sub in ir.walk_expr(e):
        if isinstance(sub, ir.Var):
            out.add(sub.name)
        elif isinstance(sub, ir.ArrayRef):
            out.add(sub.name)
    return out


def names_in(stmts: list[ir.Stmt]) -> set[str]:
    out: set[str] = set()
    for s in ir.walk(stmts):
        for e in stmt_exprs(s):
            out |= names_in_expr(e)
        if isinstance(s, ir.Assign):
            out.add(s.target.name)
        if isinstance(s, ir.Loop):
            out.add(s.var)
        if isinstance(s, ir.Allocate):
            out.add(s.name)
            for d in s.dims:
                out |= names_in_expr(d.lower) | names_in_expr(d.upper)
    return out


def written_names(stmts: list[ir.Stmt]) -> set[str]:
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


def read_before_write(name: str, stmts: list[ir.Stmt]) -> bool:
    """Conservative: True unless every path writes ``name`` (a scalar) before reading it."""
    state = _rbw_block(name, stmts, False)
    return state == "read"


def _rbw_block(name: str, stmts: list[ir.Stmt], written: bool):
    for s in stmts:
        if written:
            return "written"
        reads = any(name in names_in_expr(e) for e in stmt_exprs(s))
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


def substitute(e, mapping: dict[str, ir.Expr]):
    """A copy of expression ``e`` with each ``Var`` named in ``mapping`` replaced."""
    if not mapping or e is None:
        return e
    if isinstance(e, ir.Var):
        return mapping.get(e.name, e)
    if isinstance(e, ir.ArrayRef):
        return ir.ArrayRef(e.name, [substitute(i, mapping) for i in e.indices])
    if isinstance(e, ir.Slice):
        return ir.Slice(*(substitute(p, mapping) for p in (e.lower, e.upper, e.step)))
    if isinstance(e, ir.BinOp):
        return ir.BinOp(e.op, substitute(e.left, mapping), substitute(e.right, mapping))
    if isinstance(e, ir.UnaryOp):
        return ir.UnaryOp(e.op, substitute(e.operand, mapping))
    if isinstance(e, ir.Call):
        return ir.Call(
            e.name,
            [substitute(a, mapping) for a in e.args],
            {k: substitute(v, mapping) for k, v in e.keywords.items()},
        )
    return e


def top_level_definitions(stmts: list[ir.Stmt], exclude=()) -> dict[str, ir.Expr]:
    """Scalars set once, at the top level of ``stmts``, from names the statements never write.

    ``nx = curr%nx`` before ``do i = 1, nx``: ``{'nx': curr_nx}``, so that sizes and bounds can
    be read through the copy. A name assigned anywhere else (or a loop variable, or an actual
    argument of a CALL) is not a definition; ``exclude`` (the arguments) never are.
    """
    writes: dict[str, int] = {}
    for s in ir.walk(stmts):
        for n in written_names([s]) if not isinstance(s, (ir.Loop, ir.WhileLoop, ir.If)) else ():
            writes[n] = writes.get(n, 0) + 1
        if isinstance(s, ir.Loop):
            writes[s.var] = writes.get(s.var, 0) + 2
        if isinstance(s, ir.Allocate):
            writes[s.name] = writes.get(s.name, 0) + 2
    out: dict[str, ir.Expr] = {}
    for s in stmts:
        if not (isinstance(s, ir.Assign) and isinstance(s.target, ir.Var)):
            continue
        name = s.target.name
        if name in exclude or writes.get(name) != 1:
            continue
        reads = names_in_expr(s.value)
        if any(writes.get(n) and n not in out for n in reads):
            continue
        out[name] = substitute(s.value, out)
    return out
