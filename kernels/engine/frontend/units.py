"""Program units: files, modules, procedures and programs -> IR kernels.

Each SUBROUTINE/FUNCTION becomes a kernel; in a PROGRAM each outermost loop nest becomes a kernel
of its own (see ``_FileBuilder._extract_program``), PRINT / WRITE(*) being left out with a note.
"""

from __future__ import annotations

import re

from kernels.engine import ir
from kernels.engine.dataflow import (
    continuation,
    names_in,
    names_in_expr,
    read_before_write,
    reads_var,
    stmt_exprs,
    written_names,
)
from kernels.engine.frontend.derived import deferred_bounds
from kernels.engine.frontend.nodes import _cls, _end_line, _head, _line, _name
from kernels.engine.frontend.parse import (
    ParsedFile,
    _parse_tree,
    has_directives,
    is_fixed_form,
    needs_preprocessing,
    preprocess,
)
from kernels.engine.frontend.statements import _ProcBuilder, _ProcInfo, _Scope, _scope_chain
from kernels.engine.intrinsics import INTRINSICS
from kernels.engine.report import Diagnostic, FortranSyntaxError


def parse_file(
    source: str, *, filename: str = "input.f90", defines: dict[str, str | None] | None = None
) -> ParsedFile:
    """Parse ``source`` and build one IR kernel per subroutine/function/extracted loop nest.

    A file with cpp directives, or a cpp suffix (``.F90``), is preprocessed in the sandbox first.
    """
    if needs_preprocessing(filename) or has_directives(source):
        source = preprocess(
            source, filename=filename, defines=defines, fixed=is_fixed_form(filename)
        )
    return parse_project([(filename, source)])


def parse_project(files: list[tuple[str, str]]) -> ParsedFile:
    """Parse several files as one project: a module defined in any file is visible to all.

    ``files`` are (name, text) in the order given, already preprocessed
    (:func:`kernels.engine.project.prepared_sources`). Each kernel's ``file`` is its file's name.
    """
    project = _Project()
    trees = []
    for filename, source in files:
        fixed = is_fixed_form(filename)
        try:
            tree = _parse_tree(source, fixed)
        except FortranSyntaxError as exc:
            exc.file = filename  # type: ignore[attr-defined]
            if len(files) > 1:
                exc.message = f"{filename}: {exc.message}"
            raise
        builder = _FileBuilder(source, fixed, filename, project)
        project.builders.append(builder)
        trees.append(tree)
    for builder, tree in zip(project.builders, trees, strict=True):
        builder.collect(tree)
    for mod in project.modules_in_use_order():
        mod["owner"]._build_module_spec(mod)
    kernels: list[ir.Kernel] = []
    notes: dict[str, list[str]] = {}
    for builder in project.builders:
        builder.finish()
        for k in builder.kernels:
            k.file = builder.filename
        kernels.extend(builder.kernels)
        notes.update(builder.notes)
    first = project.builders[0]
    return ParsedFile(source=first.source, fixed_form=first.fixed, kernels=kernels, notes=notes)


class _Project:
    """What the files of one project share: modules and procedures by name."""

    def __init__(self) -> None:
        self.builders: list[_FileBuilder] = []
        self.modules: dict[str, dict] = {}
        self.procs: dict[str, _ProcInfo] = {}

    def modules_in_use_order(self) -> list[dict]:
        """Every module after the modules it USEs (cycles keep the order given)."""
        from fparser.two.Fortran2003 import Use_Stmt
        from fparser.two.utils import walk

        deps = {
            name: {_name(u.items[2]) for u in walk(mod["node"], Use_Stmt)} & set(self.modules)
            for name, mod in self.modules.items()
        }
        done: list[str] = []

        def visit(name: str, stack: tuple[str, ...]) -> None:
            if name in done or name in stack:
                return
            for d in sorted(deps[name]):
                visit(d, stack + (name,))
            done.append(name)

        for name in self.modules:
            visit(name, ())
        return [self.modules[n] for n in done]


# --------------------------------------------------------------------------------------------
# File builder: units, modules, kernels


