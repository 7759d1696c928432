#!/usr/bin/env python3
"""Generates src/LibMirai.jl (low-level ccall wrappers) from include/mirai.h.

Usage: python3 gen/generate.py [--check]
With --check, exits 1 if the committed file differs from what would be generated, or if any
mirai_* function of the header has no wrapper.

The header is cbindgen output with a regular shape; this parser handles exactly what cbindgen
emits for mirai.h: #defines of literals, enums, opaque and plain structs, function-pointer
typedefs, and function declarations, each with its doc comment.
"""
import pathlib
import re
import sys
import tomllib

HERE = pathlib.Path(__file__).resolve().parent

SCALARS = {
    "void": "Cvoid", "bool": "Bool", "char": "Cchar", "int": "Cint",
    "uint8_t": "UInt8", "uint16_t": "UInt16", "uint32_t": "UInt32", "uint64_t": "UInt64",
    "int8_t": "Int8", "int16_t": "Int16", "int32_t": "Int32", "int64_t": "Int64",
    "size_t": "Csize_t",
}


def load_config():
    with open(HERE / "generator.toml", "rb") as f:
        return tomllib.load(f)["general"]


def items(text):
    """Yields (doc, statement) for each top-level C statement, and ("define", name, value)."""
    pos = 0
    doc = ""
    while pos < len(text):
        if text.startswith("/*", pos):
            end = text.index("*/", pos) + 2
            doc = text[pos + 2:end - 2]
            pos = end
            continue
        if text.startswith("#", pos):
            end = text.find("\n", pos)
            end = len(text) if end < 0 else end
            line = text[pos:end]
            m = re.match(r"#define\s+(MIRAI_\w+)\s+(.+)$", line)
            if m:
                yield ("define", m.group(1), m.group(2).strip(), doc)
            doc = ""
            pos = end + 1
            continue
        if text[pos].isspace():
            pos += 1
            continue
        depth = 0
        start = pos
        while pos < len(text):
            c = text[pos]
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
            elif c == ";" and depth == 0:
                break
            elif text.startswith("/*", pos) and depth > 0:
                pos = text.index("*/", pos) + 1
            pos += 1
        yield ("stmt", text[start:pos].strip(), doc)
        doc = ""
        pos += 1


def clean_doc(doc):
    lines = [l.strip() for l in doc.strip().splitlines()]
    return [l for l in lines if l] if doc else []


def jl_type(ctype, known):
    """Maps a C type ('const uint8_t *', 'mirai_task **') to Julia."""
    t = ctype.replace("const ", "").replace("struct ", "").replace("enum ", "").strip()
    stars = t.count("*")
    base = t.replace("*", "").strip()
    jl = SCALARS.get(base) or known.get(base)
    if jl is None:
        raise SystemExit(f"unknown C type: {ctype!r}")
    for _ in range(stars):
        jl = f"Ptr{{{jl}}}"
    return jl


def split_params(params):
    params = params.strip()
    if params in ("", "void"):
        return []
    out = []
    for p in params.split(","):
        p = " ".join(p.split())
        m = re.match(r"(.*?)(\w+)(\[\d+\])?$", p)
        ctype, name = m.group(1).strip(), m.group(2)
        out.append((ctype, name))
    return out


# Julia keywords (and `out`, kept apart from Base.out-style names) get a trailing underscore.
JULIA_RESERVED = {
    "abstract", "baremodule", "begin", "break", "catch", "const", "continue", "do", "else",
    "elseif", "end", "export", "false", "finally", "for", "function", "global", "if", "import",
    "let", "local", "macro", "module", "mutable", "out", "primitive", "quote", "return", "struct",
    "true", "try", "type", "using", "while",
}


def jl_name(name):
    return name + "_" if name in JULIA_RESERVED else name


