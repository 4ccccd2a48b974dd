#!/usr/bin/env python3
"""Typed Swift messages for Proto/: one struct per message, written for the PixTrackMessages target.

Called by scripts/gen-proto (never on its own) with the protoc-c output folder, the serialized
FileDescriptorSet protoc wrote for Proto/, and the folder to write into.

Why a Python script: gen-proto already needs python3 (it writes the descriptor registry), the
descriptor set is plain protobuf that a few dozen lines can read, and nothing new has to be
installed: no protoc plugin to build, no swift-protobuf or python-protobuf package. It reads two
things: the descriptor set (names, field numbers, kinds, oneofs, maps) and the protoc-c files
(the C names of structs, functions and oneof case enums, taken as protoc-c wrote them rather than
re-deriving protoc-c's naming rules).

What each message gets (see Sources/PixTrackMessages/MessageRuntime.swift for the shared parts):
- a `Sendable, Equatable` struct with typed fields and proto3 defaults; message fields are
  optional (boxed, so recursive types work); maps are dictionaries; each oneof is an optional
  enum; enums are Swift enums that keep unknown numbers (`unrecognized`);
- `init(serializedBytes:)` / `serializedBytes()`: straight from and to the protobuf-c struct
  (protobuf-c unpacks and packs; the struct is filled and read field by field, no dictionary);
- `init(jsonUTF8:)` / `jsonUTF8()`: proto3 JSON (through ProtoCodec's proto3 JSON mapping).
Map entries are written sorted by key, so the bytes are the same on every run.
"""
import os
import re
import sys

# --- a minimal protobuf reader, enough for descriptor.proto -------------------------------------


def fields(buf):
    """(number, wire type, value) for each field; value is int or bytes."""
    i, n = 0, len(buf)
    while i < n:
        key, i = varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = varint(buf, i)
        elif wt == 1:
            v, i = buf[i:i + 8], i + 8
        elif wt == 2:
            ln, i = varint(buf, i)
            v, i = buf[i:i + ln], i + ln
        elif wt == 5:
            v, i = buf[i:i + 4], i + 4
        else:
            raise SystemExit("gen-proto-swift: unsupported wire type %d in the descriptor set" % wt)
        yield num, wt, v


def varint(buf, i):
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, i
        shift += 7


class Field:
    def __init__(self, raw):
        self.name, self.number, self.label, self.type, self.type_name = "", 0, 1, 0, ""
        self.oneof_index, self.proto3_optional = None, False
        for num, _, v in fields(raw):
            if num == 1: self.name = v.decode()
            elif num == 3: self.number = v
            elif num == 4: self.label = v
            elif num == 5: self.type = v
            elif num == 6: self.type_name = v.decode().lstrip(".")
            elif num == 9: self.oneof_index = v
            elif num == 17: self.proto3_optional = bool(v)


class Enum:
    def __init__(self, raw, scope):
        self.name, self.values = "", []
        for num, _, v in fields(raw):
            if num == 1: self.name = v.decode()
            elif num == 2:
                name, number = "", 0
                for n2, _, v2 in fields(v):
                    if n2 == 1: name = v2.decode()
                    elif n2 == 2: number = v2 - (1 << 64) if v2 >= 1 << 63 else v2
                self.values.append((name, number))
        self.full = scope + "." + self.name if scope else self.name


class Message:
    def __init__(self, raw, scope, file):
        self.name, self.fields, self.nested, self.enums, self.oneofs, self.map_entry = "", [], [], [], [], False
        self.file = file
        nested_raw, enum_raw = [], []
        for num, _, v in fields(raw):
            if num == 1: self.name = v.decode()
            elif num == 2: self.fields.append(Field(v))
            elif num == 3: nested_raw.append(v)
            elif num == 4: enum_raw.append(v)
            elif num == 7:
                for n2, _, v2 in fields(v):
                    if n2 == 7: self.map_entry = bool(v2)
            elif num == 8:
                self.oneofs.append(next((v2.decode() for n2, _, v2 in fields(v) if n2 == 1), ""))
        self.full = scope + "." + self.name if scope else self.name
        self.nested = [Message(r, self.full, file) for r in nested_raw]
        self.enums = [Enum(r, self.full) for r in enum_raw]