class _FileBuilder:
    def __init__(self, source: str, fixed: bool, filename: str, project: _Project):
        self.source = source
        self.lines = source.splitlines()
        self.fixed = fixed
        self.filename = filename
        self.project = project
        self.modules: dict[str, dict] = project.modules  # shared by the project's files
        self.procs: dict[str, _ProcInfo] = project.procs  # external + module procedures by name
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
    def collect(self, tree) -> None:
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
                    unit, "program", name, None, start=_line(unit), end=_end_line(unit), owner=self
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

    def finish(self) -> None:
        """Pass 2 (after every module's declarations): procedure bodies, then kernels."""
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
            "types": {},
            "scope": None,
            "unsupported": [],
            "start": _line(unit),
            "end": _end_line(unit),
            "owner": self,
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
        info = _ProcInfo(
            unit, kind, name, module, start=_line(unit), end=_end_line(unit), owner=self
        )
        for c in unit.children:
            if _cls(c) == "Internal_Subprogram_Part":
                for sub in c.children:
                    if _cls(sub) in ("Subroutine_Subprogram", "Function_Subprogram"):
                        inner = self._collect_proc(sub, module)
                        info.internal.append(inner)
        return info

    def _build_module_spec(self, mod) -> None:
        scope = _Scope()
        scope.module = mod["name"]
        info = _ProcInfo(mod["node"], "module", mod["name"], mod["name"])
        b = _ProcBuilder(info, scope, self)
        for c in mod["node"].children:
            if _cls(c) == "Specification_Part":
                try:
                    b.spec(c)
                except ir.UnsupportedConstruct as u:
                    b._unsupported(u.construct, c, u.line)
        mod["scope"] = scope
        mod["consts"] = dict(scope.consts)
        mod["types"] = dict(scope.types)  # its own and those it USEs (re-exported)
        mod["vars"] = dict(scope.imported)
        for n, d in scope.decls.items():
            if d.parameter is None:
                mod["vars"][n] = (mod["name"], n, d)
        mod["unsupported"] = info.unsupported

    def _build_proc(self, info: _ProcInfo, parent: _Scope | None = None) -> None:
        if info.proc is not None:
            return
        if info.owner is not None and info.owner is not self:
            info.owner._build_proc(info, parent)  # a unit of another file: its lines are there
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
        info.dummy_args = args  # type: ignore[attr-defined]
        if spec is not None:
            try:
                b.spec(spec)
            except ir.UnsupportedConstruct as u:
                b._unsupported(u.construct, spec, u.line)
        if info.kind == "function":
            rt = getattr(info, "result_type_node", None)
            d = b._decl(result, info.start)
            if rt is not None:
                try:
                    d.type = b._type_spec(rt, info.start)
                except ir.UnsupportedConstruct as u:
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
        _resolve_initialised(b, body, info)
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

    def _library_source(
        self, containing: int | None = None
    ) -> tuple[str, list[int], list[ir.SourcePart], list[ir.SourcePart]]:
        """Modules and external procedures (no main program): compilable into a library.

        Returns the text, per line of it the line of the user's file it comes from, and the
        parts compiled before and after it. Those are empty unless the project mixes fixed and
        free form: then each run of consecutive units of one form is a file of its own (gfortran
        takes one form per file), the text is the run holding this file's unit at line
        ``containing`` (the kernel's), and the other runs come before or after it. With
        ``containing=None`` (a program's nest, whose subroutine is appended to the text) every
        run of a mixed project comes before.
        """
        units = [(self, start, end) for _kind, start, end in sorted(self.unit_spans, key=_start)]
        if len(self.project.builders) > 1:
            # Every file's modules in USE order (a module compiles after those it uses), then
            # the external procedures; only this file's lines keep their numbers.
            units = [
                (m["owner"], m["start"], m["end"]) for m in self.project.modules_in_use_order()
            ]
            for owner in self.project.builders:
                units += [(owner, s, e) for kind, s, e in owner.unit_spans if kind == "proc"]
        runs: list[list[tuple[_FileBuilder, int, int]]] = []
        for unit in units:
            if runs and runs[-1][0][0].fixed == unit[0].fixed:
                runs[-1].append(unit)
            else:
                runs.append([unit])
        if len(runs) <= 1:
            own, before, after = units, [], []
        else:
            at = next(
                (
                    k
                    for k, run in enumerate(runs)
                    if containing is not None
                    and any(o is self and s <= containing <= e for o, s, e in run)
                ),
                len(runs),
            )
            own, before, after = runs[at] if at < len(runs) else [], runs[:at], runs[at + 1 :]
        parts, lines = [], []
        for owner, start, end in own:
            parts.append(owner._unit_text(start, end))
            lines.extend(range(start, end + 1) if owner is self else [0] * (end - start + 1))
        text = "\n".join(parts) + "\n" if parts else ""
        return text, lines, [_source_part(r) for r in before], [_source_part(r) for r in after]

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
        derived_args: dict[str, ir.DerivedArg] = {}
        for a in proc.args:
            d = proc.decls.get(a)
            if d is None:
                d = ir.Decl(a, scope.implicit_type(a))
            if d.derived is not None:
                args.extend(_component_args(a, d, scope, proc, derived_args, unsupported))
                continue
            intent = d.intent or _infer_intent(a, proc.body)
            if intent == "in out":
                intent = "inout"
            dims = list(d.dims)
            if any(dd.upper is None for dd in dims):
                dims = _infer_assumed_extents(a, dims, proc)
            args.append(ir.Arg(a, d.type, intent, dims, allocatable=bool(d.allocatable and dims)))
        arg_names = {a.name for a in args}
        locals_ = {
            n: d
            for n, d in proc.decls.items()
            if n not in proc.args
            and n not in arg_names
            and d.parameter is None
            and d.derived is None
        }
        constants = dict(scope.consts)
        unsupported.extend(_call_problems(proc.body, functions, proc.decls))
        known = set(proc.decls) | set(constants) | set(functions) | INTRINSICS
        module_args: list[tuple[int, str, ir.Arg]] = []
        for n in sorted(names_in(proc.body) - known):
            found = scope.module_variable(n)
            if found is not None and found[2].derived is None:
                # A module variable: an argument of the port; the wrapper sets it around the call.
                module, remote, d = found
                source = ir.ModuleVariable(module, remote, d.allocatable)
                arg = ir.Arg(n, d.type, _infer_intent(n, proc.body), list(d.dims), source=source)
                module_args.append((d.line, n, arg))
                continue
            what = "derived-type module variable" if found is not None else "host variable"
            unsupported.append(ir.Unsupported(f"reference to {what} {n}", info.start, 1, n))
        args.extend(arg for *_, arg in sorted(module_args, key=lambda x: (x[0], x[1])))
        _bound_deferred_arrays(args, scope, proc, constants)
        library, library_lines, before, after = self._library_source(info.start)
        kernel = ir.Kernel(
            name=info.name,
            args=args,
            body=proc.body,
            locals=locals_,
            fortran_source=library,
            source_lines=library_lines,
            fortran_entry=info.name,
            line=info.start,
            fortran_module=info.module,
            constants=constants,
            functions=functions,
            unsupported=unsupported,
            origin=info.kind,
            compiled_before=before,
            compiled_after=after,
        )
        if info.kind == "function":
            kernel.result = proc.result
        if derived_args or module_args:
            kernel.fortran_args = list(proc.args)
            kernel.derived_args = derived_args
            info.notes.extend(ir.argument_sources(kernel))
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
        body = [st for _, stmts, *_ in items for st in stmts]
        kernels: list[ir.Kernel] = []

        def build(stmts: list[ir.Stmt], start: int, end: int, notes: list[str], name: str):
            later = continuation(body, stmts[-1])
            return self._program_kernel(prog, name, stmts, start, end, later, notes)

        def accept(stmts, start, end, notes, extra_notes=()) -> None:
            name = f"{prog.name}_loop{len(kernels) + 1}"
            # Notes about lines outside this nest (a PRINT elsewhere in the time loop) stay out.
            notes = [x for x in notes if not _note_line(x) or start <= _note_line(x) <= end]
            kernel = build(stmts, start, end, notes, name)
            self.notes[name].extend(extra_notes)
            kernel.notes = list(self.notes[name])
            kernels.append(kernel)

        def visit(stmt: ir.Stmt, notes: list[str], why: list[str]) -> None:
            """``stmt`` whole when it translates; else each nest inside it, recursively."""
            span = b.spans.get(id(stmt))
            if span is None:
                return
            inner = [c for c in _children(stmt) if _has_loop(c)]
            if isinstance(stmt, ir.If):
                # Each branch's nests on their own: a kernel holding the whole IF would leave
                # the branches not taken unrun, so never verified.
                reason = f"extracted from a branch of the IF/SELECT CASE at line {span[0]}"
                visit_children(stmt, notes, [*why, reason])
                return
            trial = build([stmt], span[0], span[1], notes, f"{prog.name}_probe")
            self.notes.pop(f"{prog.name}_probe", None)
            if not trial.unsupported or not inner:
                accept([stmt], span[0], span[1], notes, why)
                return
            first = trial.unsupported[0]
            reason = (
                f"extracted from inside the loop at line {span[0]}, which cannot be a kernel "
                f"as a whole (line {first.line}: {first.construct})"
            )
            visit_children(stmt, notes, [*why, reason])

        def visit_children(stmt: ir.Stmt, notes: list[str], why: list[str]) -> None:
            for group in _by_source_statement(_children(stmt), b.source_statement):
                if not any(_has_loop(c) for c in group):
                    continue
                if len(group) == 1:
                    visit(group[0], notes, why)
                    continue
                # One source statement made several IR statements (a reduction's
                # initialisation, loop and result): the statement's text is the kernel.
                spans = [b.spans[id(c)] for c in group if id(c) in b.spans]
                accept(group, min(x[0] for x in spans), max(x[1] for x in spans), notes, why)

        for _node, stmts, start, end, notes in items:
            if not any(_has_loop(st) for st in stmts):
                continue
            if any(isinstance(st, (ir.Loop, ir.WhileLoop)) for st in stmts):
                trial = build(stmts, start, end, notes, f"{prog.name}_probe")
                self.notes.pop(f"{prog.name}_probe", None)
                if not trial.unsupported or len(stmts) != 1:
                    accept(stmts, start, end, notes)
                    continue
            for st in stmts:
                if _has_loop(st):
                    visit(st, notes, [])
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
        used = names_in(stmts)
        loop_vars = {s.var for s in ir.walk(stmts) if isinstance(s, ir.Loop)}
        unsupported = [s for s in ir.walk(stmts) if isinstance(s, ir.Unsupported)]
        unsupported.extend(_callee_problems(functions, self.procs, constants_of(scope)))
        # Declaration problems only matter when they concern names this nest uses. Statements
        # run before the nest (a READ of a size, say) do not: what they compute is an argument.
        first_exec = min((_line(n) for n in prog.exec_nodes), default=start)
        for u in prog.unsupported:
            if u.line < min(start, first_exec) and u not in unsupported:
                if any(re.search(rf"\b{re.escape(n)}\b", u.text.lower()) for n in used):
                    unsupported.append(u)
        unsupported.extend(_call_problems(stmts, functions, decls))
        written = written_names(stmts)
        args: list[ir.Arg] = []
        locals_: dict[str, ir.Decl] = {}
        needed = set()
        for n in sorted(used, key=lambda x: (decls[x].line if x in decls else 0, x)):
            if n in scope.consts or n in functions or n in INTRINSICS and n not in decls:
                continue
            if n in scope.components:
                unsupported.append(
                    ir.Unsupported(f"derived-type component {n} in a program's nest", start, 1, n)
                )
                continue
            found = scope.module_variable(n) if n not in decls else None
            if found is not None:
                if found[2].derived is not None:
                    unsupported.append(
                        ir.Unsupported(f"derived-type module variable {n}", start, 1, n)
                    )
                    continue
                module, remote, d = found
                intent = _infer_intent(n, stmts)
                if intent == "out" and read_before_write(n, later):
                    intent = "inout"
                source = ir.ModuleVariable(module, remote, d.allocatable)
                dims = list(prog.allocations.get(n) or d.dims)  # ALLOCATEd by the program?
                for dd in dims:
                    for e in (dd.lower, dd.upper):
                        needed |= {v for v in names_in_expr(e) if v not in scope.consts}
                args.append(ir.Arg(n, d.type, intent, dims, source=source))
                continue
            d = decls.get(n) or scope.lookup(n)
            if d is None:
                continue
            if d.parameter is not None:
                continue
            is_written = n in written
            rbw = read_before_write(n, stmts)
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
                    intent = "inout" if (rbw or reads_var(stmts, n)) else "out"
                else:
                    intent = "in"
                args.append(ir.Arg(n, d.type, intent, d.dims))
                for dd in d.dims:
                    for e in (dd.lower, dd.upper):
                        needed |= {v for v in names_in_expr(e) if v not in scope.consts}
            else:
                used_later = read_before_write(n, later)
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
        module_args = [a for a in args if a.source is not None]
        if module_args:
            # Module variables stay out of the extracted subroutine's dummies (it USEs them).
            args = [a for a in args if a.source is None] + module_args
            _bound_deferred_arrays(args, scope, prog.proc, dict(scope.consts), body=stmts)
        for n, d in decls.items():
            if (
                n.startswith(("i_", "r_", "sum_", "maxval_", "minval_", "product_"))
                and n in used
                and n not in have
            ):
                locals_.setdefault(n, d)
        source, source_lines, before = self._program_kernel_source(
            prog, name, args, locals_, start, end, stmts
        )
        kernel = ir.Kernel(
            fortran_args=[a.name for a in args if a.source is None] if module_args else None,
            source_lines=source_lines,
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
            compiled_before=before,
        )
        self.notes[name] = [f"extracted from program {prog.name}, lines {start}-{end}"] + list(
            notes
        )
        return kernel

    def _program_kernel_source(
        self, prog, name, args, locals_, start, end, stmts
    ) -> tuple[str, list[int], list[ir.SourcePart]]:
        """A standalone subroutine holding the nest's own source text (for gfortran).

        Returns the text, per line of it the line of the user's file it comes from (0 for the
        generated header and footer), and the parts of another source form compiled before it.
        """
        lib, lib_lines, before = "", [], []
        if self.modules or any(i.kind != "program" for i in self.order):
            lib, lib_lines, before, _ = self._library_source()
        args = [a for a in args if a.source is None]  # module variables come by USE
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
        body_lines: list[int] = []
        for ln in range(start, end + 1):
            body_lines.append(ln)
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
            for e in stmt_exprs(st)
            for c in ir.walk_expr(e)
            if isinstance(c, ir.Call)
        }
        inner = [i for i in prog.internal if i.name in called]
        if inner:
            body.append(_wrap_fortran("contains", self.fixed))
            body_lines.append(0)
            for i in prog.internal:  # all of them: they may call each other
                body.append(self._unit_text(i.start, i.end))
                body_lines.extend(range(i.start, i.end + 1))
        footer = _wrap_fortran(f"end subroutine {name}", self.fixed)
        header_lines = [0] * sum(h.count("\n") + 1 for h in header)
        text = lib + "\n".join(header + body + [footer]) + "\n"
        lines = lib_lines + header_lines + body_lines + [0] * (footer.count("\n") + 1)
        return text, lines, before


