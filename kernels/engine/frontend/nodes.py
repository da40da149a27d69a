"""Small helpers over fparser2 nodes: class name, line numbers, names, construct wording."""

from __future__ import annotations


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
