import CNghttp2

// nghttp2 calls these C function pointers on the loop thread, from inside
// `nghttp2_session_mem_recv` / `mem_send`. Each one recovers its `H2Connection` from
// `user_data` (an unretained reference: the connection owns the session and outlives it),
// records the event and returns. None blocks, throws or re-enters the session's recv/send.

/// Runs `body` with the connection behind `user_data`, without a retain/release pair per
/// callback (a dozen callbacks per call): the connection owns the session, so it is alive.
@inline(__always)
private func withConnection<T>(_ userData: UnsafeMutableRawPointer?, _ body: (H2Connection) -> T) -> T {
    Unmanaged<H2Connection>.fromOpaque(userData!)._withUnsafeGuaranteedRef(body)
}

func h2OnBeginHeaders(_ session: OpaquePointer?, _ frame: UnsafePointer<nghttp2_frame>?, _ userData: UnsafeMutableRawPointer?) -> Int32 {
    guard let frame, frame.pointee.hd.type == UInt8(NGHTTP2_HEADERS.rawValue),
          frame.pointee.headers.cat == NGHTTP2_HCAT_REQUEST else { return 0 }
    withConnection(userData) { $0.beginStream(frame.pointee.hd.stream_id) }
    return 0
}

func h2OnHeader(_ session: OpaquePointer?, _ frame: UnsafePointer<nghttp2_frame>?,
                _ name: UnsafePointer<UInt8>?, _ nameLen: Int,
                _ value: UnsafePointer<UInt8>?, _ valueLen: Int,
                _ flags: UInt8, _ userData: UnsafeMutableRawPointer?) -> Int32 {
    guard let frame, frame.pointee.hd.type == UInt8(NGHTTP2_HEADERS.rawValue) else { return 0 }
    let n = UnsafeBufferPointer(start: name, count: nameLen)
    let v = UnsafeBufferPointer(start: value, count: valueLen)
    withConnection(userData) { $0.header(stream: frame.pointee.hd.stream_id, name: n, value: v) }
    return 0
}

func h2OnFrameRecv(_ session: OpaquePointer?, _ frame: UnsafePointer<nghttp2_frame>?, _ userData: UnsafeMutableRawPointer?) -> Int32 {
    guard let frame else { return 0 }
    let hd = frame.pointee.hd
    let endStream = hd.flags & UInt8(NGHTTP2_FLAG_END_STREAM.rawValue) != 0
    let isHeaders = hd.type == UInt8(NGHTTP2_HEADERS.rawValue)
    let headersComplete = isHeaders && frame.pointee.headers.cat == NGHTTP2_HCAT_REQUEST
    let requestEnded = endStream && (isHeaders || hd.type == UInt8(NGHTTP2_DATA.rawValue))
    guard headersComplete || requestEnded else { return 0 }
    withConnection(userData) { conn in
        if headersComplete { conn.headersComplete(stream: hd.stream_id) }
        if requestEnded { conn.requestEnded(stream: hd.stream_id) }
    }
    return 0
}

func h2OnDataChunk(_ session: OpaquePointer?, _ flags: UInt8, _ streamID: Int32,
                   _ data: UnsafePointer<UInt8>?, _ len: Int, _ userData: UnsafeMutableRawPointer?) -> Int32 {
    withConnection(userData) { $0.data(stream: streamID, UnsafeRawBufferPointer(start: data, count: len)) }
    return 0
}

func h2OnStreamClose(_ session: OpaquePointer?, _ streamID: Int32, _ errorCode: UInt32, _ userData: UnsafeMutableRawPointer?) -> Int32 {
    withConnection(userData) { $0.streamClosed(streamID, errorCode: errorCode) }
    return 0
}

func h2ReadResponse(_ session: OpaquePointer?, _ streamID: Int32, _ buf: UnsafeMutablePointer<UInt8>?, _ length: Int,
                    _ dataFlags: UnsafeMutablePointer<UInt32>?, _ source: UnsafeMutablePointer<nghttp2_data_source>?,
                    _ userData: UnsafeMutableRawPointer?) -> Int {
    withConnection(userData) { $0.readResponse(stream: streamID, into: UnsafeMutableRawBufferPointer(start: buf, count: length), flags: dataFlags!) }
}