def _start(span: tuple[str, int, int]) -> int:
    return span[1]


def _source_part(run: list[tuple[_FileBuilder, int, int]]) -> ir.SourcePart:
    """Consecutive units of one source form as one file (named after the first unit's file)."""
    text = "\n".join(owner._unit_text(start, end) for owner, start, end in run) + "\n"
    return ir.SourcePart(run[0][0].filename, text)


def _resolve_initialised(b: _ProcBuilder, body: list[ir.Stmt], info: _ProcInfo) -> None:
    """Initialised locals (``integer :: g_xdir = 1``) are implicitly SAVEd.

    One the procedure never assigns keeps its first value on every call: it is a constant. One
    it assigns carries a value from one call to the next, which the port does not keep.
    """
    scope = b.scope
    if not scope.initialised:
        return
    written = written_names(body)
    for inner in info.internal:
        if inner.proc is not None:
            written |= written_names(inner.proc.body)
    for name, (value, node) in scope.initialised.items():
        d = scope.decls[name]
        if name in written:
            b._unsupported(
                f"initialised variable {name} is assigned in the procedure: Fortran keeps its "
                "value from one call to the next (implicit SAVE), which the port does not",
                node,
            )
            continue
        b._set_parameter(d, value)
        if name in scope.consts:
            b.notes.append(
                f"line {d.line}: {name} is initialised and never assigned: used as a constant"
            )