def load(path):
    files = []
    for num, _, v in fields(open(path, "rb").read()):
        if num != 1:
            continue
        name, package, msgs, enums = "", "", [], []
        for n2, _, v2 in fields(v):
            if n2 == 1: name = v2.decode()
            elif n2 == 2: package = v2.decode()
            elif n2 == 4: msgs.append(v2)
            elif n2 == 5: enums.append(v2)
        files.append((name, package, [Message(m, package, name) for m in msgs], [Enum(e, package) for e in enums]))
    return files


# --- C names, as protoc-c wrote them ------------------------------------------------------------

def c_names(c_dir):
    messages, enums, cases = {}, {}, {}
    for d, _, names in os.walk(c_dir):
        for f in names:
            text = open(os.path.join(d, f)).read()
            if f.endswith(".pb-c.c"):
                for lower, full, ctype in re.findall(
                        r'const ProtobufCMessageDescriptor (\w+)__descriptor =\s*\{\s*PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC,\s*"([\w.]+)",\s*"\w+",\s*"(\w+)"', text):
                    messages[full] = (ctype, lower)
                for _, full, ctype in re.findall(
                        r'const ProtobufCEnumDescriptor (\w+)__descriptor =\s*\{\s*PROTOBUF_C__ENUM_DESCRIPTOR_MAGIC,\s*"([\w.]+)",\s*"\w+",\s*"(\w+)"', text):
                    enums[full] = ctype
            elif f.endswith(".pb-c.h"):
                for ctype, body in re.findall(r"^struct  (\w+)\n\{\n(.*?)^\};", text, re.M | re.S):
                    for case_type, oneof in re.findall(r"^  (\w+) (\w+)_case;", body, re.M):
                        cases[(ctype, oneof)] = case_type
                    members = set(re.findall(r"(\w+);\s*$", body, re.M))
                    cases[(ctype, None)] = members
    return messages, enums, cases


# --- Swift naming -------------------------------------------------------------------------------

SWIFT_KEYWORDS = set("""associatedtype class deinit enum extension fileprivate func import init inout internal let
open operator private precedencegroup protocol public rethrows static struct subscript typealias var break case catch
continue default defer do else fallthrough for guard if in repeat return throw switch where while as Any false is nil
self Self super throws true try await async some any Type""".split())


def camel(snake, upper=False):
    parts = [p for p in snake.split("_") if p]
    s = "".join(p[:1].upper() + p[1:] for p in parts)
    if not upper:
        s = s[:1].lower() + s[1:]
    return s


def ident(name):
    return "`%s`" % name if name in SWIFT_KEYWORDS else name


def swift_type_name(full, package):
    prefix = "_".join(camel(p, True) for p in package.split(".")) + "_" if package else ""
    rest = full[len(package) + 1:] if package else full
    return prefix + rest  # nested types stay nested: Outer.Inner


def enum_case_names(e):
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", e.name).upper() + "_"
    out, seen = [], set()
    for name, number in e.values:
        short = name[len(words):] if name.startswith(words) and len(name) > len(words) else name
        if short[:1].isdigit():
            short = name
        case = camel(short.lower())
        if case in seen or case == "unrecognized":
            case += "_%d" % number
        seen.add(case)
        out.append((ident(case), name, number))
    return out


# --- code ---------------------------------------------------------------------------------------

SCALARS = {  # proto type: (Swift type, default, C element type)
    1: ("Double", "0", "Double"), 2: ("Float", "0", "Float"), 3: ("Int64", "0", "Int64"),
    4: ("UInt64", "0", "UInt64"), 5: ("Int32", "0", "Int32"), 6: ("UInt64", "0", "UInt64"),
    7: ("UInt32", "0", "UInt32"), 8: ("Bool", "false", "protobuf_c_boolean"), 9: ("String", '""', "UnsafeMutablePointer<CChar>?"),
    12: ("[UInt8]", "[]", "ProtobufCBinaryData"), 13: ("UInt32", "0", "UInt32"), 15: ("Int32", "0", "Int32"),
    16: ("Int64", "0", "Int64"), 17: ("Int32", "0", "Int32"), 18: ("Int64", "0", "Int64"),
}
MESSAGE, ENUM = 11, 14


