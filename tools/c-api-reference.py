#!/usr/bin/env python3
"""Writes the C API reference, in Markdown, from the header's doc comments and declarations.

Usage: tools/c-api-reference.py include/petrel.h .build/docs/c-api-reference.md   (make docs)

The reference has the header's conventions, a section per function (its declaration, then its
doc comment), the structs with their fields, the callbacks, the constants and the status codes.

A function is documented by the /** */ comment directly above it, or by one above the run of
declarations it belongs to (no blank line in between: the header's comment over
petrel_conn_path, _query, _header and _peer_address, or over petrel_event_record, its
constants and petrel_server_next_events). A declared petrel_ function with no such comment
makes this script exit with status 1, naming it, and write nothing.

Python 3 standard library only.
"""
from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path


# ---- reading the header into items ----------------------------------------------------------


@dataclass
class Item:
    kind: str                    # doc, comment, blank, define, decl, pp
    text: str                    # as in the header
    line: int                    # 1-based line of its start
    name: str = ""               # define: the macro's name
    value: str = ""              # define: its value
    note: str = ""               # define: its trailing comment


def strip_comments(text: str, in_comment: bool = False) -> tuple[str, bool]:
    """The code of `text` without comments, and whether a comment is still open at its end."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if in_comment:
            end = text.find("*/", i)
            if end < 0:
                return "".join(out), True
            i = end + 2
            in_comment = False
            out.append(" ")
        elif text.startswith("/*", i):
            in_comment = True
            i += 2
        elif text.startswith("//", i):
            end = text.find("\n", i)
            if end < 0:
                break
            i = end
        elif text[i] == '"':
            end = i + 1
            while end < len(text) and text[end] != '"':
                end += 2 if text[end] == "\\" else 1
            out.append(text[i:end + 1])
            i = end + 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out), in_comment


def read_items(source: str) -> list[Item]:
    lines = source.splitlines()
    items: list[Item] = []
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        if not stripped:
            items.append(Item("blank", "", i + 1))
            i += 1
        elif stripped.startswith("/*"):
            j = i
            while "*/" not in (lines[j].strip()[2:] if j == i else lines[j]):
                j += 1
            text = "\n".join(lines[i:j + 1])
            kind = "doc" if stripped.startswith("/**") and not stripped.startswith("/***") else "comment"
            items.append(Item(kind, text, i + 1))
            i = j + 1
        elif stripped.startswith("#"):
            j = i
            while lines[j].rstrip().endswith("\\"):
                j += 1
            text = " ".join(line.rstrip().rstrip("\\") for line in lines[i:j + 1])
            if re.match(r"#\s*if(def)?\s+(defined\s*\(?\s*)?__cplusplus", text.strip()):
                depth = 1
                while depth:
                    j += 1
                    s = lines[j].strip()
                    if re.match(r"#\s*if", s):
                        depth += 1
                    elif re.match(r"#\s*endif", s):
                        depth -= 1
                i = j + 1
                continue
            m = re.match(r"\s*#\s*define\s+(\w+)(?!\()\s*(.*)$", text)
            if m:
                code, _ = strip_comments(m.group(2))
                notes = re.findall(r"/\*(.*?)\*/", m.group(2))
                items.append(Item("define", text, i + 1, name=m.group(1), value=code.strip(),
                                  note=" ".join(n.strip() for n in notes)))
            else:
                items.append(Item("pp", text, i + 1))
            i = j + 1
        else:
            j = i
            code_all = ""
            in_comment = False
            while True:
                code, in_comment = strip_comments(lines[j], in_comment)
                code_all += code + "\n"
                depth = code_all.count("{") - code_all.count("}")
                if depth == 0 and not in_comment and code_all.rstrip().endswith(";"):
                    break
                j += 1
                if j >= len(lines):
                    raise SystemExit(f"c-api-reference: line {i + 1}: a declaration that does not end")
            items.append(Item("decl", "\n".join(lines[i:j + 1]), i + 1))
            i = j + 1
    return items


def comment_lines(text: str) -> list[str]:
    """The lines of a /* */ or /** */ comment without its markers and leading asterisks."""
    body = re.sub(r"^\s*/\*\*?", "", text)
    body = re.sub(r"\*/\s*$", "", body)
    out = []
    for line in body.split("\n"):
        m = re.match(r"^\s*\*(?!/)( ?)(.*)$", line)
        out.append(m.group(2).rstrip() if m else line.strip())
    while out and not out[0].strip():
        out.pop(0)
    while out and not out[-1].strip():
        out.pop()
    return out


def one_line(text: str) -> str:
    return " ".join(" ".join(comment_lines(text)).split())


# ---- what the items declare -----------------------------------------------------------------


@dataclass
class Function:
    name: str
    signature: str
    line: int
    doc: Item | None
    section: str


@dataclass
class Field:
    name: str
    type: str                    # the C type, or the whole declaration for a callback
    callback: bool
    doc: str                     # its /** */ comment, or the comment after it


@dataclass
class Struct:
    name: str
    fields: list[Field]
    doc: Item | None
    doc_is_for_function: bool


@dataclass
class Reference:
    preamble: str = ""
    functions: list[Function] = field(default_factory=list)
    flow: list[tuple[str, Function | str]] = field(default_factory=list)   # (section, a function or prose)
    sections: list[str] = field(default_factory=list)
    structs: list[Struct] = field(default_factory=list)
    handles: list[tuple[str, Item | None]] = field(default_factory=list)
    aliases: list[tuple[str, str, Item | None]] = field(default_factory=list)
    callback_types: list[tuple[str, str, Item | None]] = field(default_factory=list)
    statuses: list[tuple[str, list[Item]]] = field(default_factory=list)
    constants: list[tuple[Item | None, list[Item]]] = field(default_factory=list)
    undocumented: list[tuple[str, int]] = field(default_factory=list)


FUNCTION = re.compile(r"\b(petrel_\w+)\s*\(")


def normalize(code: str) -> str:
    code = " ".join(code.split())
    code = re.sub(r"\(\s+", "(", code)
    code = re.sub(r"\s+\)", ")", code)
    return re.sub(r"\s+([,;])", r"\1", code)


def parse_fields(body: str) -> list[Field]:
    fields: list[Field] = []
    pending: list[str] = []
    last: Field | None = None
    same_line = False
    i = 0
    while i < len(body):
        c = body[i]
        if c == "\n":
            same_line = False
            i += 1
        elif c.isspace():
            i += 1
        elif body.startswith("/*", i):
            end = body.index("*/", i) + 2
            text = one_line(body[i:end])
            if last is not None and same_line:
                # a comment that starts on the field's line is the field's, however many lines it runs on
                last.doc = (last.doc + " " + text).strip()
            else:
                pending.append(text)
            i = end
        else:
            end = body.index(";", i)
            code = normalize(body[i:end])
            m = re.match(r"^(.*?)\(\s*\*\s*(\w+)\s*\)\s*\((.*)\)$", code, re.S)
            if m:
                last = Field(m.group(2), code, True, " ".join(pending))
            else:
                m = re.match(r"^(.*?)(\w+)\s*(\[[^\]]*\])?$", code)
                if not m:
                    raise SystemExit(f"c-api-reference: cannot read the field '{code}'")
                type_ = (m.group(1).strip() + (m.group(3) or "")).strip()
                last = Field(m.group(2), type_, False, " ".join(pending))
            fields.append(last)
            pending = []
            same_line = True
            i = end + 1
    return fields


def read_reference(source: str) -> Reference:
    items = read_items(source)
    ref = Reference()
    if items and items[0].kind == "comment":
        ref.preamble = "\n".join(comment_lines(items[0].text))
    section = "General"
    ref.sections.append(section)
    current_doc: Item | None = None
    band: str | None = None
    run: list[Item] = []
    run_doc: Item | None = None
    previous: Item | None = None

    def end_run() -> None:
        nonlocal run, run_doc
        if run:
            ref.constants.append((run_doc, run))
        run, run_doc = [], None

    struct_docs: list[tuple[Struct, Item]] = []
    functions_by_doc: dict[int, list[Function]] = {}
    for index, item in enumerate(items):
        if index == 0 and item.kind == "comment":
            previous = item
            continue
        if item.kind != "define" or item.name.startswith("PETREL_E_") or item.name == "PETREL_OK":
            end_run()
        if item.kind == "doc":
            current_doc = item
        elif item.kind == "blank":
            current_doc = None
            band = None
        elif item.kind == "comment":
            current_doc = None
            inner = " ".join(comment_lines(item.text)).strip()
            if re.fullmatch(r"-+", inner):
                pass
            elif previous is not None and previous.kind == "comment" and \
                    re.fullmatch(r"-+", " ".join(comment_lines(previous.text)).strip()):
                section = inner
                ref.sections.append(section)
            elif len(comment_lines(item.text)) > 1:
                ref.flow.append((section, "\n".join(comment_lines(item.text))))
            else:
                band = inner
        elif item.kind == "define":
            if not item.value:
                pass
            elif item.name == "PETREL_OK" or item.name.startswith("PETREL_E_"):
                key = band or "Success"
                if ref.statuses and ref.statuses[-1][0] == key:
                    ref.statuses[-1][1].append(item)
                else:
                    ref.statuses.append((key, [item]))
            else:
                if not run:
                    run_doc = previous if previous is not None and previous.kind == "doc" else None
                run.append(item)
        elif item.kind == "decl":
            code, _ = strip_comments(item.text)
            flat = normalize(code)
            if flat.startswith("typedef"):
                m = re.match(r"typedef struct (\w+) (\w+);$", flat)
                if m:
                    ref.handles.append((m.group(2), previous if previous and previous.kind == "doc" else None))
                elif flat.startswith("typedef struct"):
                    tail = re.search(r"\}\s*(\w+)\s*;$", flat)
                    if tail is None:
                        raise SystemExit(f"c-api-reference: line {item.line}: a struct without a typedef name")
                    name = tail.group(1)
                    body = item.text[item.text.index("{") + 1:item.text.rindex("}")]
                    doc = previous if previous is not None and previous.kind == "doc" else None
                    struct = Struct(name, parse_fields(body), doc, False)
                    ref.structs.append(struct)
                    if doc is not None:
                        struct_docs.append((struct, doc))
                else:
                    m = re.match(r"typedef (.*?)\(\s*\*\s*(\w+)\)\s*\((.*)\);$", flat)
                    if m:
                        ref.callback_types.append((m.group(2), flat, current_doc))
                    else:
                        m = re.match(r"typedef (.*?)(\w+);$", flat)
                        if m:
                            ref.aliases.append((m.group(2), m.group(1).strip(), current_doc))
            else:
                m = FUNCTION.search(code)
                if m:
                    signature = "\n".join(line.rstrip() for line in code.strip().split("\n"))
                    function = Function(m.group(1), signature, item.line, current_doc, section)
                    ref.functions.append(function)
                    ref.flow.append((section, function))
                    if current_doc is None:
                        ref.undocumented.append((function.name, item.line))
                    else:
                        functions_by_doc.setdefault(id(current_doc), []).append(function)
        previous = item
    end_run()
    for struct, doc in struct_docs:
        struct.doc_is_for_function = id(doc) in functions_by_doc
    return ref


# ---- Markdown -------------------------------------------------------------------------------


def anchor(name: str) -> str:
    return re.sub(r"[^a-z0-9_ -]", "", name.lower()).replace(" ", "-")


TOKEN = re.compile(
    r"`[^`]*`"                                                   # already code
    r"|(?:wss?|https?|redis|socks5)://[\w\[][^\s,;()\"]*[^\s,;()\".:]"  # a URL
    r"|\{\{\w+\}\}"                                              # {{id}}
    r"|\*{0,2}\b(?:petrel|PETREL)_\w+(?:\(\)|\*)?"                # our names, PETREL_SLOW_*
    r"|\*{1,2}[A-Za-z_]\w*"                                      # *len_out, **_out
    r"|(?<![\w.-])_?[a-z][a-z0-9]*(?:_[a-z0-9]+)+\b"             # snake_case names, _destroy
    r"|(?<![\w.-])_?[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b"             # NO_PROXY, _ERROR
    r"|(?<![\w.-])_[A-Za-z]+\b"                                  # _init
)


class Writer:
    def __init__(self, linkable: set[str]) -> None:
        self.linkable = linkable
        self.here = ""

    def escape(self, text: str, table: bool) -> str:
        text = text.replace("\\", "\\\\")
        for c in "*_[]<>":
            text = text.replace(c, "\\" + c)
        return text.replace("|", "\\|") if table else text

    def inline(self, text: str, table: bool = False) -> str:
        out = []
        pos = 0
        for m in TOKEN.finditer(text):
            out.append(self.escape(text[pos:m.start()], table))
            token = m.group(0)
            if token.startswith("`"):
                out.append(token.replace("|", "\\|") if table else token)
            else:
                name = token.lstrip("*").removesuffix("()")
                code = f"`{token}`"
                if name in self.linkable and name != self.here:
                    code = f"[{code}](#{anchor(name)})"
                out.append(code)
            pos = m.end()
        out.append(self.escape(text[pos:], table))
        return "".join(out)

    def paragraphs(self, lines: list[str]) -> str:
        """Comment lines as Markdown paragraphs: a more indented line goes on the line before; a
        new paragraph starts after an empty line, or at "Label: " after a sentence's end."""
        logical: list[str | None] = []
        base = min((len(l) - len(l.lstrip()) for l in lines if l.strip()), default=0)
        for line in lines:
            if not line.strip():
                logical.append(None)
                continue
            indent = len(line) - len(line.lstrip())
            if indent > base and logical and logical[-1] is not None:
                logical[-1] += " " + line.strip()
            else:
                logical.append(line.strip())
        paras: list[str] = []
        current = ""
        for entry in logical:
            if entry is None:
                if current:
                    paras.append(current)
                current = ""
            elif current and re.match(r"^[A-Za-z_][\w -]{0,24}: ", entry) and current.rstrip()[-1:] in ".;:)":
                paras.append(current)
                current = entry
            else:
                current = (current + " " + entry).strip()
        if current:
            paras.append(current)
        out = []
        for p in paras:
            m = re.match(r"^(Returns|Returns and Thread|Ownership|Thread|Threads):\s", p)
            text = self.inline(p)
            if m:
                text = f"**{m.group(1)}:** " + self.inline(p[m.end():])
            out.append(text)
        return "\n\n".join(out)