def _component_args(
    name: str,
    decl: ir.Decl,
    scope: _Scope,
    proc: ir.Procedure,
    derived_args: dict[str, ir.DerivedArg],
    unsupported: list[ir.Unsupported],
) -> list[ir.Arg]:
    """The port's arguments for a derived-type dummy: one per component the kernel uses."""
    dt = scope.types[decl.derived]  # type: ignore[index]
    if dt.module is None:
        unsupported.append(
            ir.Unsupported(
                f"argument {name} of TYPE {dt.name}, defined inside a procedure (no caller can "
                "declare it)",
                decl.line,
                1,
                name,
            )
        )
    if decl.allocatable:
        unsupported.append(
            ir.Unsupported(
                f"ALLOCATABLE argument {name} of derived TYPE {dt.name}", decl.line, 1, name
            )
        )
    derived_args[name] = ir.DerivedArg(name, dt.name, dt.module or "", list(decl.dims))
    flats = sorted((ref.order, flat) for flat, ref in scope.components.items() if ref.base == name)
    out = []
    for _, flat in flats:
        ref = scope.components[flat]
        d = proc.decls[flat]
        dims = list(d.dims)
        if not ref.allocatable and any(x.upper is None for x in dims):
            dims = _infer_assumed_extents(flat, dims, proc)
        intent = "in" if decl.intent == "in" else _infer_intent(flat, proc.body)
        source = ir.ComponentOf(name, list(ref.path), ref.allocatable)
        out.append(ir.Arg(flat, d.type, intent, dims, source=source))
    return out