class Generator:
    def __init__(self, files, c_dir):
        self.files = files
        self.c_messages, self.c_enums, self.c_structs = c_names(c_dir)
        self.messages, self.enums, self.package_of = {}, {}, {}
        for fname, package, msgs, enums in files:
            for e in enums:
                self.enums[e.full] = e
                self.package_of[e.full] = package
            stack = list(msgs)
            while stack:
                m = stack.pop()
                self.messages[m.full] = m
                self.package_of[m.full] = package
                stack += m.nested
                for e in m.enums:
                    self.enums[e.full] = e
                    self.package_of[e.full] = package
        self.recursive = self.find_recursive()

    def sname(self, full):
        return swift_type_name(full, self.package_of[full])

    def find_recursive(self):
        """Messages that can contain themselves (their decoder checks nesting depth first)."""
        edges = {n: {f.type_name for f in m.fields if f.type == MESSAGE} for n, m in self.messages.items()}
        rec = set()
        for start in edges:
            seen, stack = set(), list(edges[start])
            while stack:
                n = stack.pop()
                if n == start:
                    rec.add(start)
                    break
                if n not in seen:
                    seen.add(n)
                    stack += edges.get(n, ())
        return rec

    def map_entry(self, f):
        m = self.messages.get(f.type_name) if f.type == MESSAGE else None
        return m if m is not None and m.map_entry and f.label == 3 else None

    def value_type(self, f):
        if f.type == MESSAGE: return self.sname(f.type_name)
        if f.type == ENUM: return self.sname(f.type_name)
        if f.type not in SCALARS:
            raise SystemExit("gen-proto-swift: field %s has unsupported type %d" % (f.name, f.type))
        return SCALARS[f.type][0]

    def c_elem(self, f):
        if f.type == MESSAGE: return "UnsafeMutablePointer<%s>?" % self.c_messages[f.type_name][0]
        if f.type == ENUM: return self.c_enums[f.type_name]
        return SCALARS[f.type][2]

    # C value expressions -------------------------------------------------------------------------

    def to_c(self, f, v):
        """Swift expression converting Swift value `v` of field `f` to its C representation."""
        if f.type == 8: return "(%s ? 1 : 0)" % v
        if f.type == 9: return "try a.string(%s, %r)" % (v, f.name)
        if f.type == 12: return "a.bytes(%s)" % v
        if f.type == ENUM: return "%s(rawValue: .init(truncatingIfNeeded: %s.rawValue))" % (self.c_enums[f.type_name], v)
        if f.type == MESSAGE: return "try %s.build(a)" % v
        return v

    def from_c(self, f, v):
        """Swift expression reading field `f` from C expression `v`."""
        if f.type == 8: return "(%s != 0)" % v
        if f.type == 9: return "try MessageRuntime.string(%s, %r)" % (v, f.name)
        if f.type == 12: return "MessageRuntime.bytes(%s)" % v
        if f.type == ENUM: return "%s(rawValue: Int32(truncatingIfNeeded: %s.rawValue))" % (self.sname(f.type_name), v)
        if f.type == MESSAGE:
            return "try %s(c: MessageRuntime.present(%s, %r))" % (self.sname(f.type_name), v, f.name)
        return v

    def zero_test(self, f, v):
        """Whether Swift value `v` is the proto3 default (then the C default stays)."""
        if f.type in (9, 12): return "!%s.isEmpty" % v
        if f.type == 8: return v
        if f.type == ENUM: return "%s.rawValue != 0" % v
        return "%s != 0" % v

    # emission ------------------------------------------------------------------------------------

    def enum_code(self, e):
        name = self.sname(e.full).split(".")[-1]
        cases = enum_case_names(e)
        default = next(c for c, _, n in cases if n == 0) if any(n == 0 for *_, n in cases) else cases[0][0]
        seen_numbers, init_cases = set(), []
        for c, _, n in cases:
            if n not in seen_numbers:
                seen_numbers.add(n)
                init_cases.append("        case %d: self = .%s" % (n, c))
        lines = [
            "/// `%s`." % e.full,
            "public enum %s: Sendable, Hashable {" % name,
        ]
        lines += ["    case %s  // %s = %d" % (c, pn, n) for c, pn, n in cases]
        lines += [
            "    /// A number this build does not know (proto3 enums are open): kept as it came.",
            "    case unrecognized(Int32)",
            "",
            "    public init() { self = .%s }" % default,
            "",
            "    public init(rawValue: Int32) {",
            "        switch rawValue {",
        ] + init_cases + [
            "        default: self = .unrecognized(rawValue)",
            "        }",
            "    }",
            "",
            "    public var rawValue: Int32 {",
            "        switch self {",
        ] + ["        case .%s: %d" % (c, n) for c, _, n in cases] + [
            "        case .unrecognized(let n): n",
            "        }",
            "    }",
            "}",
        ]
        return lines

    def message_code(self, m):
        sname = self.sname(m.full)
        short = sname.split(".")[-1]
        ctype, lower = self.c_messages[m.full]
        members = self.c_structs.get((ctype, None), set())
        props, decls, builds, reads = [], [], [], []
        oneof_fields = {}
        for f in m.fields:
            if f.proto3_optional:
                raise SystemExit("gen-proto-swift: %s.%s: proto3 optional is not supported yet" % (m.full, f.name))
            if f.oneof_index is not None:
                oneof_fields.setdefault(f.oneof_index, []).append(f)
                continue
            cname = f.name
            want = ("n_" + cname) if f.label == 3 else cname
            if want not in members:
                raise SystemExit("gen-proto-swift: %s has no C member %s" % (ctype, want))
            sw = ident(camel(f.name))
            entry = self.map_entry(f)
            if entry is not None:
                kf, vf = entry.fields[0], entry.fields[1]
                ktype, vtype = self.value_type(kf), self.value_type(vf)
                ectype, elower = self.c_messages[entry.full]
                props.append("    public var %s: [%s: %s] = [:]" % (sw, ktype, vtype))
                order = "{ !$0.key && $1.key }" if kf.type == 8 else "{ $0.key < $1.key }"
                builds += [
                    "        if !%s.isEmpty {" % sw,
                    "            let entries = %s.sorted %s" % (sw, order),
                    "            let list = a.array(UnsafeMutablePointer<%s>?.self, entries.count)" % ectype,
                    "            for (i, e) in entries.enumerated() {",
                    "                let entry = a.make(%s.self)" % ectype,
                    "                %s__init(entry)" % elower,
                    "                entry.pointee.key = %s" % self.to_c(kf, "e.key"),
                    "                entry.pointee.value = %s" % self.to_c(vf, "e.value"),
                    "                list[i] = entry",
                    "            }",
                    "            m.pointee.n_%s = entries.count" % cname,
                    "            m.pointee.%s = list" % cname,
                    "        }",
                ]
                vread = ("try e.value.map { try %s(c: $0) } ?? %s()" % (vtype, vtype)
                         if vf.type == MESSAGE else self.from_c(vf, "e.value"))
                reads += [
                    "        if let list = m.pointee.%s {" % cname,
                    "            for i in 0..<m.pointee.n_%s {" % cname,
                    "                let e = try MessageRuntime.present(list[i], %r).pointee" % f.name,
                    "                %s[%s] = %s" % (sw, self.from_c(kf, "e.key"), vread),
                    "            }",
                    "        }",
                ]
            elif f.label == 3:
                vtype = self.value_type(f)
                props.append("    public var %s: [%s] = []" % (sw, vtype))
                builds += [
                    "        if !%s.isEmpty {" % sw,
                    "            let list = a.array(%s.self, %s.count)" % (self.c_elem(f), sw),
                    "            for (i, v) in %s.enumerated() { list[i] = %s }" % (sw, self.to_c(f, "v")),
                    "            m.pointee.n_%s = %s.count" % (cname, sw),
                    "            m.pointee.%s = list" % cname,
                    "        }",
                ]
                element = self.from_c(f, "list[i]")
                reads += [
                    "        if let list = m.pointee.%s {" % cname,
                    "            %s = %s(0..<m.pointee.n_%s).map { i in %s }" % (sw, "try " if "try" in element else "", cname, element),
                    "        }",
                ]
            elif f.type == MESSAGE:
                vtype = self.value_type(f)
                props += [
                    "    public var %s: %s? {" % (sw, vtype),
                    "        get { _%s?.value }" % camel(f.name),
                    "        set { _%s = newValue.map(MessageBox.init) }" % camel(f.name),
                    "    }",
                ]
                decls.append("    private var _%s: MessageBox<%s>? = nil" % (camel(f.name), vtype))
                builds.append("        if let v = %s { m.pointee.%s = try v.build(a) }" % (sw, cname))
                reads.append("        if let p = m.pointee.%s { %s = try %s(c: p) }" % (cname, sw, vtype))
            else:
                vtype = self.value_type(f)
                default = "%s()" % vtype if f.type == ENUM else SCALARS[f.type][1]
                props.append("    public var %s: %s = %s" % (sw, vtype, default))
                builds.append("        if %s { m.pointee.%s = %s }" % (self.zero_test(f, sw), cname, self.to_c(f, sw)))
                reads.append("        %s = %s" % (sw, self.from_c(f, "m.pointee." + cname)))
        nested_types = []
        for index, ofs in sorted(oneof_fields.items()):
            oname = m.oneofs[index]
            case_type = self.c_structs.get((ctype, oname))
            if case_type is None:
                raise SystemExit("gen-proto-swift: %s has no %s_case member" % (ctype, oname))
            ename = camel(oname, True)
            sw = ident(camel(oname))
            nested_types += ["    /// The `%s` oneof: at most one of its fields is set." % oname,
                             "    public indirect enum %s: Sendable, Equatable {" % ename]
            nested_types += ["        case %s(%s)" % (ident(camel(f.name)), self.value_type(f)) for f in ofs]
            nested_types += ["    }", ""]
            props.append("    public var %s: %s? = nil" % (sw, ename))
            builds.append("        switch %s {" % sw)
            for f in ofs:
                value = "try v.build(a)" if f.type == MESSAGE else self.to_c(f, "v")
                builds += ["        case .%s(let v)?:" % ident(camel(f.name)),
                           "            m.pointee.%s_case = %s(rawValue: %d)" % (oname, case_type, f.number),
                           "            m.pointee.%s = %s" % (f.name, value)]
            builds += ["        case nil: break", "        }"]
            reads.append("        switch m.pointee.%s_case.rawValue {" % oname)
            for f in ofs:
                reads.append("        case %d: %s = .%s(%s)" % (f.number, sw, ident(camel(f.name)), self.from_c(f, "m.pointee." + f.name)))
            reads += ["        default: %s = nil" % sw, "        }"]

        lines = ["/// `%s`." % m.full, "public struct %s: Sendable, Equatable {" % short]
        lines += nested_types
        lines += props + decls
        lines += ["", "    public init() {}", "}", ""]
        # the codec
        lines += [
            "extension %s: GeneratedMessage {" % sname,
            "    public static let protoMessageName = %r" % m.full,
            "",
            "    public init(serializedBytes bytes: [UInt8]) throws {",
        ]
        if m.full in self.recursive:
            lines += [
                "        guard Self.nestingWithinLimit(bytes, bytes.indices, depth: 0) else {",
                "            throw MessageCodingError(\"%s: message nesting deeper than \\(MessageRuntime.maxDepth) levels\")" % m.full,
                "        }",
            ]
        lines += [
            "        // A struct after __init points at its descriptor (protoc-c has no unpack function for nested types).",
            "        var probe = %s()" % ctype,
            "        %s__init(&probe)" % lower,
            "        self = try MessageRuntime.unpack(bytes, probe.base.descriptor, as: %s.self, Self.protoMessageName) { try Self(c: $0) }" % ctype,
            "    }",
            "",
            "    public func serializedBytes() throws -> [UInt8] {",
            "        let a = MessageArena()",
            "        return try withExtendedLifetime(a) { try MessageRuntime.pack(try build(a)) }",
            "    }",
            "",
            "    init(c m: UnsafePointer<%s>) throws {" % ctype,
            "        self.init()",
        ] + reads + [
            "    }",
            "",
            "    func build(_ a: MessageArena) throws -> UnsafeMutablePointer<%s> {" % ctype,
            "        let m = a.make(%s.self)" % ctype,
            "        %s__init(m)" % lower,
        ] + builds + [
            "        return m",
            "    }",
        ]
        if m.full in self.recursive:
            lines += [
                "",
                "    /// Walks the fields that may nest this type again, before protobuf-c (which recurses) sees them.",
                "    static func nestingWithinLimit(_ bytes: [UInt8], _ range: Range<Int>, depth: Int) -> Bool {",
                "        var reader = WireReader(bytes, range: range)",
                "        while let field = reader.next() {",
                "            guard case .lengthDelimited(let sub) = field.payload else { continue }",
                "            switch field.number {",
            ]
            for f in m.fields:
                if f.type == MESSAGE and f.type_name in self.recursive and self.map_entry(f) is None:
                    lines.append("            case %d: guard depth < MessageRuntime.maxDepth, %s.nestingWithinLimit(bytes, sub, depth: depth + 1) else { return false }"
                                 % (f.number, self.sname(f.type_name)))
            lines += ["            default: continue", "            }", "        }", "        return true", "    }"]
        lines += ["}", ""]
        return lines

    def file_code(self, fname, package, msgs, enums):
        out = ["// Generated by scripts/gen-proto from Proto/%s. DO NOT EDIT!" % fname,
               "internal import CProtobufC",
               "internal import PixTrackProto",
               "import ProtoCodec",
               ""]
        def walk(m):
            body = self.message_code(m)
            if "." in self.sname(m.full):
                parent = self.sname(m.full).rsplit(".", 1)[0]
                struct_end = body.index("}")  # the struct declaration ends at its first closing brace line
                out.extend(["extension %s {" % parent] + ["    " + l if l else l for l in body[:struct_end + 1]] + ["}", ""])
                out.extend(body[struct_end + 2:])
            else:
                out.extend(body)
            for e in m.enums:
                out.extend(["extension %s {" % self.sname(m.full)] + ["    " + l if l else l for l in self.enum_code(e)] + ["}", ""])
            for n in m.nested:
                if not n.map_entry:
                    walk(n)
        for e in enums:
            out.extend(self.enum_code(e) + [""])
        for m in msgs:
            walk(m)
        return "\n".join(out).rstrip() + "\n"

    def registry_code(self, names):
        lines = ["// Generated by scripts/gen-proto. DO NOT EDIT!", "",
                 "/// Every generated message type, by full protobuf name (map entries excepted).",
                 "public enum PixTrackMessages {",
                 "    public static let all: [String: any GeneratedMessage.Type] = ["]
        lines += ["        %r: %s.self," % (n, self.sname(n)) for n in sorted(names)]
        lines += ["    ]", "}"]
        return "\n".join(lines).replace("'", '"') + "\n"


def main():
    c_dir, set_path, out_dir = sys.argv[1:4]
    files = load(set_path)
    gen = Generator(files, c_dir)
    os.makedirs(out_dir, exist_ok=True)
    names = []
    for fname, package, msgs, enums in files:
        if fname.startswith("google/protobuf/"):
            continue
        code = gen.file_code(fname, package, msgs, enums).replace("'", '"')
        base = fname[:-len(".proto")].replace("/", "_") + ".pb.swift"
        with open(os.path.join(out_dir, base), "w") as f:
            f.write(code)
        stack = list(msgs)
        while stack:
            m = stack.pop()
            if not m.map_entry:
                names.append(m.full)
            stack += m.nested
    with open(os.path.join(out_dir, "PixTrackMessages.pb.swift"), "w") as f:
        f.write(gen.registry_code(names))


main()
