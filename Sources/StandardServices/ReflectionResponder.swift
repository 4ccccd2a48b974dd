import ProtoCodec
import RPC

/// Answers one `ServerReflectionRequest` of one protocol version (`grpc.reflection.v1` or
/// `v1alpha`: the messages are identical apart from their package).
///
/// Every request gets exactly one response; lookups that fail become an `error_response` so the
/// client's stream stays open.
struct ReflectionResponder: Sendable {
    /// e.g. `"grpc.reflection.v1"`.
    let package: String
    let services: [String]
    let index: ReflectionIndex

    func respond(to requestBytes: [UInt8]) throws -> [UInt8] {
        let request = try decodeRequest(requestBytes, as: "\(package).ServerReflectionRequest")
        var response = ProtoMessage("\(package).ServerReflectionResponse", ["original_request": .message(request)])
        let host = request.string("host")
        if !host.isEmpty { response["valid_host"] = .string(host) }
        let (field, value) = answer(request)
        response[field] = .message(value)
        return try encodeResponse(response)
    }

    /// The `message_response` oneof member answering `request`.
    private func answer(_ request: ProtoMessage) -> (String, ProtoMessage) {
        if case .string(let name)? = request["file_by_filename"] {
            return files(index.fileWithDependencies(name), notFound: "file '\(name)' not found")
        }
        if case .string(let symbol)? = request["file_containing_symbol"] {
            let files = index.fileName(containingSymbol: symbol).flatMap(index.fileWithDependencies)
            return self.files(files, notFound: "symbol '\(symbol)' not found")
        }
        if let ext = request.message("file_containing_extension") {
            // No file here declares extensions.
            return error(.notFound, "extension \(ext.int32("extension_number")) of '\(ext.string("containing_type"))' not found")
        }
        if case .string(let type)? = request["all_extension_numbers_of_type"] {
            guard index.fileName(containingSymbol: type) != nil else { return error(.notFound, "type '\(type)' not found") }
            let name = type.hasPrefix(".") ? String(type.dropFirst()) : type
            return ("all_extension_numbers_response",
                    ProtoMessage("\(package).ExtensionNumberResponse", ["base_type_name": .string(name)]))
        }
        if request["list_services"] != nil {
            let list = services.map { ProtoValue.message(ProtoMessage("\(package).ServiceResponse", ["name": .string($0)])) }
            return ("list_services_response", ProtoMessage("\(package).ListServiceResponse", ["service": .list(list)]))
        }
        return error(.invalidArgument, "no request set in message_request")
    }

    private func files(_ files: [[UInt8]]?, notFound: String) -> (String, ProtoMessage) {
        guard let files else { return error(.notFound, notFound) }
        return ("file_descriptor_response", ProtoMessage("\(package).FileDescriptorResponse",
                                                         ["file_descriptor_proto": .list(files.map { .bytes($0) })]))
    }

    private func error(_ code: RPCCode, _ message: String) -> (String, ProtoMessage) {
        ("error_response", ProtoMessage("\(package).ErrorResponse", [
            "error_code": .int32(Int32(code.rawValue)), "error_message": .string(message),
        ]))
    }
}