def _bound_deferred_arrays(
    args: list[ir.Arg],
    scope: _Scope,
    proc: ir.Procedure,
    constants: dict[str, ir.Const],
    body: list[ir.Stmt] | None = None,
) -> None:
    """Bounds for ALLOCATABLE components and module arrays, from the kernel's accesses."""
    deferred = [a for a in args if a.source is not None and any(d.upper is None for d in a.dims)]
    if not deferred:
        return
    groups: dict[str, object] = {}
    for a in deferred:
        ref = scope.components.get(a.name)
        found = scope.module_variable(a.name)
        if ref is not None:
            groups[a.name] = (ref.type_name, tuple(ref.path))
        elif found is not None:
            # Declared together (``real(8), allocatable :: u(:,:), unew(:,:)``): allocated alike.
            groups[a.name] = (found[0], found[2].line, len(a.dims))
    known = {a.name for a in args if not a.dims and a.type.base == "integer"} | set(constants)
    body = proc.body if body is None else body
    bounds = deferred_bounds([a.name for a in deferred], groups, body, known)
    for a in deferred:
        if a.name in bounds:
            a.dims = bounds[a.name]
        else:
            a.dims = _infer_assumed_extents(a.name, a.dims, proc)


def _note_line(note: str) -> int:
    m = re.match(r"line (\d+):", note)
    return int(m.group(1)) if m else 0