def generate(header_text, config):
    known = {}
    out_defs, out_types, out_funcs = [], [], []
    functions = []
    constants = []
    for item in items(header_text):
        if item[0] == "define":
            _, name, value, doc = item
            out_defs.append(f"const {name} = {value}")
            continue
        _, stmt, doc = item
        stmt = " ".join(stmt.split())
        docs = clean_doc(doc)
        docstr = ""
        if docs:
            # Julia docstrings interpolate `$` and read `\` escapes.
            escaped = "\n".join(docs).replace("\\", "\\\\").replace("$", "\\$").replace('"""', "'''")
            docstr = '"""\n' + escaped + '\n"""\n'
        if m := re.match(r"typedef enum (\w+) \{(.*)\} \1$", stmt):
            name, body = m.group(1), m.group(2)
            body = re.sub(r"/\*.*?\*/", "", body)
            variants = [v.strip() for v in body.split(",") if v.strip()]
            lines = [f"    {v.replace(' = ', ' = ')}" for v in variants]
            out_types.append(f"{docstr}@enum {name}::Cint begin\n" + "\n".join(lines) + "\nend\n")
            known[name] = name
            constants.extend(v.split("=")[0].strip() for v in variants)
        elif m := re.match(r"typedef struct (\w+) \1$", stmt):
            name = m.group(1)
            out_types.append(f"{docstr}mutable struct {name} end\n")
            known[name] = name
        elif m := re.match(r"typedef struct (\w+) \{(.*)\} \1$", stmt):
            name, body = m.group(1), m.group(2)
            body = re.sub(r"/\*.*?\*/", "", body)
            fields = []
            for f in [f.strip() for f in body.split(";") if f.strip()]:
                fm = re.match(r"(.*?)(\w+)(\[(\d+)\])?$", f)
                ctype, fname, count = fm.group(1).strip(), fm.group(2), fm.group(4)
                jt = jl_type(ctype, known)
                if count:
                    jt = f"NTuple{{{count}, {jt}}}"
                fields.append(f"    {jl_name(fname)}::{jt}")
            out_types.append(f"{docstr}struct {name}\n" + "\n".join(fields) + "\nend\n")
            known[name] = name
        elif m := re.match(r"typedef (.+?)\(\*(\w+)\)\((.*)\)$", stmt):
            name = m.group(2)
            out_types.append(f"{docstr}const {name} = Ptr{{Cvoid}}\n")
            known[name] = name
        elif m := re.match(r"(.+?)(\b\w+)\((.*)\)$", stmt):
            ret, name, params = m.group(1).strip(), m.group(2), split_params(m.group(3))
            rt = jl_type(ret, known)
            args = [jl_name(p[1]) for p in params]
            types = [jl_type(p[0], known) for p in params]
            tuple_types = "(" + ", ".join(types) + ("," if len(types) == 1 else "") + ")"
            call = f"ccall((:{name}, {config['library_name']}), {rt}, {tuple_types}{''.join(', ' + a for a in args)})"
            sig = ", ".join(f"{a}" for a in args)
            out_funcs.append(f"{docstr}function {name}({sig})\n    {call}\nend\n")
            functions.append(name)
        else:
            raise SystemExit(f"unhandled declaration: {stmt[:80]}")
    exports = sorted(
        n for n in known.keys() | set(functions) | set(constants) | {d.split()[1] for d in out_defs}
        if any(n.startswith(p) for p in config["export_symbol_prefixes"])
    )
    text = (
        "# Generated by bindings/julia/gen/generate.py from include/mirai.h. Do not edit:\n"
        "# run `python3 bindings/julia/gen/generate.py`.\n"
        f"module {config['module_name']}\n\n"
        "# The shared library: set JULIA_MIRAI_LIB to its path, or put libmirai on the loader path.\n"
        f"const {config['library_name']} = get(ENV, \"JULIA_MIRAI_LIB\", \"libmirai\")\n\n"
        + "\n".join(out_defs) + "\n\n"
        + "\n".join(out_types) + "\n"
        + "\n".join(out_funcs) + "\n"
        + "export " + ", ".join(exports) + "\n\nend # module\n"
    )
    return text, functions


def main():
    config = load_config()
    header_path = (HERE / config["header"]).resolve()
    header = header_path.read_text()
    # C++ linkage guards carry no declarations.
    body = re.sub(r'#ifdef __cplusplus\n(extern "C" \{|\}\s*// extern "C")\n#endif.*\n', "", header)
    text, functions = generate(body, config)
    out_path = (HERE / config["output_file_path"]).resolve()
    declared = set(re.findall(r"\b(mirai_\w+)\(", re.sub(r"/\*.*?\*/", "", header, flags=re.S)))
    missing = declared - set(functions)
    if missing:
        print(f"functions without a wrapper: {sorted(missing)}", file=sys.stderr)
        return 1
    if "--check" in sys.argv:
        if not out_path.exists() or out_path.read_text() != text:
            print(f"{out_path} is stale: run python3 bindings/julia/gen/generate.py", file=sys.stderr)
            return 1
        print(f"LibMirai.jl is current: {len(functions)} functions wrapped")
        return 0
    out_path.write_text(text)
    print(f"wrote {out_path} ({len(functions)} functions)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