def table_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def write_markdown(ref: Reference, header_name: str) -> str:
    linkable = {f.name for f in ref.functions} | {s.name for s in ref.structs}
    w = Writer(linkable)
    version = {i.name: i.value for _, run in ref.constants for i in run}
    ver = ".".join(version.get(f"PETREL_VERSION_{p}", "?") for p in ("MAJOR", "MINOR", "PATCH"))
    out = [
        "# C API reference",
        "",
        f"Generated from `{header_name}` (version {ver}) by `tools/c-api-reference.py` (`make docs`); "
        "the header is the source, this page is not edited by hand. What the API covers, with "
        "examples: [docs/c-api.md](../../docs/c-api.md).",
        "",
        "- [Conventions](#conventions)",
    ]
    for section in ref.sections:
        if any(s == section for s, _ in ref.flow):
            out.append(f"- [Functions: {section}](#{anchor('functions: ' + section)})")
    out += ["- [Types](#types)", "- [Structs](#structs)", "- [Callbacks](#callbacks)",
            "- [Constants](#constants)", "- [Status codes](#status-codes)", ""]

    out += ["## Conventions", "", "From the header's preamble:", "", "```text", ref.preamble, "```", ""]

    for section in ref.sections:
        entries = [e for s, e in ref.flow if s == section]
        if not entries:
            continue
        out += [f"## Functions: {section}", ""]
        for entry in entries:
            if isinstance(entry, str):
                w.here = ""
                out += [w.paragraphs(entry.split("\n")), ""]
                continue
            w.here = entry.name
            out += [f"### {entry.name}", "", "```c", entry.signature, "```", ""]
            if entry.doc is not None:
                out += [w.paragraphs(comment_lines(entry.doc.text)), ""]

    w.here = ""
    out += ["## Types", "", table_row(["Type", "What it is"]), table_row(["---", "---"])]
    for name, doc in ref.handles:
        text = "an opaque handle" + (": " + one_line(doc.text) if doc is not None else "")
        out.append(table_row([f"`{name}`", w.inline(text, table=True)]))
    for name, target, doc in ref.aliases:
        text = f"`{target}`" + (": " + one_line(doc.text) if doc is not None else "")
        out.append(table_row([f"`{name}`", w.inline(text, table=True)]))
    out.append("")

    out += ["## Structs", ""]
    for struct in ref.structs:
        w.here = struct.name
        out += [f"### {struct.name}", ""]
        if struct.doc is not None:
            functions = [f.name for f in ref.functions if f.doc is struct.doc]
            if struct.doc_is_for_function:
                out += ["Described with " + ", ".join(w.inline(f) for f in functions) + ".", ""]
            else:
                out += [w.paragraphs(comment_lines(struct.doc.text)), ""]
        out += [table_row(["Field", "Type", "Description"]), table_row(["---", "---", "---"])]
        for f in struct.fields:
            if f.callback:
                out.append(table_row([f"`{f.name}`", "[callback](#callbacks)", w.inline(f.doc, table=True)]))
            else:
                out.append(table_row([f"`{f.name}`", f"`{f.type}`", w.inline(f.doc, table=True)]))
        out.append("")

    w.here = ""
    out += ["## Callbacks", "",
            "Function pointers the application sets in the callback structs, and callback types.", "",
            table_row(["Callback", "Declaration", "When it is called"]), table_row(["---", "---", "---"])]
    for struct in ref.structs:
        for f in struct.fields:
            if f.callback:
                out.append(table_row([f"`{struct.name}.{f.name}`", f"`{f.type}`", w.inline(f.doc, table=True)]))
    for name, declaration, doc in ref.callback_types:
        out.append(table_row([f"`{name}`", f"`{declaration}`",
                              w.inline(one_line(doc.text) if doc is not None else "", table=True)]))
    out.append("")

    out += ["## Constants", ""]
    for doc, run in ref.constants:
        names = [i.name for i in run]
        single_doc = doc is not None and len(run) == 1
        if doc is not None and not single_doc:
            out += [w.inline(one_line(doc.text)), ""]
        elif len(names) > 1:
            prefix = os.path.commonprefix(names)
            out += [f"`{prefix[:prefix.rfind('_') + 1]}*`", ""]
        out += [table_row(["Constant", "Value", "Meaning"]), table_row(["---", "---", "---"])]
        for i in run:
            note = one_line(doc.text) if doc is not None and single_doc else i.note
            out.append(table_row([f"`{i.name}`", f"`{i.value}`", w.inline(note, table=True)]))
        out.append("")

    out += ["## Status codes", "",
            "Every function that can fail returns a `petrel_status`: `PETREL_OK` or one of these. "
            "Numbers are never reused; `petrel_strerror` names any of them.", ""]
    for band, codes in ref.statuses:
        out += [f"**{w.inline(band)}**", "", table_row(["Status", "Value", "Meaning"]),
                table_row(["---", "---", "---"])]
        for i in codes:
            value = i.value.strip("()")
            out.append(table_row([f"`{i.name}`", f"`{value}`", w.inline(i.note, table=True)]))
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__.strip().split("\n\n")[1], file=sys.stderr)
        return 2
    header, output = Path(argv[1]), Path(argv[2])
    ref = read_reference(header.read_text(encoding="utf-8"))
    if not ref.functions:
        print(f"c-api-reference: {header}: no petrel_ function declared", file=sys.stderr)
        return 1
    if ref.undocumented:
        for name, line in ref.undocumented:
            print(f"c-api-reference: {header}:{line}: {name} has no doc comment (a /** */ comment directly "
                  "above it, or above the run of declarations it belongs to)", file=sys.stderr)
        print(f"c-api-reference: {len(ref.undocumented)} of {len(ref.functions)} functions undocumented; "
              "nothing written", file=sys.stderr)
        return 1
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(write_markdown(ref, argv[1]), encoding="utf-8")
    print(f"c-api-reference: {output}: {len(ref.functions)} functions, {len(ref.structs)} structs, "
          f"{sum(len(c) for _, c in ref.statuses)} status codes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