/// The callback table, built once; nghttp2 copies it into each session.
nonisolated(unsafe) let h2Callbacks: OpaquePointer = {
    var cbs: OpaquePointer?
    precondition(nghttp2_session_callbacks_new(&cbs) == 0, "nghttp2_session_callbacks_new failed")
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, h2OnBeginHeaders)
    nghttp2_session_callbacks_set_on_header_callback(cbs, h2OnHeader)
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, h2OnFrameRecv)
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, h2OnDataChunk)
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, h2OnStreamClose)
    return cbs!
}()

/// Session options: the backported flood protections, and flow control driven by what we
/// consume (`H2Connection.consume`), not by what arrived: a peer can only send what our buffer
/// budgets have room for.
nonisolated(unsafe) let h2Options: OpaquePointer = {
    var opt: OpaquePointer?
    precondition(nghttp2_option_new(&opt) == 0, "nghttp2_option_new failed")
    nghttp2_option_set_no_auto_window_update(opt, 1)
    nghttp2_option_set_stream_reset_rate_limit(opt, 1000, 33)
    nghttp2_option_set_max_continuations(opt, 8)
    nghttp2_option_set_max_settings(opt, 32)
    return opt!
}()

/// Builds an `nghttp2_nv` array over `headers` for the duration of `body`.
/// nghttp2 copies names and values inside every submit call, so the storage may die after.
func withHeaderList<T>(_ headers: [(String, String)], _ body: (UnsafePointer<nghttp2_nv>, Int) -> T) -> T {
    var storage: [UInt8] = []
    var spans: [(Int, Int, Int, Int)] = []
    for (n, v) in headers {
        let ns = storage.count
        storage.append(contentsOf: n.utf8)
        let vs = storage.count
        storage.append(contentsOf: v.utf8)
        spans.append((ns, vs - ns, vs, storage.count - vs))
    }
    storage.append(0)
    return storage.withUnsafeMutableBufferPointer { buf in
        let base = buf.baseAddress!
        let nva = spans.map { s in
            nghttp2_nv(name: base + s.0, value: base + s.2, namelen: s.1, valuelen: s.3,
                       flags: UInt8(NGHTTP2_NV_FLAG_NONE.rawValue))
        }
        return nva.withUnsafeBufferPointer { body($0.baseAddress!, $0.count) }
    }
}

/// Header lists sent on every call, built once and never freed, so nghttp2 may reference them
/// without copying (`NO_COPY_NAME`/`NO_COPY_VALUE`) for as long as any session lives.
enum StaticHeaders {
    struct List: @unchecked Sendable {
        // Immutable after creation; only read by nghttp2 during submit calls.
        let pointer: UnsafePointer<nghttp2_nv>
        let count: Int

        init(_ headers: [(String, String)]) {
            let nva = UnsafeMutablePointer<nghttp2_nv>.allocate(capacity: headers.count)
            for (i, (n, v)) in headers.enumerated() {
                let nb = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: n.utf8.count)
                _ = nb.initialize(from: n.utf8)
                let vb = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: max(1, v.utf8.count))
                _ = vb.initialize(from: v.utf8)
                nva[i] = nghttp2_nv(name: nb.baseAddress!, value: vb.baseAddress!, namelen: n.utf8.count, valuelen: v.utf8.count,
                                    flags: UInt8(NGHTTP2_NV_FLAG_NO_COPY_NAME.rawValue | NGHTTP2_NV_FLAG_NO_COPY_VALUE.rawValue))
            }
            pointer = UnsafePointer(nva)
            count = headers.count
        }
    }

    static let responseStart = List([(":status", "200"), ("content-type", "application/grpc"), ("grpc-accept-encoding", "identity")])
    static let trailersOK = List([("grpc-status", "0")])
}
