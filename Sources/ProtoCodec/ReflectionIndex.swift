/// Lookup tables for gRPC server reflection, built from a serialized `FileDescriptorSet`.
///
/// File bytes are the exact `FileDescriptorProto` slices of the set (not re-encoded), so options
/// and anything the codec does not model reach clients unchanged.
public struct ReflectionIndex: Sendable {
    /// File names in the set's order (protoc writes dependencies before their dependents).
    public let fileNames: [String]
    /// Full names of every service, sorted.
    public let services: [String]
    private let files: [String: [UInt8]]
    private let dependencies: [String: [String]]
    private let symbols: [String: String]

    /// Indexes `fileDescriptorSet`; throws when it is not a valid `google.protobuf.FileDescriptorSet`.
    public init(fileDescriptorSet: [UInt8]) throws {
        // Validates the whole set (and gives the codec's errors) before slicing it.
        _ = try ProtoCodec.decode(fileDescriptorSet, as: "google.protobuf.FileDescriptorSet")
        var names: [String] = []
        var files: [String: [UInt8]] = [:]
        var dependencies: [String: [String]] = [:]
        var collector = SymbolCollector()
        var reader = WireReader(fileDescriptorSet)
        while let field = reader.next() {
            guard field.number == 1, case .lengthDelimited(let range) = field.payload else { continue }
            let bytes = Array(fileDescriptorSet[range])
            let file = try ProtoCodec.decode(bytes, as: "google.protobuf.FileDescriptorProto")
            let name = file.string("name")
            guard files[name] == nil else { continue }
            names.append(name)
            files[name] = bytes
            dependencies[name] = file.list("dependency").compactMap {
                if case .string(let d) = $0 { return d } else { return nil }
            }
            collector.collect(file)
        }
        self.fileNames = names
        self.files = files
        self.dependencies = dependencies
        self.symbols = collector.symbols
        self.services = collector.services.sorted()
    }

    /// The index of the FileDescriptorSet compiled into PixTrackProto.
    public static func embedded() throws -> ReflectionIndex {
        try ReflectionIndex(fileDescriptorSet: ProtoSchema.fileDescriptorSet)
    }

    /// The serialized `FileDescriptorProto` of `name` (e.g. `"grpc/health/v1/health.proto"`).
    public func file(named name: String) -> [UInt8]? { files[name] }

    /// The file declaring a fully-qualified symbol: a package, message (nested too), field, enum,
    /// enum value, service or method (`pkg.Service.Method`). A leading dot is ignored.
    public func fileName(containingSymbol symbol: String) -> String? {
        symbols[symbol.hasPrefix(".") ? String(symbol.dropFirst()) : symbol]
    }

    /// Direct imports of `name`, in declaration order.
    public func dependencies(of name: String) -> [String] { dependencies[name] ?? [] }

    /// `name` and, after it, every file it transitively imports, each once; `nil` if unknown.
    /// This is what a reflection response carries.
    public func fileWithDependencies(_ name: String) -> [[UInt8]]? {
        guard files[name] != nil else { return nil }
        var order: [String] = []
        var seen: Set<String> = []
        var stack = [name]
        while let next = stack.popLast() {
            guard seen.insert(next).inserted else { continue }
            order.append(next)
            stack.append(contentsOf: dependencies(of: next).reversed())
        }
        return order.compactMap { files[$0] }
    }
}

/// Walks decoded `FileDescriptorProto`s and records which file declares each symbol.
private struct SymbolCollector {
    var symbols: [String: String] = [:]
    var services: [String] = []

    mutating func collect(_ file: ProtoMessage) {
        let fileName = file.string("name")
        let package = file.string("package")
        if !package.isEmpty { add(package, fileName) }
        for case .message(let m) in file.list("message_type") { collectMessage(m, scope: package, fileName) }
        for case .message(let e) in file.list("enum_type") { collectEnum(e, scope: package, fileName) }
        for case .message(let s) in file.list("service") {
            let name = qualified(package, s.string("name"))
            services.append(name)
            add(name, fileName)
            for case .message(let method) in s.list("method") { add(qualified(name, method.string("name")), fileName) }
        }
    }

    private mutating func collectMessage(_ m: ProtoMessage, scope: String, _ fileName: String) {
        let name = qualified(scope, m.string("name"))
        add(name, fileName)
        for case .message(let f) in m.list("field") { add(qualified(name, f.string("name")), fileName) }
        for case .message(let nested) in m.list("nested_type") { collectMessage(nested, scope: name, fileName) }
        for case .message(let e) in m.list("enum_type") { collectEnum(e, scope: name, fileName) }
    }

    private mutating func collectEnum(_ e: ProtoMessage, scope: String, _ fileName: String) {
        add(qualified(scope, e.string("name")), fileName)
        // Enum values are scoped as siblings of their enum, as in C++.
        for case .message(let v) in e.list("value") { add(qualified(scope, v.string("name")), fileName) }
    }

    private mutating func add(_ symbol: String, _ fileName: String) {
        if symbols[symbol] == nil { symbols[symbol] = fileName }
    }

    private func qualified(_ scope: String, _ name: String) -> String {
        scope.isEmpty ? name : "\(scope).\(name)"
    }
}
