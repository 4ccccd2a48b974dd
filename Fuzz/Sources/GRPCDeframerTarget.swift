import RPC

/// `grpc-deframer`: `GRPCDeframer`, which cuts a stream's DATA into length-prefixed messages.
///
/// Input: two control bytes, then the DATA bytes. Control 0 picks the size limit, control 1 the
/// chunk size (1-32 bytes: how DATA frames cut the stream). Invariants, against a plain model of
/// the gRPC framing rules: the same messages in the same order (never more bytes than came in),
/// the same failure (size first, then the compressed flag, then any other flag) and the same
/// bytes left pending, however the stream is cut.
let grpcDeframerTarget = FuzzTarget(name: "grpc-deframer", summary: "GRPCDeframer against a model of gRPC message framing",
                                    maxLength: 4096) {
    { bytes in
        var input = FuzzInput(bytes)
        let limits = [0, 1, 5, 64, 1 << 16, 4 << 20]
        let limit = limits[Int(input.byte()) % limits.count]
        let chunk = Int(input.byte() % 32) + 1
        let stream = input.rest
        let expected = DeframeModel(stream, limit: limit)

        for size in [max(1, stream.count), chunk] {
            var deframer = GRPCDeframer(limit: limit)
            var messages: [[UInt8]] = []
            var failure: GRPCDeframer.Failure?
            var offset = 0
            while offset < stream.count {
                let end = min(stream.count, offset + size)
                do throws(GRPCDeframer.Failure) {
                    messages += try deframer.append(UnsafeRawBufferPointer(rebasing: stream[offset..<end]))
                } catch {
                    failure = error
                    break
                }
                offset = end
            }
            require(failure == expected.failure, "failure \(String(describing: failure)), expected \(String(describing: expected.failure)) (reads of \(size))")
            let delivered = messages.reduce(0) { $0 + 5 + $1.count }
            require(delivered <= stream.count, "\(delivered) message bytes out of \(stream.count)")
            if failure == nil {
                require(messages == expected.messages, "\(messages.count) messages, expected \(expected.messages.count) (reads of \(size))")
                require(deframer.pendingBytes == expected.pending, "\(deframer.pendingBytes) bytes pending, expected \(expected.pending)")
                require(delivered + deframer.pendingBytes == stream.count, "\(delivered) + \(deframer.pendingBytes) pending != \(stream.count) bytes")
            } else {
                // A failing append drops the messages it had cut; what came before is a prefix.
                require(messages.count <= expected.messages.count && Array(expected.messages.prefix(messages.count)) == messages,
                        "messages delivered before the failure are not the model's first ones")
            }
        }
    }
}

/// The framing rules, written plainly: flag byte, 4-byte big-endian length, that many bytes.
private struct DeframeModel {
    var messages: [[UInt8]] = []
    var failure: GRPCDeframer.Failure?
    var pending = 0

    init(_ stream: UnsafeRawBufferPointer, limit: Int) {
        var i = 0
        while stream.count - i >= 5 {
            let length = (0..<4).reduce(0) { $0 << 8 | Int(stream[i + 1 + $1]) }
            if length > limit { failure = .tooLarge(announced: length, limit: limit); return }
            if stream[i] == 1 { failure = .compressed; return }
            if stream[i] != 0 { failure = .badFlag(stream[i]); return }
            guard stream.count - i - 5 >= length else { break }
            messages.append(Array(stream[(i + 5)..<(i + 5 + length)]))
            i += 5 + length
        }
        pending = stream.count - i
    }
}