def _has_loop(stmt: ir.Stmt) -> bool:
    return any(isinstance(s, (ir.Loop, ir.WhileLoop)) for s in ir.walk([stmt]))


def _by_source_statement(stmts: list[ir.Stmt], source_of: dict[int, int]) -> list[list[ir.Stmt]]:
    """``stmts`` cut into runs that came from one source statement each (most are alone)."""
    groups: list[list[ir.Stmt]] = []
    previous = None
    for s in stmts:
        key = source_of.get(id(s))
        if groups and key is not None and key == previous:
            groups[-1].append(s)
        else:
            groups.append([s])
        previous = key
    return groups


def _children(stmt: ir.Stmt) -> list[ir.Stmt]:
    """The statements directly inside a loop or an IF (all branches)."""
    if isinstance(stmt, (ir.Loop, ir.WhileLoop)):
        return list(stmt.body)
    if isinstance(stmt, ir.If):
        return [s for _, body in stmt.branches for s in body] + list(stmt.orelse)
    return []


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
        names = sorted(n for n in names_in(fp.body) - own if n in host.decls)
        names = [n for n in names if host.decls[n].parameter is None]
        written = written_names(fp.body)
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
        for n in sorted(names_in(fp.body) - known):
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


def _infer_intent(name: str, body: list[ir.Stmt]) -> str:
    written = name in written_names(body)
    if not written:
        return "in"
    if read_before_write(name, body):
        return "inout"
    return "out" if not reads_var(body, name) else "inout"


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
